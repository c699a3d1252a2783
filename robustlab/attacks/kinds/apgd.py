"""APGD (Croce & Hein, ICML 2020): step size adapted from 2 * eps (checkpoints with ``rho``);
``loss`` ce or dlr; targeted means APGD-T on the targeted DLR loss."""

from __future__ import annotations

from dataclasses import dataclass

from torchattacks import APGD, APGDT

from robustlab.attacks.autoattack import TORCHATTACKS_NORM
from robustlab.attacks.crafting import plain, restart_split, restarted
from robustlab.attacks.kinds.base import AttackSpec

LOSSES = ("ce", "dlr")


@dataclass(frozen=True)
class APGDSpec(AttackSpec):
    kind = "apgd"

    steps: int = 100
    loss: str = "ce"
    rho: float = 0.75
    eot_iter: int = 1
    n_target_classes: int = 9  # APGD-T, capped at num_classes - 1

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_positive("steps", "eot_iter", "n_target_classes")
        if self.loss not in LOSSES:
            raise ValueError(f"attack.{self.name}.loss={self.loss!r} is not one of {list(LOSSES)}")
        if self.targeted and self.loss != "dlr":
            raise ValueError(f"attack.{self.name}.targeted=true (APGD-T) needs loss=dlr")

    @property
    def native_eot(self) -> bool:
        return self.eot_iter > 1

    def craft(self, model, p, num_classes):
        norm = TORCHATTACKS_NORM[p["norm"]]
        inner, outer = restart_split(model, p["restarts"])
        common = {"norm": norm, "eps": p["eps"], "steps": p["steps"], "n_restarts": inner}
        common.update(eot_iter=p["eot_iter"], rho=p["rho"])
        if not p["targeted"]:
            if p["loss"] == "dlr" and num_classes < 3:
                raise ValueError(f"APGD-DLR needs >= 3 classes, got {num_classes}")
            del p["n_target_classes"]
            craft = plain(APGD(model, loss=p["loss"], **common), False, num_classes)
            return restarted(craft, model, outer)
        if num_classes < 4:
            raise ValueError("targeted APGD (APGD-T) needs >= 4 classes")
        atk = APGDT(model, n_classes=num_classes, **common)
        atk.n_target_classes = p["n_target_classes"] = min(p["n_target_classes"], num_classes - 1)
        return restarted(plain(atk, False, num_classes), model, outer)
