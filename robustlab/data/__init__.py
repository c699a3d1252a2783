"""Datamodules: tensors in [0,1], NCHW, read from each dataset's native format."""

from robustlab.data.augment import random_crop_flip
from robustlab.data.base import ImageDataModule, build_datamodule
from robustlab.data.cifar import CIFAR10DataModule, CIFAR100DataModule
from robustlab.data.digits import DigitsDataModule
from robustlab.data.idx import FashionMNISTDataModule, MNISTDataModule
from robustlab.data.imagefolder import ImageFolderDataModule
from robustlab.data.svhn import SVHNDataModule

__all__ = [
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "DigitsDataModule",
    "FashionMNISTDataModule",
    "ImageDataModule",
    "ImageFolderDataModule",
    "MNISTDataModule",
    "SVHNDataModule",
    "build_datamodule",
    "random_crop_flip",
]
