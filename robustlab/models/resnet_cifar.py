"""CIFAR ResNets with post-activation blocks (He, Zhang, Ren, Sun 2016, "Deep Residual Learning for
Image Recognition"): a 3x3 stem without pooling, then one stage per width.

- ``resnet50_cifar``: the 3-stage Bottleneck net that Mixup Inference (Pang, Xu, Zhu, ICLR 2020)
  trains and calls "ResNet-50": blocks [5, 5, 5], widths 64/128/256, expansion 4.
- ``resnet18``: the standard 4-stage BasicBlock ResNet-18 (blocks [2, 2, 2, 2], widths
  64/128/256/512) that MIAT (Zhou et al., ICML 2022) reports on.
"""

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from robustlab.models.normalize import input_normalize


class BasicBlock(nn.Module):
    """conv3x3(stride)-BN-ReLU, conv3x3-BN, add the shortcut, ReLU."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(in_planes, planes, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


def _shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Module:
    """Identity, or a strided 1x1 conv + BN where the shape changes."""
    if stride == 1 and in_planes == out_planes:
        return nn.Identity()
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, 1, stride, bias=False), nn.BatchNorm2d(out_planes)
    )


class Bottleneck(nn.Module):
    """conv1x1-BN-ReLU, conv3x3(stride)-BN-ReLU, conv1x1-BN, add the shortcut, ReLU."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = _shortcut(in_planes, out_planes, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNetCIFAR(nn.Module):
    """Stem conv3x3 -> widths[0], then one stage of ``block`` blocks per width (strides 1, 2, 2,
    ...); ``block``: basic | bottleneck."""

    def __init__(
        self,
        *,
        name: str = "resnet50_cifar",
        in_channels: int,
        num_classes: int,
        image_size: int,
        mean: list[float],
        std: list[float],
        normalization: str = "dataset",
        blocks: Sequence[int] = (5, 5, 5),
        widths: Sequence[int] = (64, 128, 256),
        block: str = "bottleneck",
    ) -> None:
        super().__init__()
        self.normalize = input_normalize(name, normalization, in_channels, mean, std)
        if block not in BLOCKS:
            raise ValueError(f"{name}: block={block!r} is not one of {sorted(BLOCKS)}")
        block_cls = BLOCKS[block]
        if len(blocks) != len(widths):
            raise ValueError(
                f"{name}: blocks {list(blocks)} and widths {list(widths)} differ in length"
            )
        self.name = name
        self.image_size = image_size  # any size works: the pooling is global
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        stages: list[nn.Module] = []
        in_planes = widths[0]
        for i, (count, planes) in enumerate(zip(blocks, widths)):
            for j in range(count):
                stride = 2 if i > 0 and j == 0 else 1
                stages.append(block_cls(in_planes, planes, stride))
                in_planes = planes * block_cls.expansion
        self.stages = nn.Sequential(*stages)
        self.feature_channels = in_planes
        self.linear = nn.Linear(in_planes, num_classes)

    def forward_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(output of the last stage, logits)."""
        fmap = self.stages(self.stem(self.normalize(x)))
        return fmap, self.linear(fmap.mean(dim=(2, 3)))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_features(x)[1]
