"""A researcher's own defense, outside robustlab: cross-entropy with label smoothing
(Szegedy et al. 2016, "Rethinking the Inception Architecture", Sec. 7)."""

import torch.nn.functional as F

from robustlab.defenses.base import DefenseModule


class LabelSmoothing(DefenseModule):
    def __init__(self, net, smoothing: float = 0.1, **kwargs):
        super().__init__(net, **kwargs)
        self.smoothing = smoothing

    def training_loss(self, x, y):
        logits = self.net(x)
        return F.cross_entropy(logits, y, label_smoothing=self.smoothing), logits
