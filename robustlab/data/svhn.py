"""SVHN cropped-digits reader (.mat via scipy.io.loadmat) and datamodule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io
import torch

from robustlab.data.base import ImageDataModule


def read_svhn_mat(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """X of shape (32, 32, 3, N) -> uint8 (N, 3, 32, 32); y (N, 1) with label 10 meaning digit 0."""
    path = Path(path)
    try:
        mat = scipy.io.loadmat(path)
    except Exception as err:
        raise ValueError(f"{path}: not a readable .mat file ({type(err).__name__}: {err})") from err
    if "X" not in mat or "y" not in mat:
        raise ValueError(
            f"{path}: expected variables X and y, found {sorted(k for k in mat if not k.startswith('__'))}"
        )
    x, y = np.asarray(mat["X"]), np.asarray(mat["y"]).reshape(-1).astype(np.int64)
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.shape[3] != len(y):
        raise ValueError(
            f"{path}: X has shape {x.shape} and y {len(y)} labels, expected (32, 32, 3, N) and N"
        )
    y[y == 10] = 0
    return torch.from_numpy(
        np.ascontiguousarray(x.transpose(3, 2, 0, 1), dtype=np.uint8)
    ), torch.from_numpy(y)


class SVHNDataModule(ImageDataModule):
    """SVHN format 2 (Netzer et al., 2011), train and test only; md5s from the official page."""

    mirrors = ("http://ufldl.stanford.edu/housenumbers/",)
    resources = (
        ("train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373"),
        ("test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3"),
    )

    def expected_files(self) -> list[str]:
        return [name for name, _ in self.resources]

    def load(self):
        x_train, y_train = read_svhn_mat(self.root / "train_32x32.mat")
        x_test, y_test = read_svhn_mat(self.root / "test_32x32.mat")
        return x_train, y_train, x_test, y_test
