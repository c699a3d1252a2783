"""PGD (Madry et al., ICLR 2018), L-inf or L2, from a random start in the ball."""

from __future__ import annotations

from dataclasses import dataclass

from torchattacks import PGD, PGDL2

from robustlab.attacks.crafting import plain, restarted
from robustlab.attacks.kinds.base import AttackSpec
from robustlab.attacks.kinds.steps import resolve_step_size


@dataclass(frozen=True)
class PGDSpec(AttackSpec):
    kind = "pgd"

    steps: int = 20
    step_size: float | None = None  # null: step_ratio * eps, or 2.5 * eps / steps
    step_ratio: float | None = None
    random_start: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_positive("steps")

    def craft(self, model, p, num_classes):
        resolve_step_size(p)
        atk = self.torchattacks_attack(model, p)
        return restarted(plain(atk, p["targeted"], num_classes), model, p["restarts"])

    def torchattacks_attack(self, model, p):
        """The torchattacks PGD of these effective parameters (step size resolved)."""
        cls = PGD if p["norm"] == "linf" else PGDL2
        return cls(
            model,
            eps=p["eps"],
            alpha=p["step_size"],
            steps=p["steps"],
            random_start=p["random_start"],
        )
