"""ImageDataModule behaviour: digits splits, loaders, augmentation, and every dataset config."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from data_fixtures import module_kwargs, write_image_folder
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

import robustlab.data.base as base
from robustlab.data import DigitsDataModule, ImageDataModule, random_crop_flip
from robustlab.data.base import ImageBatchDataset

CONF = Path(__file__).parents[1] / "conf" / "dataset"
METADATA = ("in_channels", "num_classes", "image_size", "mean", "std", "eps", "eps_l2", "step_size")


def digits(**overrides) -> DigitsDataModule:
    kwargs = module_kwargs(name="digits", image_size=8, val_size=0.1, batch_size=64)
    dm = DigitsDataModule(**{**kwargs, **overrides})
    dm.setup()
    return dm


def as_rows(x: torch.Tensor, y: torch.Tensor) -> list[tuple]:
    return [tuple(r) for r in torch.cat([x.flatten(1), y[:, None].float()], 1).tolist()]


# ---- digits --------------------------------------------------------------------------------------
def test_digits_split_is_deterministic_partition():
    a, b = digits(), digits()
    rows = []
    for split in ("train", "val", "test"):
        (xa, ya), (xb, yb) = a.tensors(split), b.tensors(split)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert xa.dtype == torch.float32 and xa.shape[1:] == (1, 8, 8) and ya.dtype == torch.int64
        rows += as_rows(xa, ya)
    assert [len(a.tensors(s)[1]) for s in ("train", "val", "test")] == [1293, 144, 360]
    assert set(a.tensors("test")[1].tolist()) == set(range(10))
    # Train, val and test together are exactly the 1797 images: a partition of the data set.
    x_train, y_train, x_test, y_test = a.load()
    assert sorted(rows) == sorted(as_rows(x_train, y_train) + as_rows(x_test, y_test))
    assert not torch.equal(digits(split_seed=1).tensors("test")[0], a.tensors("test")[0])


def test_train_limit_and_val_count():
    dm = digits(val_size=100, train_limit=50)
    assert len(dm.tensors("train")[1]) == 50 and len(dm.tensors("val")[1]) == 100
    assert torch.equal(dm.tensors("train")[0], digits(val_size=100).tensors("train")[0][:50])


def test_bad_arguments_are_one_line():
    with pytest.raises(
        ValueError, match="dataset.augment=flip is unknown; choose one of none, crop, crop_flip"
    ):
        DigitsDataModule(**module_kwargs(augment="flip"))
    shape = (
        r"images have shape \(1437, 1, 8, 8\), but dataset.in_channels and dataset.image_size "
        r"expect \(N, 1, 28"
    )
    with pytest.raises(ValueError, match=shape):
        digits(image_size=28)
    with pytest.raises(ValueError, match="unknown split 'holdout'"):
        digits().tensors("holdout")


# ---- loaders -------------------------------------------------------------------------------------
def test_loaders_yield_float_batches_via_getitems(monkeypatch):
    calls = []
    original = ImageBatchDataset.__getitems__
    monkeypatch.setattr(
        ImageBatchDataset, "__getitems__", lambda self, i: calls.append(len(i)) or original(self, i)
    )
    dm = digits()
    batches = list(dm.test_dataloader())
    assert calls[:2] == [8, 8] and len(batches) == 45  # 360 / eval_batch_size 8, drop_last off
    x, y = batches[0]
    assert x.dtype == torch.float32 and x.shape == (8, 1, 8, 8) and y.dtype == torch.int64
    assert torch.equal(torch.cat([b[0] for b in batches]), dm.tensors("test")[0])  # no shuffle
    train = dm.train_dataloader()
    assert not train.persistent_workers and train.batch_sampler.batch_size == 64
    torch.manual_seed(0)
    first = next(iter(train))[1]
    torch.manual_seed(1)
    assert torch.equal(first, next(iter(dm.train_dataloader()))[1])  # the global seed plays no part
    assert not torch.equal(first, dm.tensors("train")[1][:64])  # shuffled


def test_training_batches_are_slices_of_the_epoch_shuffle():
    """One gather per batch with a slice of EpochShuffle's order, which depends on (seed, epoch)
    only: the batches of the per-example sampler, without a Python int per example."""
    dm = digits(shuffle_seed=3)
    x, y = dm.tensors("train")
    for epoch in (0, 4):
        loader = dm.train_dataloader()
        loader.batch_sampler.sampler.set_epoch(epoch)  # as Lightning does before every epoch
        sampler = base.EpochShuffle(range(len(y)), 3)
        sampler.set_epoch(epoch)
        order = list(sampler)
        batches = list(loader)
        assert [len(b[1]) for b in batches] == [64] * 20 + [13]
        assert torch.equal(torch.cat([b[1] for b in batches]), y[order])
        assert torch.equal(torch.cat([b[0] for b in batches]), x[order])


def test_ddp_rebuilds_the_batches_around_its_distributed_sampler():
    """Under DDP Lightning replaces the sampler: TensorBatches is rebuilt around a
    DistributedSampler (seeded, per epoch) and batches its share as BatchSampler would."""
    from lightning_fabric.utilities.data import _replace_dunder_methods
    from pytorch_lightning.utilities.data import _update_dataloader
    from torch.utils.data import BatchSampler, DataLoader, DistributedSampler

    dm = digits()
    # as Lightning asks for a loader: the constructors' arguments are kept for a rebuild
    with _replace_dunder_methods(DataLoader, "dataset"), _replace_dunder_methods(BatchSampler):
        loader = dm.train_dataloader()
    y = dm.tensors("train")[1]
    for rank in (0, 1):
        sampler = DistributedSampler(loader.dataset, num_replicas=2, rank=rank, shuffle=True)
        sampler.set_epoch(2)
        ddp = _update_dataloader(loader, sampler)
        assert isinstance(ddp.batch_sampler, base.TensorBatches)
        assert ddp.batch_sampler.sampler is sampler and ddp.batch_sampler.batch_size == 64
        share = list(sampler)
        labels = torch.cat([b[1] for b in ddp])
        assert torch.equal(labels, y[share]) and len(labels) == (len(y) + 1) // 2


# ---- augmentation --------------------------------------------------------------------------------
def test_crop_flip_identity_and_range():
    x = torch.rand(16, 3, 8, 8)
    assert torch.equal(random_crop_flip(x, 0, flip=False), x)
    out = random_crop_flip(x, 2)
    assert out.shape == x.shape and out.dtype == x.dtype and 0 <= out.min() and out.max() <= 1


def test_crop_flip_is_a_window_of_the_padded_image():
    x = torch.arange(6 * 2 * 5 * 5, dtype=torch.float32).reshape(6, 2, 5, 5) + 1  # all distinct
    gen = torch.Generator().manual_seed(3)
    out = random_crop_flip(x, 2, flip=True, generator=gen)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(len(x)):
        windows = [padded[i, :, a : a + 5, b : b + 5] for a in range(5) for b in range(5)]
        assert any(torch.equal(out[i], w) or torch.equal(out[i], w.flip(2)) for w in windows)
    again = random_crop_flip(x, 2, flip=True, generator=torch.Generator().manual_seed(3))
    assert torch.equal(out, again)


def test_flip_only():
    x = torch.rand(64, 1, 4, 4)
    out = random_crop_flip(x, 0, generator=torch.Generator().manual_seed(0))
    flipped = torch.tensor([torch.equal(o, f) for o, f in zip(out, x.flip(3))])
    kept = torch.tensor([torch.equal(o, i) for o, i in zip(out, x)])
    assert bool((flipped | kept).all()) and 0 < int(flipped.sum()) < 64
    symmetric = torch.cat([x, x.flip(3)], 3)  # left half mirrored into the right half
    assert torch.equal(random_crop_flip(symmetric, 0), symmetric)


class Probe(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(64, 10)

    def step(self, batch):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x.flatten(1)), y)

    def training_step(self, batch, _):
        return self.step(batch)

    def validation_step(self, batch, _):
        self.step(batch)

    def test_step(self, batch, _):
        self.step(batch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_augmentation_only_while_training(monkeypatch):
    calls = []
    monkeypatch.setattr(base, "apply_augment", lambda x, a, p: calls.append((a, p)) or x)
    dm = DigitsDataModule(
        **module_kwargs(name="digits", image_size=8, augment="crop_flip", crop_padding=2)
    )
    trainer = pl.Trainer(
        max_epochs=1, limit_train_batches=3, limit_val_batches=2, limit_test_batches=2,
        num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
    )  # fmt: skip
    trainer.fit(Probe(), datamodule=dm)
    assert calls == [("crop_flip", 2)] * 3
    trainer.test(Probe(), datamodule=dm, verbose=False)
    assert len(calls) == 3


# ---- configs -------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", sorted(CONF.glob("[!_]*.yaml")), ids=lambda p: p.stem)
def test_every_dataset_config_instantiates(path, tmp_path, compose_cfg):
    overrides = [f"dataset={path.stem}"]
    if path.stem == "imagefolder":
        folder = write_image_folder(tmp_path, classes=[f"c{i}" for i in range(10)], per_class=1)
        overrides.append(f"dataset.root={folder}")
    cfg = compose_cfg(*overrides).dataset
    dm = instantiate(cfg)
    assert isinstance(dm, ImageDataModule) and dm.name == path.stem
    assert all(cfg[key] is not None for key in METADATA)
    assert len(dm.mean) == len(dm.std) == dm.in_channels
    if cfg.root is None or path.stem == "imagefolder":
        dm.check_files()
        dm.setup()
        x, _ = dm.tensors("train")
        assert x.shape[1:] == (dm.in_channels, dm.image_size, dm.image_size)
    else:
        with pytest.raises(FileNotFoundError, match=cfg.root):
            dm.check_files()


def test_digits_config_statistics():
    cfg = OmegaConf.load(CONF / "digits.yaml")
    from sklearn.datasets import load_digits

    images = torch.from_numpy(load_digits().images / 16)
    assert cfg.mean[0] == pytest.approx(float(images.mean()), abs=1e-4)
    assert cfg.std[0] == pytest.approx(float(images.std(unbiased=False)), abs=1e-4)
