"""Adversarial training on PGD examples (Madry et al., "Towards Deep Learning Models Resistant to
Adversarial Attacks", ICLR 2018): minimize CE on the inner maximization's worst case."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F

from robustlab.defenses.base import DefenseModule
from robustlab.defenses.inner import InnerAttack, pgd
from robustlab.modes import eval_mode


class AdversarialDefense(DefenseModule):
    """Base for AT defenses: owns the configurable inner attack (eps, steps, step size, norm)."""

    def __init__(self, *args, inner: dict[str, Any], **kwargs):
        super().__init__(*args, **kwargs)
        self.inner = InnerAttack(**inner)

    def craft(self, x, y, loss_fn=None, start=None):
        """The inner maximization, run with BatchNorm/Dropout in eval mode."""
        with eval_mode(self.net):
            return pgd(self.net, x, y, self.inner, loss_fn=loss_fn, start=start)


class PGDAT(AdversarialDefense):
    """PGD-AT: CE(net(x_adv), y) with x_adv from PGD with random start; the training accuracy is
    that of the adversarial logits (``train/adv_acc``)."""

    train_logits = "adv"

    def training_loss(self, x, y):
        logits_adv = self.net(self.craft(x, y))
        return F.cross_entropy(logits_adv, y), logits_adv
