"""Pre-activation ResNet-18, CIFAR variant (He, Zhang, Ren, Sun 2016, "Identity Mappings in
Deep Residual Networks"): 3x3 stride-1 stem, four stages of two pre-activation basic blocks."""

import torch.nn.functional as F
from torch import Tensor, nn

from robustlab.models.normalize import input_normalize
from robustlab.models.preact_trunk import PreActTrunk


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3, BN-ReLU-conv3x3, plus an identity (or 1x1 projection) shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + skip


class PreActResNet18(PreActTrunk):
    """Pre-activation ResNet-18; a final BN-ReLU precedes global average pooling."""

    def __init__(
        self,
        *,
        name: str = "preact_resnet18",
        in_channels: int,
        num_classes: int,
        image_size: int,
        mean: list[float],
        std: list[float],
        normalization: str = "dataset",
    ) -> None:
        super().__init__()
        self.normalize = input_normalize(name, normalization, in_channels, mean, std)
        self.name = name
        self.image_size = image_size  # any size works: the pooling is global
        self.stem = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        blocks: list[nn.Module] = []
        in_planes = 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [PreActBlock(in_planes, planes, stride), PreActBlock(planes, planes, 1)]
            in_planes = planes
        self.blocks = nn.Sequential(*blocks)
        self.finish(in_planes, num_classes)
