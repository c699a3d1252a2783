"""PGD with EOT (Athalye et al., ICML 2018): gradients summed over ``eot_iter`` forwards of a
randomized model (torchattacks' EOTPGD), L-inf."""

from __future__ import annotations

from dataclasses import dataclass

from torchattacks import EOTPGD

from robustlab.attacks.crafting import plain, restarted
from robustlab.attacks.kinds.base import AttackSpec
from robustlab.attacks.kinds.steps import resolve_step_size


@dataclass(frozen=True)
class EOTPGDSpec(AttackSpec):
    kind = "eot_pgd"
    norms = ("linf",)

    steps: int = 20
    step_size: float | None = None
    step_ratio: float | None = None
    random_start: bool = True
    eot_iter: int = 20

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_positive("steps", "eot_iter")

    @property
    def native_eot(self) -> bool:
        return self.eot_iter > 1

    def craft(self, model, p, num_classes):
        resolve_step_size(p)
        atk = EOTPGD(
            model,
            eps=p["eps"],
            alpha=p["step_size"],
            steps=p["steps"],
            eot_iter=p["eot_iter"],
            random_start=p["random_start"],
        )
        return restarted(plain(atk, p["targeted"], num_classes), model, p["restarts"])
