"""What Lightning's own training loop costs, without robustlab: the bare floor's net, data and Adam
step (experiments/bench/bare_loop.py) as a minimal LightningModule fitted by a plain ``pl.Trainer``
(no logger, checkpoint, progress bar or summary; batches from a plain iterable, not even a
DataLoader), timed against the bare loop itself with the bare epoch interleaved as
``train_loop.py`` does for a cell. It imports nothing from robustlab: the figure is the part of
``erm_epoch``'s ratio that any Lightning module pays on this machine.

    python experiments/bench/lightning_floor.py            # MNIST files if present, else digits

Standalone it trains on the whole training split (batch ``--batch-size``); ``train_loop.py``
runs it on the ERM cell's own training images, batch size and learning rate.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
import warnings

import bare_loop as bare
import pytorch_lightning as pl
import torch
import torch.nn.functional as F


def adam_with_cosine(net: torch.nn.Module, lr: float, total_steps: int):
    """Adam and its per-batch cosine schedule (a cell's ERM optimizer, as the floor builds it)."""
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps)


class MinimalModule(pl.LightningModule):
    """The bare step as a LightningModule: cross-entropy of the net, Adam, the schedule stepped
    per batch."""

    def __init__(self, net: torch.nn.Module, lr: float, total_steps: int):
        super().__init__()
        self.net, self.lr, self.total_steps = net, lr, total_steps

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        opt, schedule = adam_with_cosine(self.net, self.lr, self.total_steps)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


class ShuffledBatches:
    """The epoch's batches as one gather each from the held tensors (the floor's data path)."""

    def __init__(self, x, y, batch_size: int, generator: torch.Generator):
        self.x, self.y, self.batch_size, self.generator = x, y, batch_size, generator

    def __len__(self) -> int:
        return math.ceil(len(self.y) / self.batch_size)

    def __iter__(self):
        for idx in torch.randperm(len(self.y), generator=self.generator).split(self.batch_size):
            yield self.x[idx], self.y[idx]


class Interleaved(pl.Callback):
    """Times a Lightning fit's epochs (start to validation, or to the epoch's end without one)
    with the floor's epoch interleaved: one bare batch after each Lightning batch, outside the
    Lightning time, so both share the machine's load. ``bare_steps()`` starts a bare epoch (a
    generator yielding after each batch); per epoch, ``timed`` gets the Lightning seconds and
    ``bare`` the floor's."""

    def __init__(self, bare_steps):
        self.bare_steps = bare_steps
        self.timed: list[float] = []
        self.bare: list[float] = []
        self._mark: float | None = None

    def on_train_epoch_start(self, trainer, module):
        self._steps, self._times = self.bare_steps(), [0.0, 0.0]
        self._mark = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self._times[0] += time.perf_counter() - self._mark
        start = time.perf_counter()
        next(self._steps, None)
        self._mark = time.perf_counter()
        self._times[1] += self._mark - start

    def _end_epoch(self):
        if self._mark is None:
            return
        self._times[0] += time.perf_counter() - self._mark
        self._mark = None
        start = time.perf_counter()
        for _ in self._steps:  # nothing left: both epochs have the same batches
            pass
        self.timed.append(self._times[0])
        self.bare.append(self._times[1] + time.perf_counter() - start)

    def on_validation_start(self, trainer, module):
        self._end_epoch()

    def on_train_epoch_end(self, trainer, module):
        self._end_epoch()


def lightning_erm_epochs(x, y, meta: dict, epochs: int, batch_size: int, lr: float, seed: int = 0):
    """(median Lightning epoch seconds, median bare epoch seconds) of ERM on (x, y) with the
    floor's smallcnn for ``meta`` (``bare_loop.DATASETS``), Adam at ``lr`` with a per-batch
    cosine schedule, the same initial weights on both sides."""
    nets = []
    for _ in range(2):
        torch.manual_seed(seed)
        nets.append(bare.SmallCNN(1, 10, meta["image_size"], meta["mean"], meta["std"]))
    total_steps = epochs * math.ceil(len(y) / batch_size)
    opt, schedule = adam_with_cosine(nets[1], lr, total_steps)
    bare_gen = torch.Generator().manual_seed(seed)
    timer = Interleaved(lambda: bare.erm_steps(nets[1], x, y, batch_size, opt, bare_gen, schedule))
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,  # as a cell's trainer (conf/trainer/cpu.yaml)
        num_sanity_val_steps=0,
        callbacks=[timer],
    )
    batches = ShuffledBatches(x, y, batch_size, torch.Generator().manual_seed(seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "the dataloader does not have many workers", tips
        trainer.fit(MinimalModule(nets[0], lr, total_steps), batches)
    return statistics.median(timer.timed), statistics.median(timer.bare)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=list(bare.DATASETS), default=None)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--batch-size", type=int, default=128, help="a cell's: 128 MNIST, 64 digits"
    )
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    name, x, y, _, _ = bare.load(args.dataset)
    meta = bare.DATASETS[name]
    lightning_s, bare_s = lightning_erm_epochs(x, y, meta, args.epochs, args.batch_size, args.lr)
    print(f"lightning_erm_epoch {lightning_s:.3f} {bare_s:.3f} {lightning_s / bare_s:.3f}")


if __name__ == "__main__":
    main()
