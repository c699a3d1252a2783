"""Empirical risk minimization: cross-entropy on clean inputs (the undefended baseline)."""

from __future__ import annotations

import torch.nn.functional as F

from robustlab.defenses.base import DefenseModule


class ERM(DefenseModule):
    def training_loss(self, x, y):
        logits = self.net(x)
        return F.cross_entropy(logits, y), logits
