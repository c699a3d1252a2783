"""Batched augmentation on whatever device the batch lives on (no per-image Python loop)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

AUGMENTATIONS = ("none", "crop", "crop_flip")


def random_crop_flip(
    x: torch.Tensor, padding: int, flip: bool = True, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Random crop of each NCHW image from its zero-padded copy, then a random horizontal flip.

    Crop offsets and flips are drawn per image from ``generator`` (default: torch's global RNG for
    ``x.device``) and applied as one gather, so the cost does not grow with a Python loop.
    """
    if x.dim() != 4:
        raise ValueError(f"random_crop_flip expects an NCHW batch, got shape {tuple(x.shape)}")
    if padding < 0:
        raise ValueError(f"crop padding must be >= 0, got {padding}")
    n, _, h, w = x.shape
    device = x.device
    if padding == 0 and not flip:
        return x
    padded = F.pad(x, (padding, padding, padding, padding)) if padding else x
    span = 2 * padding + 1
    top = torch.randint(span, (n, 1), device=device, generator=generator)
    left = torch.randint(span, (n, 1), device=device, generator=generator)
    cols = torch.arange(w, device=device).expand(n, w)
    if flip:
        mirrored = torch.rand(n, 1, device=device, generator=generator) < 0.5
        cols = torch.where(mirrored, (w - 1) - cols, cols)
    rows = top + torch.arange(h, device=device)  # (n, h)
    cols = left + cols  # (n, w)
    batch = torch.arange(n, device=device)[:, None, None]
    # Advanced indices on dims 0, 2, 3 come first in the result: (n, h, w, c) -> back to NCHW.
    out = padded[batch, :, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


def apply_augment(x: torch.Tensor, augment: str, padding: int) -> torch.Tensor:
    """Apply the named augmentation (one of ``AUGMENTATIONS``) to a training batch."""
    if augment == "none":
        return x
    if augment in ("crop", "crop_flip"):
        return random_crop_flip(x, padding, flip=augment == "crop_flip")
    raise ValueError(f"unknown augment {augment!r}; choose one of {', '.join(AUGMENTATIONS)}")
