"""Wide Residual Networks (Zagoruyko & Komodakis 2016, "Wide Residual Networks"): three stages of
(depth - 4) / 6 pre-activation basic blocks, widths 16k/32k/64k for widen factor k, optional
dropout between the two convolutions of a block."""

import torch.nn.functional as F
from torch import Tensor, nn

from robustlab.models.normalize import input_normalize
from robustlab.models.preact_trunk import PreActTrunk


class WideBlock(nn.Module):
    """BN-ReLU-conv3x3, [dropout], BN-ReLU-conv3x3, plus an identity or 1x1 projection shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(out)
        out = self.dropout(F.relu(self.bn2(self.conv1(out))))
        return self.conv2(out) + skip


class WideResNet(PreActTrunk):
    """WRN-depth-k; conf/model/wide_resnet.yaml defaults to WRN-28-10, wrn34_10.yaml is WRN-34-10."""

    def __init__(
        self,
        *,
        name: str = "wide_resnet",
        in_channels: int,
        num_classes: int,
        image_size: int,
        mean: list[float],
        std: list[float],
        normalization: str = "dataset",
        depth: int = 28,
        widen_factor: int = 10,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(
                f"{name}: depth={depth} is invalid; WRN depth must be 6n+4 (10, 16, 22, 28, 34, ...)"
            )
        self.normalize = input_normalize(name, normalization, in_channels, mean, std)
        self.name = name
        self.image_size = image_size  # any size works: the pooling is global
        n = (depth - 4) // 6
        widths = [16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.stem = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        blocks: list[nn.Module] = []
        in_planes = 16
        for i, planes in enumerate(widths):
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(WideBlock(in_planes, planes, stride, dropout))
                in_planes = planes
        self.blocks = nn.Sequential(*blocks)
        self.finish(in_planes, num_classes)
