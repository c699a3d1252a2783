"""PGD with EOT (Athalye et al., ICML 2018): gradients summed over ``eot_iter`` forwards of a
randomized model (torchattacks' EOTPGD), L-inf. PGD's parameters, step rule and restarts, plus
``eot_iter``."""

from __future__ import annotations

from dataclasses import dataclass

from torchattacks import EOTPGD

from robustlab.attacks.kinds.pgd import PGDSpec


@dataclass(frozen=True)
class EOTPGDSpec(PGDSpec):
    kind = "eot_pgd"
    norms = ("linf",)

    eot_iter: int = 20

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_positive("eot_iter")

    @property
    def native_eot(self) -> bool:
        return self.eot_iter > 1

    def torchattacks_attack(self, model, p):
        return EOTPGD(
            model,
            eps=p["eps"],
            alpha=p["step_size"],
            steps=p["steps"],
            eot_iter=p["eot_iter"],
            random_start=p["random_start"],
        )
