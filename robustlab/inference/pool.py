"""The class-indexed pool of clean images that Mixup Inference mixes inputs with.

Pang, Xu, Zhu, "Mixup Inference" (ICLR 2020) draw partners x_s from a pool of clean images by
class. Sources (``pool``):

- ``heldout`` (default): the datamodule's "val" split, held-out training data: no test leakage;
- ``test``: the test split, as the official code does (1k or 10k CIFAR test images). The pool then
  shares images with the evaluated examples: numbers may be optimistic;
- ``other``: the "train" split of another dataset of the same image shape (``pool_dataset``, an
  instantiable datamodule config), e.g. CIFAR-100 for CIFAR-10 as in the paper's ablation. Its labels
  are not the evaluated dataset's, so only MI-OL can use it (uniform over the pool's classes).

Images are stored sorted by class, so a draw of class ``c`` is ``offset[c] + floor(u * count[c])``
with ``u ~ U[0,1)`` from torch's global generator: fresh partners on every call, reproducible
under a seeded scope. The official code also flips/crops pool images once; this pool does not.
"""

from __future__ import annotations

from typing import Any

import torch
from hydra.utils import instantiate
from torch import nn

POOLS = ("heldout", "test", "other")
SPLIT_OF = {"heldout": "val", "test": "test", "other": "train"}


class PartnerPool(nn.Module):
    """Images (N, C, H, W) in [0,1] sorted by label, with per-class offsets and counts."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, source: str):
        super().__init__()
        if len(labels) == 0:
            raise ValueError(f"partner pool {source!r} is empty")
        order = torch.argsort(labels, stable=True)
        counts = torch.bincount(labels)
        self.source = source
        self.register_buffer("images", images[order].float(), persistent=False)
        self.register_buffer("counts", counts, persistent=False)
        self.register_buffer("offsets", counts.cumsum(0) - counts, persistent=False)
        self.register_buffer("classes", counts.nonzero().flatten(), persistent=False)
        self._covered = 0  # classes 0.._covered-1 are known to be present

    def __len__(self) -> int:
        return len(self.images)

    def require_classes(self, num_classes: int) -> None:
        """One-line error if a class in 0..num_classes-1 has no image (checked once per size)."""
        if num_classes <= self._covered:
            return
        counts = torch.zeros(num_classes, dtype=torch.long)
        known = self.counts[:num_classes].cpu()
        counts[: len(known)] = known
        missing = (counts == 0).nonzero().flatten().tolist()
        if missing:
            raise ValueError(
                f"partner pool {self.source!r} ({len(self)} images) has no image of class "
                f"{missing[0]} (missing: {missing}); raise pool_size or use another pool source"
            )
        self._covered = num_classes

    def draw(self, classes: torch.Tensor) -> torch.Tensor:
        """One random pool image of class ``classes[i, k]`` per entry: (B, N, C, H, W)."""
        counts = self.counts[classes]
        within = (torch.rand(classes.shape, device=classes.device) * counts).long()
        return self.images[self.offsets[classes] + torch.minimum(within, counts - 1)]


def same_classes(y_hat: torch.Tensor, n: int) -> torch.Tensor:
    """MI-PL partner classes: y_hat repeated n times, (B, n)."""
    return y_hat[:, None].expand(-1, n)


def other_classes(y_hat: torch.Tensor, n: int, num_classes: int) -> torch.Tensor:
    """MI-OL partner classes: uniform over the num_classes-1 classes != y_hat, (B, n)."""
    r = torch.randint(num_classes - 1, (len(y_hat), n), device=y_hat.device)
    return r + (r >= y_hat[:, None]).long()


def any_classes(pool: PartnerPool, batch: int, n: int, device: torch.device) -> torch.Tensor:
    """Classes for a foreign pool: uniform over the classes present in it, (batch, n)."""
    return pool.classes[torch.randint(len(pool.classes), (batch, n), device=device)]


def build_pool(
    datamodule: Any,
    source: str,
    size: int | None,
    seed: int,
    dataset_cfg: Any = None,
) -> PartnerPool:
    """Read the source split (after ``setup("fit")``) and keep a seeded subset of ``size`` images."""
    if source not in POOLS:
        raise ValueError(f"pool={source!r} is not one of {list(POOLS)}")
    if source == "other":
        if dataset_cfg is None:
            raise ValueError("pool=other needs pool_dataset (an instantiable datamodule config)")
        datamodule = instantiate(dataset_cfg)
        datamodule.prepare_data()
    elif datamodule is None:
        raise ValueError(f"pool={source!r} needs the run's datamodule, got None")
    datamodule.setup("fit")
    x, y = datamodule.tensors(SPLIT_OF[source])
    if size:
        keep = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:size]
        x, y = x[keep], y[keep]
    return PartnerPool(x, y, source)
