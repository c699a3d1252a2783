"""Benchmark: robustlab's training (Lightning + DefenseModule) against a bare PyTorch loop doing the
same work (same net, data, batch size, optimizer, inner PGD), in the same process and run.

    python experiments/bench/train_loop.py                      # MNIST files if present, else digits
    python experiments/bench/train_loop.py --dataset digits --epochs 3

Prints seconds per epoch for ERM and PGD-10 AT, framework and bare loop, and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_module
from hydra.utils import instantiate

from robustlab.defenses.adversarial import PGDAT
from robustlab.defenses.erm import ERM
from robustlab.defenses.inner import InnerAttack, pgd
from robustlab.models.smallcnn import SmallCNN
from robustlab.modes import eval_mode
from robustlab.paths import CONF_PACKAGE

MNIST = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "mnist"
OPT = {"name": "adam", "lr": 1e-3}


def datamodule(name: str):
    """The project's own dataset config (conf/dataset/NAME.yaml), all training images, no val."""
    with initialize_config_module(config_module=CONF_PACKAGE, version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"dataset={name}"]).dataset
    cfg.val_size, cfg.root = 0.0, str(MNIST) if name == "mnist" else None
    return instantiate(cfg)


def net(dm):
    return SmallCNN(
        name="smallcnn",
        in_channels=1,
        num_classes=10,
        image_size=dm.image_size,
        mean=dm.mean,
        std=dm.std,
    )


def bare_epoch(model, loader, inner: InnerAttack | None) -> float:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    start = time.perf_counter()
    model.train()
    for x, y in loader:
        if inner is not None:
            with eval_mode(model):
                x = pgd(model, x, y, inner)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return time.perf_counter() - start


class EpochTimer(pl.Callback):
    def __init__(self):
        self.times = []

    def on_train_epoch_start(self, trainer, module):
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer, module):
        self.times.append(time.perf_counter() - self.start)


def framework_epochs(defense, dm, epochs: int) -> list[float]:
    timer = EpochTimer()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        logger=False,
        callbacks=[timer],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        deterministic=True,
    )
    trainer.fit(defense, datamodule=dm)
    return timer.times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["mnist", "digits"], default=None)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    name = args.dataset or (
        "mnist" if (MNIST / "train-images-idx3-ubyte.gz").exists() else "digits"
    )
    torch.set_num_threads(args.threads)
    dm = datamodule(name)
    dm.setup("fit")
    loader = dm.train_dataloader()
    rows = []
    for label, inner in (("erm", None), ("pgd_at (PGD-10)", InnerAttack(eps=dm.eps, steps=10))):
        torch.manual_seed(0)
        bare = [bare_epoch(net(dm), loader, inner) for _ in range(args.epochs)]
        kwargs = dict(name="b", num_classes=10, optimizer=OPT)
        if inner is None:
            defense = ERM(net=net(dm), **kwargs)
        else:
            defense = PGDAT(net=net(dm), inner={"eps": dm.eps, "steps": 10}, **kwargs)
        framework = framework_epochs(defense, dm, args.epochs)
        rows.append((label, statistics.median(framework), statistics.median(bare)))
    print(
        f"dataset={name} train_images={len(dm.tensors('train')[0])} threads={args.threads} "
        f"epochs={args.epochs} (median seconds per epoch)"
    )
    print(f"{'defense':18} {'robustlab':>10} {'bare loop':>10} {'ratio':>7}")
    for label, fw, bare in rows:
        print(f"{label:18} {fw:10.2f} {bare:10.2f} {fw / bare:7.2f}")


if __name__ == "__main__":
    main()
