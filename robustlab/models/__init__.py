"""Networks: pixel-space input in [0, 1], Normalize first, logits out; each also offers
forward_features(x) -> (last conv feature map, logits) and a feature_channels attribute."""

from robustlab.models.loading import load_weights
from robustlab.models.normalize import Normalize
from robustlab.models.preact_resnet import PreActResNet18
from robustlab.models.resnet_cifar import ResNetCIFAR
from robustlab.models.smallcnn import SmallCNN
from robustlab.models.wide_resnet import WideResNet

__all__ = [
    "Normalize",
    "PreActResNet18",
    "ResNetCIFAR",
    "SmallCNN",
    "WideResNet",
    "load_weights",
]
