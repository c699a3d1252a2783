"""ImageDataModule: whole splits held as tensors, batched loading, augmentation after transfer.

Subclasses say which files they read (``expected_files``), how to fetch them (``resources`` from
``mirrors``, then ``after_download``), how to check them cheaply (``inspect_files``) and how to
read them (``load``); this class does the rest: argument checks, the seeded train/val split,
``train_limit``, dataloaders, ``tensors(split)`` and augmentation.

Batches cost no Python work per example: a split is one tensor (moved once to the training
device when the loader runs in the main process), and each batch is one gather with a slice of
the epoch's order (``TensorBatches``).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from robustlab.data.augment import AUGMENTATIONS, apply_augment
from robustlab.data.download import download_from_mirrors

SPLITS = ("train", "val", "test")


def one_line(err: BaseException) -> str:
    """``Type: message`` of an exception, squeezed onto one line."""
    return f"{type(err).__name__}: {' '.join(str(err).split())}"


def checked_int(key: str, value: Any, minimum: int, nullable: bool = False) -> int | None:
    """``value`` as an int >= ``minimum`` (or None if ``nullable``); else one line naming the key."""
    if nullable and value is None:
        return None
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= minimum:
        return int(value)
    wanted = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    raise ValueError(f"dataset.{key}={value} must be {wanted}{' or null' if nullable else ''}")


def checked_val_size(value: Any) -> float | int:
    """``dataset.val_size``: a fraction in (0, 1) or a count of images >= 0."""
    if not isinstance(value, bool):
        if isinstance(value, numbers.Integral) and value >= 0:
            return int(value)
        if isinstance(value, numbers.Real) and 0 < value < 1:
            return float(value)
    raise ValueError(
        f"dataset.val_size={value} must be a fraction in (0, 1) or a count of images >= 0"
    )


def build_datamodule(cfg: Any) -> ImageDataModule:
    """``instantiate(cfg)``, re-raising a constructor's one-line ValueError or FileNotFoundError
    itself rather than hydra's multi-line InstantiationException around it."""
    try:
        return instantiate(cfg)
    except InstantiationException as err:
        if isinstance(err.__cause__, ValueError | FileNotFoundError):
            raise err.__cause__ from None
        raise


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 storage -> float32 in [0,1]; float storage is already in [0,1]."""
    return x.float().div_(255) if x.dtype == torch.uint8 else x.to(torch.float32)


class EpochShuffle(RandomSampler):
    """A shuffled order that depends only on ``(seed, epoch)`` (Lightning calls ``set_epoch``
    before every epoch), never on how many numbers the global generator gave out before: a
    training run resumed at epoch k sees the batches an uninterrupted run saw. Under DDP,
    Lightning replaces it (a RandomSampler) with its seeded DistributedSampler."""

    def __init__(self, data_source, seed: int):
        super().__init__(data_source)
        self.seed, self.epoch = int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def order(self) -> torch.Tensor:
        """The epoch's order as one int64 tensor."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(len(self.data_source), generator=generator)

    def __iter__(self):
        yield from self.order().tolist()


def epoch_order(sampler) -> torch.Tensor | None:
    """The sampler's whole order as one tensor when it is known without iterating (EpochShuffle,
    SequentialSampler); None for any other sampler."""
    if isinstance(sampler, EpochShuffle):
        return sampler.order()
    if type(sampler) is SequentialSampler:
        return torch.arange(len(sampler))
    return None


class TensorBatches(BatchSampler):
    """Batches of indices as int64 tensors: slices of the epoch's order when the sampler gives it
    as one tensor (``epoch_order``), so a batch costs no Python work per example. Any other
    sampler is batched as ``BatchSampler`` does: under DDP Lightning rebuilds this class around
    its DistributedSampler (the arguments are BatchSampler's), which then decides the order."""

    def __iter__(self):
        order = epoch_order(self.sampler)
        if order is None:
            for batch in super().__iter__():
                yield torch.as_tensor(batch, dtype=torch.long)
            return
        if self.drop_last:
            order = order[: len(order) - len(order) % self.batch_size]
        # on the images' device once per epoch: a per-batch host-to-GPU copy would sync each step
        yield from order.to(getattr(self, "device", None) or order.device).split(self.batch_size)


class ImageBatchDataset(Dataset):
    """Images (uint8 or float NCHW) and int64 labels, on any device; ``__getitems__`` gathers and
    converts a batch at once, on the images' device."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return to_float(self.x[index]), self.y[index]

    def __getitems__(
        self, indices: Sequence[int] | torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long, device=self.x.device)
        return to_float(self.x[index]), self.y[index]


def collate_batch(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``__getitems__`` already returns the batch; the DataLoader's collate passes it through."""
    return batch


class ImageDataModule(pl.LightningDataModule):
    """Base datamodule: every loader yields ``(x, y)``, x float32 NCHW in [0,1], y int64."""

    resources: tuple[tuple[str, str], ...] = ()  # (file name, md5) fetched into root
    mirrors: tuple[str, ...] = ()  # base URLs tried in order; tests point them at file://
    download_timeout: float = 60.0  # seconds per URL before the next mirror is tried

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
        shuffle_seed: int = 0,
    ):
        super().__init__()
        if augment not in AUGMENTATIONS:
            raise ValueError(
                f"dataset.augment={augment} is unknown; choose one of {', '.join(AUGMENTATIONS)}"
            )
        self.in_channels = checked_int("in_channels", in_channels, 1)
        if len(mean) != in_channels or len(std) != in_channels:
            raise ValueError(
                f"dataset.mean={list(mean)} and dataset.std={list(std)} need "
                f"dataset.in_channels={in_channels} values each"
            )
        self.name = name
        self.root = Path(root) if root is not None else None
        self.download = bool(download)
        self.batch_size = checked_int("batch_size", batch_size, 1)
        self.eval_batch_size = checked_int("eval_batch_size", eval_batch_size, 1)
        self.val_size = checked_val_size(val_size)
        self.split_seed = int(split_seed)
        self.shuffle_seed = int(shuffle_seed)
        self.train_limit = checked_int("train_limit", train_limit, 1, nullable=True)
        self.num_workers = checked_int("num_workers", num_workers, 0)
        self.augment = augment
        self.crop_padding = checked_int("crop_padding", crop_padding, 0)
        self.num_classes = checked_int("num_classes", num_classes, 1)
        self.image_size = checked_int("image_size", image_size, 1)
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]
        self.eps = float(eps)
        self.eps_l2 = float(eps_l2)
        self.step_size = float(step_size)
        self._data: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._on_device: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}

    # ---- what a subclass provides -------------------------------------------------------------
    def expected_files(self) -> list[str]:
        """Paths relative to ``root`` that ``load`` reads (none for embedded datasets)."""
        return []

    def after_download(self) -> None:
        """Hook run after ``resources`` are fetched (e.g. extract an archive)."""

    def inspect_files(self) -> int | None:
        """Check the (existing) files without loading whole splits, raising one line naming a bad
        file; return the number of training images (None when unknown)."""
        return None

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
        """Fail in seconds, before training: fetch missing files if ``download`` is on, then check
        that each file is there and well formed and that ``val_size`` leaves training images."""
        if self.download:
            self.prepare_data()
        self._require_files()
        n_train = self.inspect_files()
        if n_train is not None:
            self.val_count(n_train)

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
                download_from_mirrors(self.mirrors, filename, self.root, md5, self.download_timeout)
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
        n_val = self.val_count(n)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.split_seed))
        val_idx, train_idx = order[:n_val], order[n_val:]
        if self.train_limit is not None:
            train_idx = train_idx[: self.train_limit]
        self._data = {
            "train": (x_train[train_idx], y_train[train_idx]),
            "val": (x_train[val_idx], y_train[val_idx]),
            "test": (x_test, y_test),
        }

    def val_count(self, n_train: int) -> int:
        """Images ``val_size`` holds out of ``n_train``; raise if none would be left to train on."""
        if isinstance(self.val_size, float):
            n_val = round(self.val_size * n_train)
        else:
            n_val = self.val_size
        if n_val >= n_train:
            raise ValueError(
                f"dataset.val_size={self.val_size} leaves no training images: {self.name} has "
                f"{n_train}; choose a fraction in (0, 1) or a count in [0, {n_train - 1}]"
            )
        return n_val

    def check_shape(self, where: str, shape: Sequence[int]) -> None:
        """Raise unless ``shape`` is (N, in_channels, image_size, image_size)."""
        want = (self.in_channels, self.image_size, self.image_size)
        if len(shape) != 4 or tuple(shape[1:]) != want:
            raise ValueError(
                f"{where}: images have shape {tuple(shape)}, but dataset.in_channels and "
                f"dataset.image_size expect (N, {', '.join(map(str, want))})"
            )

    def check_labels(self, where: str, labels: Any) -> None:
        """Raise unless every label (a numpy array or tensor) is in [0, num_classes)."""
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ValueError(
                f"{where}: labels span {int(labels.min())}..{int(labels.max())}, outside "
                f"[0, {self.num_classes}) for dataset.num_classes={self.num_classes}"
            )

    def _check_tensors(self, x: torch.Tensor, y: torch.Tensor, split: str) -> None:
        where = f"{self.name} {split}"
        self.check_shape(where, x.shape)
        if len(x) != len(y):
            raise ValueError(f"{where}: {len(x)} images but {len(y)} labels")
        self.check_labels(where, y)

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
    def loader_device(self) -> torch.device:
        """Where the loaders hold the splits: the trainer's device when one is attached and the
        batches are made in the main process (``num_workers=0``), else the CPU."""
        trainer = getattr(self, "trainer", None)
        if trainer is None or self.num_workers > 0:
            return torch.device("cpu")
        return trainer.strategy.root_device

    def _split_on(self, split: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The split on ``device``, copied there once (kept in its stored dtype)."""
        x, y = self._split(split)
        if device.type == "cpu":
            return x, y
        key = (split, str(device))
        if key not in self._on_device:
            self._on_device[key] = (x.to(device), y.to(device))
        return self._on_device[key]

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        dataset = ImageBatchDataset(*self._split_on(split, self.loader_device()))
        sampler = (
            EpochShuffle(dataset, self.shuffle_seed) if shuffle else SequentialSampler(dataset)
        )
        batches = TensorBatches(sampler, batch_size, drop_last=False)
        batches.device = dataset.x.device  # Lightning's DDP rebuild drops it: indices stay on CPU
        return DataLoader(
            dataset,
            batch_sampler=batches,
            # the loader's base seed (worker seeds) comes from its own generator, not the global one
            generator=torch.Generator().manual_seed(self.shuffle_seed),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=collate_batch,
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
