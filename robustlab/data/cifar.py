"""CIFAR-10/100 reader (the official python pickles) and datamodules."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from robustlab.data.base import ImageDataModule, one_line
from robustlab.data.download import extract_tar

# The only globals a CIFAR pickle may name: numpy's array/scalar reconstructors (old and new module
# names) and ``_codecs.encode``, which is how pickle protocols 0-2 spell a bytes object.
ALLOWED_GLOBALS = frozenset(
    {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}
    | {
        (f"numpy.{core}.multiarray", name)
        for core in ("core", "_core")
        for name in ("_reconstruct", "scalar")
    }
    | {(f"numpy.{core}.numeric", "_frombuffer") for core in ("core", "_core")}
)


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles plain builtins and numpy arrays only: any other global is refused, never imported,
    so a hostile file cannot run code."""

    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(
                f"refused global {module}.{name}: a CIFAR batch holds only dicts, lists, strings, "
                "numbers and numpy arrays"
            )
        return super().find_class(module, name)


def unpickle(path: Path) -> object:
    """Load a pickle through ``RestrictedUnpickler`` (bytes kept as bytes, as CIFAR's python 2
    pickles need); any failure is one ValueError naming the file."""
    with open(path, "rb") as handle:
        try:
            return RestrictedUnpickler(handle, encoding="bytes").load()
        except Exception as err:
            raise ValueError(f"{path}: not a CIFAR python pickle ({one_line(err)})") from err


def read_cifar_batch(path: str | Path, label_key: bytes) -> tuple[torch.Tensor, torch.Tensor]:
    """One pickled batch -> (uint8 (N, 3, 32, 32), int64 labels); keys b"data" and ``label_key``."""
    path = Path(path)
    entry = unpickle(path)
    if not isinstance(entry, dict) or b"data" not in entry or label_key not in entry:
        keys = sorted(map(repr, entry)) if isinstance(entry, dict) else type(entry).__name__
        raise ValueError(f"{path}: expected keys b'data' and {label_key!r}, found {keys}")
    data = entry[b"data"]
    try:
        labels = np.asarray(entry[label_key])
    except ValueError as err:
        raise ValueError(
            f"{path}: {label_key!r} is not a list of labels ({one_line(err)})"
        ) from err
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        raise ValueError(f"{path}: b'data' is {type(data).__name__}, expected a uint8 numpy array")
    if labels.size and labels.dtype.kind not in "iu":
        raise ValueError(f"{path}: {label_key!r} holds {labels.dtype} values, expected integers")
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != (len(data),):
        raise ValueError(
            f"{path}: data shape {data.shape} with {labels.size} labels, expected (N, 3072) with N labels"
        )
    x = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
    return x, torch.from_numpy(labels.astype(np.int64))


def read_cifar_batches(paths: list[Path], label_key: bytes) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate several batches in order."""
    parts = [read_cifar_batch(p, label_key) for p in paths]
    return torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts])


class _CifarDataModule(ImageDataModule):
    """Reads ``folder/train_files`` and ``folder/test_file`` under root; downloads one tarball."""

    folder: str
    train_files: tuple[str, ...]
    test_file: str
    label_key: bytes
    mirrors = ("https://www.cs.toronto.edu/~kriz/",)

    def expected_files(self) -> list[str]:
        return [f"{self.folder}/{name}" for name in (*self.train_files, self.test_file)]

    def after_download(self) -> None:
        if self.missing_files():
            extract_tar(self.root / self.resources[0][0], self.root)

    def inspect_files(self) -> int:
        folder = self.root / self.folder
        counts = [self._inspect_batch(folder / name) for name in self.train_files]
        self._inspect_batch(folder / self.test_file)
        return sum(counts)

    def _inspect_batch(self, path: Path) -> int:
        """Unpickle one batch (restricted), check its shape and labels; its number of images."""
        x, y = read_cifar_batch(path, self.label_key)
        self.check_shape(str(path), x.shape)
        self.check_labels(str(path), y)
        return len(y)

    def load(self):
        folder = self.root / self.folder
        x_train, y_train = read_cifar_batches(
            [folder / f for f in self.train_files], self.label_key
        )
        x_test, y_test = read_cifar_batch(folder / self.test_file, self.label_key)
        return x_train, y_train, x_test, y_test


class CIFAR10DataModule(_CifarDataModule):
    """CIFAR-10 (Krizhevsky, 2009), python version; md5 from the official page."""

    folder = "cifar-10-batches-py"
    train_files = tuple(f"data_batch_{i}" for i in range(1, 6))
    test_file = "test_batch"
    label_key = b"labels"
    resources = (("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),)


class CIFAR100DataModule(_CifarDataModule):
    """CIFAR-100 (Krizhevsky, 2009), python version, 100 fine labels; md5 from the official page."""

    folder = "cifar-100-python"
    train_files = ("train",)
    test_file = "test"
    label_key = b"fine_labels"
    resources = (("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85"),)
