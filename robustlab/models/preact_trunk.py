"""The part pre-activation networks share (He et al. 2016, "Identity Mappings in Deep Residual
Networks"; Zagoruyko & Komodakis 2016): Normalize -> stem -> blocks -> final BN-ReLU -> global
average pool -> linear. Subclasses build ``normalize``, ``stem`` and ``blocks``, then call
``finish``."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class PreActTrunk(nn.Module):
    normalize: nn.Module
    stem: nn.Module
    blocks: nn.Module

    def finish(self, in_planes: int, num_classes: int) -> None:
        """The final BN-ReLU and the linear read-out over ``in_planes`` channels."""
        self.bn = nn.BatchNorm2d(in_planes)
        self.feature_channels = in_planes
        self.linear = nn.Linear(in_planes, num_classes)

    def forward_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(last feature map after the final BN-ReLU, logits)."""
        fmap = F.relu(self.bn(self.blocks(self.stem(self.normalize(x)))))
        return fmap, self.linear(fmap.mean(dim=(2, 3)))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_features(x)[1]
