"""A researcher's own attack, outside robustlab: uniform noise in the L-inf ball (a black-box
floor that any real attack should beat)."""

from dataclasses import dataclass

import torch

from robustlab.attacks.kinds import AttackSpec


@dataclass(frozen=True)
class UniformNoiseSpec(AttackSpec):
    kind = "uniform_noise"
    whitebox = False
    norms = ("linf",)

    def craft(self, model, p, num_classes):
        def noise(x, y, seed):
            return (x + torch.empty_like(x).uniform_(-p["eps"], p["eps"])).clamp(0, 1)

        return noise
