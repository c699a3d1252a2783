"""Writers of tiny, format-true dataset files and shared helpers for the data tests."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

REAL_MNIST = Path(__file__).parents[2] / "shared" / "data" / "mnist"
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


class Hostile:
    """Unpickling it calls ``call(*args)`` (a file that would run code when loaded)."""

    def __init__(self, call, *args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


def module_kwargs(**overrides) -> dict:
    """Constructor arguments of ImageDataModule for a tiny 10-class dataset."""
    kwargs = dict(
        name="tiny",
        root=None,
        download=False,
        batch_size=4,
        eval_batch_size=8,
        val_size=0.2,
        split_seed=0,
        train_limit=None,
        num_workers=0,
        augment="none",
        crop_padding=0,
        in_channels=1,
        num_classes=10,
        image_size=28,
        mean=[0.5],
        std=[0.25],
        eps=0.3,
        eps_l2=2.0,
        step_size=0.01,
    )
    kwargs.update(overrides)
    return kwargs


def cifar_kwargs(root: Path, classes: int, **overrides) -> dict:
    """Constructor arguments for 32x32 RGB files (CIFAR, SVHN) under ``root``."""
    return module_kwargs(
        root=str(root), val_size=0.2, num_classes=classes, in_channels=3, image_size=32,
        mean=[0.5] * 3, std=[0.25] * 3, **overrides,
    )  # fmt: skip


def folder_kwargs(root: Path, classes: int = 2, **overrides) -> dict:
    """Constructor arguments for ``write_image_folder`` output under ``root``."""
    return module_kwargs(
        root=str(root), num_classes=classes, in_channels=3, image_size=8, val_size=0.25,
        mean=[0.5] * 3, std=[0.25] * 3, **overrides,
    )  # fmt: skip


def assert_one_line(err: pytest.ExceptionInfo, *needles: str) -> None:
    """The exception's message is one line and contains every needle."""
    message = str(err.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, (needle, message)


def idx_bytes(array: np.ndarray, magic: int | None = None, shape: tuple | None = None) -> bytes:
    """IDX encoding of a uint8 array; ``magic``/``shape`` override the header to make bad files."""
    shape = array.shape if shape is None else shape
    magic = (0x0800 | len(shape)) if magic is None else magic
    header = struct.pack(f">i{len(shape)}i", magic, *shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray, **header) -> Path:
    """Write a gzipped IDX file (plain when the name does not end in .gz)."""
    data = idx_bytes(array, **header)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def write_mnist(root: Path, n_train: int = 20, n_test: int = 10, seed: int = 0) -> Path:
    """The four MNIST .gz files with random 28x28 images and labels 0..9."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        images, labels = MNIST_FILES[split]
        write_idx(root / images, rng.integers(0, 256, (n, 28, 28)))
        write_idx(root / labels, np.arange(n) % 10)
    return root


def write_cifar(root: Path, n_per_batch: int = 4, hundred: bool = False) -> Path:
    """CIFAR-10 (5 train batches + test_batch) or CIFAR-100 (train, test) pickles under root."""
    rng = np.random.default_rng(0)
    folder = root / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    folder.mkdir(parents=True, exist_ok=True)
    names = (
        ["train", "test"] if hundred else [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    )
    key = b"fine_labels" if hundred else b"labels"
    classes = 100 if hundred else 10
    for i, name in enumerate(names):
        entry = {
            b"batch_label": name.encode(),
            b"data": rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8),
            key: [(i * n_per_batch + j) % classes for j in range(n_per_batch)],
        }
        with open(folder / name, "wb") as handle:
            pickle.dump(entry, handle)
    return root


def write_svhn(root: Path, n: int = 6) -> Path:
    """train_32x32.mat and test_32x32.mat with X (32, 32, 3, N) uint8 and y (N, 1) in 1..10."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for name in ("train_32x32.mat", "test_32x32.mat"):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = (np.arange(n) % 10 + 1).reshape(n, 1).astype(np.uint8)
        scipy.io.savemat(root / name, {"X": x, "y": y})
    return root


def write_image_folder(
    root: Path, classes=("cat", "dog"), per_class: int = 3, size: int = 12
) -> Path:
    """root/{train,val}/<class>/i.png (RGB) and one .jpg per class; class c has gray level 100*c."""
    for split in ("train", "val"):
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.new("RGB", (size, size + 2), (100 * c, 100 * c, 100 * c)).save(
                    folder / f"{i}.png"
                )
            Image.new("RGB", (size, size), (100 * c,) * 3).save(folder / "extra.jpg")
    return root
