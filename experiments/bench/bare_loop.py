"""The bare floor of `make bench`: a robustlab cell's training and PGD evaluation with nothing but
PyTorch, so that robustlab's overhead is measured against code that cannot share it.

It imports nothing from robustlab (torch, numpy and the standard library; scikit-learn only for
the digits fallback) and re-implements, from reading robustlab's sources, the work a cell does
with ``model=smallcnn``:

- the net: robustlab/models/smallcnn.py with its first layer, robustlab/models/normalize.py
  ((x - mean) / std per channel); parameters created in the same order and by the same layer
  types, so the same seed gives the same weights and the same logits;
- the data: the four MNIST IDX .gz files (robustlab/data/idx.py), else scikit-learn's digits
  (robustlab/data/digits.py: images / 16, a stratified 20% test split by split_seed), optionally
  with robustlab's seeded validation hold-out; the whole set held as one float tensor on the
  device and indexed per batch;
- the inner maximization of PGD-AT (robustlab/defenses/inner.py): uniform random start in the
  L-inf ball, ``steps`` signed-gradient steps of summed cross-entropy (step eps/4 unless given),
  projection and clipping to [0, 1], the net in eval mode;
- PGD evaluation as robustlab's ``attack=pgd`` runs it (torchattacks' PGD: mean cross-entropy,
  random start, step 2.5 * eps / steps by default), an example counted robust only if it is
  classified right both clean and attacked;
- a plain Adam loop (zero_grad, backward, step; an optional per-batch lr schedule step).

    python experiments/bench/bare_loop.py --quick     # a smoke run on whatever data is there
"""

from __future__ import annotations

import argparse
import gzip
import struct
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

MNIST = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "mnist"
# per dataset: normalization statistics and threat model (robustlab's conf/dataset/*.yaml)
DATASETS = {
    "mnist": {"mean": [0.1307], "std": [0.3081], "eps": 0.3, "image_size": 28},
    "digits": {"mean": [0.3053], "std": [0.3760], "eps": 0.2, "image_size": 8},
}


# ---- the net -------------------------------------------------------------------------------------
class SmallCNN(nn.Module):
    """Normalize, then per width conv3x3 -> max-pool 2 (while the map stays >= 2x2) -> ReLU, then
    average-pool to at most 4x4 and a hidden ReLU layer (dropout 0: the identity)."""

    def __init__(
        self, in_channels, num_classes, image_size, mean, std, widths=(32, 64), hidden=128
    ):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.convs, self.pools = nn.ModuleList(), []
        size, channels = image_size, in_channels
        for width in widths:
            self.convs.append(nn.Conv2d(channels, width, 3, padding=1))
            self.pools.append(size // 2 >= 2)
            size, channels = (size // 2 if self.pools[-1] else size), width
        self.pooled = min(size, 4)
        self.fc1 = nn.Linear(channels * self.pooled**2, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        for conv, pool in zip(self.convs, self.pools):
            x = conv(x)
            x = F.relu(F.max_pool2d(x, 2) if pool else x, inplace=True)
        x = F.adaptive_avg_pool2d(x, self.pooled).flatten(1)
        return self.fc2(F.relu(self.fc1(x), inplace=True))


# ---- the data ------------------------------------------------------------------------------------
def read_idx(path: Path) -> np.ndarray:
    """A gzipped IDX file of uint8 data (magic 0x0000080N: N dimensions)."""
    with gzip.open(path, "rb") as fh:
        _, _, ndim = struct.unpack(">HBB", fh.read(4))
        shape = struct.unpack(f">{ndim}i", fh.read(4 * ndim))
        return np.frombuffer(fh.read(), dtype=np.uint8).reshape(shape)


def load(name: str | None = None, root: Path = MNIST, split_seed: int = 0):
    """``(name, x_train, y_train, x_test, y_test)``, x float32 NCHW in [0, 1], y int64: MNIST from
    ``root`` when its files are there (or ``name="mnist"``), else digits."""
    if name is None:
        name = "mnist" if (root / "train-images-idx3-ubyte.gz").exists() else "digits"
    if name == "mnist":
        arrays = [
            read_idx(root / f"{split}-{kind}-idx{3 if kind == 'images' else 1}-ubyte.gz")
            for split in ("train", "t10k")
            for kind in ("images", "labels")
        ]
        x_tr, y_tr, x_te, y_te = arrays
        x_tr, x_te = (torch.from_numpy(a.copy()).unsqueeze(1).float() / 255 for a in (x_tr, x_te))
    else:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        x = (digits.images / 16.0).astype(np.float32)[:, None]
        x_tr, x_te, y_tr, y_te = train_test_split(
            x, digits.target, test_size=0.2, stratify=digits.target, random_state=split_seed
        )
        x_tr, x_te = torch.from_numpy(x_tr), torch.from_numpy(x_te)
    y_tr, y_te = (torch.from_numpy(y.astype(np.int64)) for y in (y_tr, y_te))
    return name, x_tr, y_tr, x_te, y_te


def holdout(x: torch.Tensor, y: torch.Tensor, n_val: int, split_seed: int = 0, limit=None):
    """The training images left after holding ``n_val`` out (robustlab's seeded split: a
    permutation by ``split_seed``, the first ``n_val`` go to validation), the first ``limit``."""
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(split_seed))
    keep = order[n_val:][:limit]
    return x[keep], y[keep]


# ---- PGD -----------------------------------------------------------------------------------------
def pgd(net, x, y, eps, steps, step_size, reduction="sum"):
    """L-inf PGD from a uniform random start; returns a detached x_adv in the ball and [0, 1]."""
    x = x.detach()
    x_adv = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(net(x_adv), y, reduction=reduction)
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = x_adv.detach() + step_size * grad.sign()
        x_adv = (x + (x_adv - x).clamp(-eps, eps)).clamp(0, 1)
    return x_adv.detach()


# ---- training and evaluation ---------------------------------------------------------------------
def _batches(n: int, batch_size: int, generator: torch.Generator, device) -> list[torch.Tensor]:
    return torch.randperm(n, generator=generator).to(device).split(batch_size)


def _step(net, opt, x, y, scheduler) -> None:
    opt.zero_grad()
    F.cross_entropy(net(x), y).backward()
    opt.step()
    if scheduler is not None:
        scheduler.step()


def erm_steps(net, x, y, batch_size, opt, generator, scheduler=None):
    """``erm_epoch`` as a generator that yields after each batch (to interleave it with
    another loop)."""
    net.train()
    for idx in _batches(len(y), batch_size, generator, x.device):
        _step(net, opt, x[idx], y[idx], scheduler)
        yield


def pgd_at_steps(net, x, y, batch_size, opt, generator, eps, steps, step_size=None, scheduler=None):
    """``pgd_at_epoch`` as a generator that yields after each batch."""
    step_size = eps / 4 if step_size is None else step_size
    for idx in _batches(len(y), batch_size, generator, x.device):
        xb, yb = x[idx], y[idx]
        net.eval()
        x_adv = pgd(net, xb, yb, eps, steps, step_size)
        net.train()
        _step(net, opt, x_adv, yb, scheduler)
        yield


def erm_epoch(net, x, y, batch_size, opt, generator, scheduler=None) -> None:
    """One epoch of cross-entropy on clean batches, shuffled by ``generator``."""
    for _ in erm_steps(net, x, y, batch_size, opt, generator, scheduler):
        pass


def pgd_at_epoch(
    net, x, y, batch_size, opt, generator, eps, steps, step_size=None, scheduler=None
) -> None:
    """One epoch of PGD-AT (Madry et al.): each batch replaced by its PGD example, crafted with
    the net in eval mode (step eps/4 when ``step_size`` is None)."""
    for _ in pgd_at_steps(net, x, y, batch_size, opt, generator, eps, steps, step_size, scheduler):
        pass


def pgd_eval(net, x, y, eps, steps=20, step_size=None, batch_size=500, channels_last=False):
    """Robust accuracy under PGD-``steps`` (mean CE, step 2.5 * eps / steps unless given): the
    fraction of examples classified right both clean and on their adversarial example.
    ``channels_last``: the net and the inputs in channels_last memory format meanwhile."""
    step_size = 2.5 * eps / steps if step_size is None else step_size
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    robust = torch.zeros((), dtype=torch.long, device=x.device)
    if channels_last:
        net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    try:
        for xb, yb in zip(x.split(batch_size), y.split(batch_size)):
            with torch.no_grad():
                clean = net(xb).argmax(1) == yb
            x_adv = pgd(net, xb, yb, eps, steps, step_size, reduction="mean")
            with torch.no_grad():
                robust += (clean & (net(x_adv).argmax(1) == yb)).sum()
    finally:
        for p in net.parameters():
            p.requires_grad_(True)
        net.to(memory_format=torch.contiguous_format)
    return robust.item() / len(y)


@torch.no_grad()
def forward_n(net, x, n: int) -> torch.Tensor:
    """``n`` plain forwards of ``x`` (eval mode, no autograd); the last logits."""
    net.eval()
    for _ in range(n):
        logits = net(x)
    return logits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=list(DATASETS), default=None)
    parser.add_argument("--quick", action="store_true", help="256 training images, PGD-2")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    name, x, y, x_test, y_test = load(args.dataset)
    if args.quick:
        x, y, x_test, y_test = x[:256], y[:256], x_test[:128], y_test[:128]
    meta, steps = DATASETS[name], 2 if args.quick else 10
    torch.manual_seed(0)
    net = SmallCNN(1, 10, meta["image_size"], meta["mean"], meta["std"])
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    for label, epoch in (
        ("erm", lambda: erm_epoch(net, x, y, 128, opt, gen)),
        (
            f"pgd_at (PGD-{steps})",
            lambda: pgd_at_epoch(net, x, y, 128, opt, gen, meta["eps"], steps),
        ),
    ):
        start = time.perf_counter()
        epoch()
        print(f"{name} {label}: {time.perf_counter() - start:.2f} s/epoch")
    start = time.perf_counter()
    acc = pgd_eval(net, x_test, y_test, meta["eps"], 2 if args.quick else 20)
    print(f"{name} PGD eval: robust accuracy {acc:.3f} in {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
