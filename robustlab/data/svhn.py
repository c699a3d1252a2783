"""SVHN cropped-digits reader (.mat via scipy.io.loadmat) and datamodule."""

from __future__ import annotations

from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io
import torch

from robustlab.data.base import ImageDataModule, one_line


def _read_mat(path: Path, reader: Callable[..., Any], **kwargs) -> Any:
    """``reader(path, **kwargs)`` (a scipy.io function); any failure is one ValueError."""
    try:
        return reader(path, **kwargs)
    except Exception as err:
        raise ValueError(f"{path}: not a readable .mat file ({one_line(err)})") from err


def _require_variables(path: Path, names: Collection[str]) -> None:
    if "X" not in names or "y" not in names:
        found = sorted(k for k in names if not k.startswith("__"))
        raise ValueError(f"{path}: expected variables X and y, found {found}")


def svhn_labels(path: Path, y: np.ndarray) -> np.ndarray:
    """y (N, 1) as int64 (N,), label 10 meaning digit 0."""
    y = np.asarray(y)
    if y.dtype.kind not in "iuf":
        raise ValueError(f"{path}: y holds {y.dtype} values, expected numbers")
    y = y.reshape(-1).astype(np.int64)
    y[y == 10] = 0
    return y


def check_svhn_layout(path: Path, x_shape: tuple[int, ...], n_labels: int) -> None:
    """Raise unless X has shape (32, 32, 3, N) for N labels."""
    if len(x_shape) != 4 or tuple(x_shape[:3]) != (32, 32, 3) or x_shape[3] != n_labels:
        raise ValueError(
            f"{path}: X has shape {tuple(x_shape)} and y {n_labels} labels, expected (32, 32, 3, N) and N"
        )


def read_svhn_mat(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """X of shape (32, 32, 3, N) -> uint8 (N, 3, 32, 32); y (N, 1) with label 10 meaning digit 0."""
    path = Path(path)
    mat = _read_mat(path, scipy.io.loadmat)
    _require_variables(path, mat)
    x, y = np.asarray(mat["X"]), svhn_labels(path, mat["y"])
    check_svhn_layout(path, x.shape, len(y))
    return torch.from_numpy(
        np.ascontiguousarray(x.transpose(3, 2, 0, 1), dtype=np.uint8)
    ), torch.from_numpy(y)


def scan_svhn_mat(path: Path) -> tuple[tuple[int, ...], np.ndarray]:
    """X's shape from the variable headers and the labels, without reading X."""
    shapes = {name: shape for name, shape, _ in _read_mat(path, scipy.io.whosmat)}
    _require_variables(path, shapes)
    y = svhn_labels(path, _read_mat(path, scipy.io.loadmat, variable_names=["y"])["y"])
    check_svhn_layout(path, shapes["X"], len(y))
    return shapes["X"], y


class SVHNDataModule(ImageDataModule):
    """SVHN format 2 (Netzer et al., 2011), train and test only; md5s from the official page."""

    mirrors = ("http://ufldl.stanford.edu/housenumbers/",)
    resources = (
        ("train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373"),
        ("test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3"),
    )

    def expected_files(self) -> list[str]:
        return [name for name, _ in self.resources]

    def inspect_files(self) -> int:
        n_train = self._inspect_mat(self.root / "train_32x32.mat")
        self._inspect_mat(self.root / "test_32x32.mat")
        return n_train

    def _inspect_mat(self, path: Path) -> int:
        """Check a .mat file's variables, X's shape and the labels; its number of images."""
        (height, width, channels, n), y = scan_svhn_mat(path)
        self.check_shape(str(path), (n, channels, height, width))
        self.check_labels(str(path), y)
        return n

    def load(self):
        x_train, y_train = read_svhn_mat(self.root / "train_32x32.mat")
        x_test, y_test = read_svhn_mat(self.root / "test_32x32.mat")
        return x_train, y_train, x_test, y_test
