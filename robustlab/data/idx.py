"""IDX reader (gzip or plain) and the MNIST / Fashion-MNIST datamodules."""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from robustlab.data.base import ImageDataModule, one_line

IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049  # uint8 data with 3 dims (N, rows, cols) / 1 dim (N,)
GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20


@contextmanager
def idx_stream(path: Path) -> Iterator[BinaryIO]:
    """The file's bytes, gunzipped when it starts like gzip; read errors become one ValueError."""
    with open(path, "rb") as raw:
        gzipped = raw.read(2) == GZIP_MAGIC
        raw.seek(0)
        try:
            yield gzip.GzipFile(fileobj=raw) if gzipped else raw
        except (EOFError, OSError, zlib.error) as err:
            kind = "gzip" if gzipped else "IDX"
            raise ValueError(f"{path}: corrupt or truncated {kind} file ({one_line(err)})") from err


def read_idx_header(stream: BinaryIO, path: Path, magic: int) -> tuple[int, ...]:
    """Check the magic number and return the shape the header announces."""
    head = stream.read(4)
    if len(head) < 4:
        raise ValueError(f"{path}: too short for an IDX header ({len(head)} bytes)")
    found = struct.unpack(">i", head)[0]
    if found != magic:
        raise ValueError(
            f"{path}: IDX magic number {found}, expected {magic}; not an IDX file of this kind"
        )
    ndim = magic & 0xFF
    dims = stream.read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise ValueError(
            f"{path}: truncated IDX header ({4 + len(dims)} bytes, need {4 + 4 * ndim})"
        )
    return struct.unpack(f">{ndim}i", dims)


def check_idx_size(path: Path, shape: tuple[int, ...], size: int) -> None:
    """Raise unless the header's shape accounts for exactly ``size`` data bytes."""
    expected = math.prod(shape)
    if size != expected:
        raise ValueError(
            f"{path}: header shape {shape} needs {expected} data bytes, file has {size}"
        )


def read_idx(path: str | Path, magic: int) -> np.ndarray:
    """Read an IDX file of uint8 data, checking the magic number and that the header counts fit."""
    path = Path(path)
    with idx_stream(path) as stream:
        shape = read_idx_header(stream, path, magic)
        data = stream.read()
    check_idx_size(path, shape, len(data))
    return np.frombuffer(data, dtype=np.uint8).reshape(shape)


def scan_idx(path: str | Path, magic: int) -> tuple[int, ...]:
    """Read an IDX file through once without keeping it (gzip CRC, header, size); its shape."""
    path = Path(path)
    with idx_stream(path) as stream:
        shape = read_idx_header(stream, path, magic)
        size = sum(len(chunk) for chunk in iter(lambda: stream.read(_CHUNK), b""))
    check_idx_size(path, shape, size)
    return shape


def read_idx_pair(images: Path, labels: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Images as uint8 (N, 1, rows, cols) and labels as int64, checking that the counts agree."""
    x = read_idx(images, IMAGES_MAGIC)
    y = read_idx(labels, LABELS_MAGIC)
    check_counts(images, len(x), labels, len(y))
    return torch.from_numpy(x.copy()).unsqueeze(1), torch.from_numpy(y.astype(np.int64))


def check_counts(images: Path, n_images: int, labels: Path, n_labels: int) -> None:
    """Raise unless an images file and its labels file hold the same number of items."""
    if n_images != n_labels:
        raise ValueError(f"{images} has {n_images} images but {labels} has {n_labels} labels")


class IdxDataModule(ImageDataModule):
    """Datamodule over the four MNIST-style IDX files in ``root``."""

    train_files = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
    test_files = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")

    def expected_files(self) -> list[str]:
        return [*self.train_files, *self.test_files]

    def inspect_files(self) -> int:
        n_train = self._inspect_pair(*self.train_files)
        self._inspect_pair(*self.test_files)
        return n_train

    def _inspect_pair(self, images: str, labels: str) -> int:
        """Stream the images file, read the (small) labels file; check shapes, counts, labels."""
        images_path, labels_path = self.root / images, self.root / labels
        n, rows, cols = scan_idx(images_path, IMAGES_MAGIC)
        self.check_shape(str(images_path), (n, 1, rows, cols))
        y = read_idx(labels_path, LABELS_MAGIC)
        check_counts(images_path, n, labels_path, len(y))
        self.check_labels(str(labels_path), y)
        return n

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
