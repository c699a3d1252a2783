"""Square Attack (Andriushchenko et al., ECCV 2020): black-box random search on the margin loss,
AutoAttack's fixed p schedule (``resc_schedule=False``)."""

from __future__ import annotations

from dataclasses import dataclass

from torchattacks import Square

from robustlab.attacks.autoattack import TORCHATTACKS_NORM
from robustlab.attacks.crafting import plain, restart_split, restarted
from robustlab.attacks.kinds.base import AttackSpec


@dataclass(frozen=True)
class SquareSpec(AttackSpec):
    kind = "square"
    whitebox = False

    queries: int = 5000
    p_init: float = 0.8

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_positive("queries")

    def craft(self, model, p, num_classes):
        inner, outer = restart_split(model, p["restarts"])
        atk = Square(
            model,
            norm=TORCHATTACKS_NORM[p["norm"]],
            eps=p["eps"],
            n_queries=p["queries"],
            n_restarts=inner,
            p_init=p["p_init"],
            loss="margin",
            resc_schedule=False,
        )
        return restarted(plain(atk, p["targeted"], num_classes), model, outer)
