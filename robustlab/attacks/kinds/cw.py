"""Carlini-Wagner L2 (IEEE S&P 2017) with a fixed ``c`` (torchattacks has no binary search).
Minimum-norm: an example counts only if misclassified AND ||delta||_2 <= eps; the runner keeps x
where the norm exceeds eps."""

from __future__ import annotations

from dataclasses import dataclass

from torchattacks import CW

from robustlab.attacks.crafting import plain, restarted
from robustlab.attacks.kinds.base import AttackSpec


@dataclass(frozen=True)
class CWSpec(AttackSpec):
    kind = "cw"
    norms = ("l2",)
    rejects_outside_ball = True

    steps: int = 100
    c: float = 1.0
    kappa: float = 0.0
    lr: float = 0.01  # Adam step size

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_positive("steps")

    def craft(self, model, p, num_classes):
        atk = CW(model, c=p["c"], kappa=p["kappa"], steps=p["steps"], lr=p["lr"])
        return restarted(plain(atk, p["targeted"], num_classes), model, p["restarts"])
