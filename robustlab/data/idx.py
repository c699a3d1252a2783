"""IDX reader (gzip or plain) and the MNIST / Fashion-MNIST datamodules."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch

from robustlab.data.base import ImageDataModule

IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049  # uint8 data with 3 dims (N, rows, cols) / 1 dim (N,)


def read_idx(path: str | Path, magic: int) -> np.ndarray:
    """Read an IDX file of uint8 data, checking the magic number and that the header counts fit."""
    path = Path(path)
    with open(path, "rb") as handle:
        raw = handle.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4:
        raise ValueError(f"{path}: too short for an IDX header ({len(raw)} bytes)")
    found = struct.unpack(">i", raw[:4])[0]
    if found != magic:
        raise ValueError(f"{path}: IDX magic number {found}, expected {magic}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(raw)} bytes, need {header})")
    shape = struct.unpack(f">{ndim}i", raw[4:header])
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise ValueError(
            f"{path}: header shape {shape} needs {expected} data bytes, file has {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def read_idx_pair(images: Path, labels: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Images as uint8 (N, 1, rows, cols) and labels as int64, checking that the counts agree."""
    x = read_idx(images, IMAGES_MAGIC)
    y = read_idx(labels, LABELS_MAGIC)
    if len(x) != len(y):
        raise ValueError(f"{images} has {len(x)} images but {labels} has {len(y)} labels")
    return torch.from_numpy(x.copy()).unsqueeze(1), torch.from_numpy(y.astype(np.int64))


class IdxDataModule(ImageDataModule):
    """Datamodule over the four MNIST-style IDX files in ``root``."""

    train_files = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
    test_files = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")

    def expected_files(self) -> list[str]:
        return [*self.train_files, *self.test_files]

    def load(self):
        x_train, y_train = read_idx_pair(*(self.root / f for f in self.train_files))
        x_test, y_test = read_idx_pair(*(self.root / f for f in self.test_files))
        return x_train, y_train, x_test, y_test


class MNISTDataModule(IdxDataModule):
    """MNIST (LeCun et al.); md5s of the official files as published with torchvision."""

    mirrors = (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    )
    resources = (
        ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
        ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
        ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
    )


class FashionMNISTDataModule(IdxDataModule):
    """Fashion-MNIST (Xiao et al., 2017); md5s from zalandoresearch/fashion-mnist."""

    mirrors = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
    resources = (
        ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
        ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
        ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
        ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
    )
