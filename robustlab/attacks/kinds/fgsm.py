"""FGSM (Goodfellow, Shlens, Szegedy, ICLR 2015): one signed-gradient step of size eps, L-inf."""

from __future__ import annotations

from dataclasses import dataclass

from torchattacks import FGSM

from robustlab.attacks.crafting import plain, restarted
from robustlab.attacks.kinds.base import AttackSpec


@dataclass(frozen=True)
class FGSMSpec(AttackSpec):
    kind = "fgsm"
    norms = ("linf",)

    def craft(self, model, p, num_classes):
        atk = FGSM(model, eps=p["eps"])
        return restarted(plain(atk, p["targeted"], num_classes), model, p["restarts"])
