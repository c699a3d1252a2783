"""FAB (Croce & Hein, ICML 2020): minimum-norm; targeted means FAB-T over the top
``n_target_classes`` classes. An example counts only within eps."""

from __future__ import annotations

from dataclasses import dataclass

from torchattacks import FAB

from robustlab.attacks.autoattack import TORCHATTACKS_NORM
from robustlab.attacks.crafting import plain, restart_split, restarted
from robustlab.attacks.kinds.base import AttackSpec


@dataclass(frozen=True)
class FABSpec(AttackSpec):
    kind = "fab"

    steps: int = 100
    n_target_classes: int = 9  # capped at num_classes - 1
    alpha_max: float = 0.1
    eta: float = 1.05
    beta: float = 0.9

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_positive("steps", "n_target_classes")

    def craft(self, model, p, num_classes):
        inner, outer = restart_split(model, p["restarts"])
        atk = FAB(
            model,
            norm=TORCHATTACKS_NORM[p["norm"]],
            eps=p["eps"],
            steps=p["steps"],
            n_restarts=inner,
            alpha_max=p["alpha_max"],
            eta=p["eta"],
            beta=p["beta"],
            multi_targeted=p["targeted"],
            n_classes=num_classes,
        )
        atk.n_target_classes = p["n_target_classes"] = min(p["n_target_classes"], num_classes - 1)
        return restarted(plain(atk, False, num_classes), model, outer)
