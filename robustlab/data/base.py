"""ImageDataModule: whole splits held as tensors, batched loading, augmentation after transfer.

Subclasses say which files they read (``expected_files``), how to fetch them (``resources`` from
``mirrors``, then ``after_download``) and how to read them (``load``); this class does the rest:
the seeded train/val split, ``train_limit``, dataloaders, ``tensors(split)`` and augmentation.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from robustlab.data.augment import AUGMENTATIONS, apply_augment
from robustlab.data.download import download_from_mirrors

SPLITS = ("train", "val", "test")


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 storage -> float32 in [0,1]; float storage is already in [0,1]."""
    return x.float().div_(255) if x.dtype == torch.uint8 else x.to(torch.float32)


class ImageBatchDataset(Dataset):
    """Images (uint8 or float NCHW) and int64 labels; ``__getitems__`` converts a batch at once."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return to_float(self.x[index]), self.y[index]

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        return to_float(self.x[index]), self.y[index]


def collate_batch(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``__getitems__`` already returns the batch; the DataLoader's collate passes it through."""
    return batch


class ImageDataModule(pl.LightningDataModule):
    """Base datamodule: every loader yields ``(x, y)``, x float32 NCHW in [0,1], y int64."""

    resources: tuple[tuple[str, str], ...] = ()  # (file name, md5) fetched into root
    mirrors: tuple[str, ...] = ()  # base URLs tried in order; tests point them at file://

    def __init__(
        self,
        *,
        name: str,
        root: str | None,
        download: bool,
        batch_size: int,
        eval_batch_size: int,
        val_size: float | int,
        split_seed: int,
        train_limit: int | None,
        num_workers: int,
        augment: str,
        crop_padding: int,
        in_channels: int,
        num_classes: int,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        eps: float,
        eps_l2: float,
        step_size: float,
    ):
        super().__init__()
        if augment not in AUGMENTATIONS:
            raise ValueError(
                f"unknown augment {augment!r}; choose one of {', '.join(AUGMENTATIONS)}"
            )
        if len(mean) != in_channels or len(std) != in_channels:
            raise ValueError(
                f"{name}: mean {list(mean)} and std {list(std)} need in_channels={in_channels} values"
            )
        if val_size < 0:
            raise ValueError(
                f"{name}: val_size must be >= 0 (fraction if < 1, else a count), got {val_size}"
            )
        if train_limit is not None and train_limit < 1:
            raise ValueError(f"{name}: train_limit must be null or >= 1, got {train_limit}")
        self.name = name
        self.root = Path(root) if root is not None else None
        self.download = bool(download)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size)
        self.val_size = val_size
        self.split_seed = int(split_seed)
        self.train_limit = train_limit
        self.num_workers = int(num_workers)
        self.augment = augment
        self.crop_padding = int(crop_padding)
        self.in_channels = int(in_channels)
        self.num_classes = int(num_classes)
        self.image_size = int(image_size)
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]
        self.eps = float(eps)
        self.eps_l2 = float(eps_l2)
        self.step_size = float(step_size)
        self._data: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    # ---- what a subclass provides -------------------------------------------------------------
    def expected_files(self) -> list[str]:
        """Paths relative to ``root`` that ``load`` reads (none for embedded datasets)."""
        return []

    def after_download(self) -> None:
        """Hook run after ``resources`` are fetched (e.g. extract an archive)."""

    def load(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Read ``(x_train, y_train, x_test, y_test)``: x uint8 or float NCHW, y int64."""
        raise NotImplementedError

    # ---- files ----------------------------------------------------------------------------------
    def missing_files(self) -> list[str]:
        """Expected files that are not under ``root`` (cheap: no reading)."""
        expected = self.expected_files()
        if expected and self.root is None:
            raise FileNotFoundError(
                f"{self.name}: dataset.root is null; set dataset.root=DIR (a folder with "
                f"{', '.join(expected)}) or dataset.root=DIR dataset.download=true"
            )
        return [f for f in expected if not (self.root / f).exists()]

    def check_files(self) -> None:
        """Fail early, before training, when files are missing and ``download`` is off."""
        if not self.download:
            self._require_files()

    def _require_files(self) -> None:
        missing = self.missing_files()
        if missing:
            hint = (
                "prepare_data() fetches them (dataset.download=true)"
                if self.download
                else "set dataset.download=true to fetch them or dataset.root=DIR to point at them"
            )
            raise FileNotFoundError(
                f"{self.name}: missing {', '.join(missing)} in {self.root.resolve()}; {hint}"
            )

    def prepare_data(self) -> None:
        """Download the ``resources`` (md5-checked) when ``download`` is on and files are missing."""
        if not self.download or not self.missing_files():
            return
        self.root.mkdir(parents=True, exist_ok=True)
        for filename, md5 in self.resources:
            if not (self.root / filename).exists():
                download_from_mirrors(self.mirrors, filename, self.root, md5)
        self.after_download()

    # ---- splits ---------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        """Read the files once and carve the seeded train/val split from the training data."""
        if self._data:
            return
        self._require_files()
        x_train, y_train, x_test, y_test = self.load()
        self._check_tensors(x_train, y_train, "train")
        self._check_tensors(x_test, y_test, "test")
        n = len(y_train)
        n_val = round(self.val_size * n) if self.val_size < 1 else int(self.val_size)
        if n_val >= n:
            raise ValueError(
                f"{self.name}: val_size={self.val_size} leaves no training images out of {n}"
            )
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.split_seed))
        val_idx, train_idx = order[:n_val], order[n_val:]
        if self.train_limit is not None:
            train_idx = train_idx[: self.train_limit]
        self._data = {
            "train": (x_train[train_idx], y_train[train_idx]),
            "val": (x_train[val_idx], y_train[val_idx]),
            "test": (x_test, y_test),
        }

    def _check_tensors(self, x: torch.Tensor, y: torch.Tensor, split: str) -> None:
        want = (self.in_channels, self.image_size, self.image_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != want:
            raise ValueError(
                f"{self.name} {split}: images have shape {tuple(x.shape)}, but in_channels and "
                f"image_size expect (N, {', '.join(map(str, want))})"
            )
        if len(x) != len(y):
            raise ValueError(f"{self.name} {split}: {len(x)} images but {len(y)} labels")
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
            raise ValueError(
                f"{self.name} {split}: labels span {int(y.min())}..{int(y.max())}, "
                f"but num_classes={self.num_classes}"
            )

    def _split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        if not self._data:
            raise RuntimeError(f"{self.name}: call setup() before asking for the {split} split")
        return self._data[split]

    def tensors(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole split as ``(x float32 NCHW in [0,1], y int64)``."""
        x, y = self._split(split)
        return to_float(x), y

    # ---- loaders --------------------------------------------------------------------------------
    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        x, y = self._split(split)
        return DataLoader(
            ImageBatchDataset(x, y),
            batch_size=batch_size,
            shuffle=shuffle,  # the sampler draws its order from torch's global (run-seeded) RNG
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=collate_batch,
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, shuffle=False)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Augment training batches on their device; validation and test batches pass unchanged."""
        if self.augment != "none" and self.trainer is not None and self.trainer.training:
            x, y = batch
            batch = (apply_augment(x, self.augment, self.crop_padding), y)
        return batch
