"""Fast adversarial training (Wong, Rice, Kolter, "Fast is better than free: Revisiting
adversarial training", ICLR 2020): one FGSM step from a uniform random start in the eps-ball,
step size 1.25 * eps, CE on the result; the paper pairs it with a cyclic (one-cycle) lr."""

from __future__ import annotations

import dataclasses

import torch.nn.functional as F

from robustlab.defenses.adversarial import AdversarialDefense


class FastAT(AdversarialDefense):
    """FGSM-RS AT. The step is ``step_ratio * eps`` unless ``inner.step_size`` is set.

    Crafting runs in eval mode like every AT defense here (Wong et al. craft in train mode).
    """

    train_logits = "adv"

    def __init__(self, *args, step_ratio: float = 1.25, **kwargs):
        super().__init__(*args, **kwargs)
        if self.inner.steps != 1:
            raise ValueError(f"fast_at inner.steps={self.inner.steps} must be 1 (one FGSM step)")
        if self.inner.step_size is None:
            self.inner = dataclasses.replace(self.inner, step_size=step_ratio * self.inner.eps)

    def training_loss(self, x, y):
        logits_adv = self.net(self.craft(x, y))
        return F.cross_entropy(logits_adv, y), logits_adv
