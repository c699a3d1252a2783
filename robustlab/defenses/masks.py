"""Binary masks and image mixing for M2AT (Adachi et al., VISAPP 2023), as batched tensor ops.

Masks are boolean (N, 1, H, W), shared over channels. Areas and mixing weights are fractions in
[0, 1], one per image, fixed or drawn from a Beta distribution.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

MASK_KINDS = ("box", "pixel")
MASK_AREAS = ("fixed", "beta")
MIXINGS = ("mixup", "cutmix")


def check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not one of {list(choices)}")


def sample_fractions(
    n: int, fixed: float | None, alpha: float, beta: float, device=None
) -> torch.Tensor:
    """``n`` fractions: all ``fixed`` when given, else i.i.d. Beta(alpha, beta)."""
    if fixed is not None:
        return torch.full((n,), float(fixed), device=device)
    a = torch.tensor(float(alpha), device=device)
    b = torch.tensor(float(beta), device=device)
    return torch.distributions.Beta(a, b).sample((n,))


def box_masks(areas: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """CutMix-style rectangles of the given area fractions, placed uniformly inside the image.

    The box is near-square (height round(h*sqrt(area)), width fitted to the area), so its area is
    the requested one up to rounding; it is never clipped by the border.
    """
    n = areas.shape[0]
    bh = (h * areas.sqrt()).round().clamp(1, h)
    bw = (areas * h * w / bh).round().clamp(0, w)
    top = (torch.rand(n, device=areas.device) * (h - bh + 1)).floor().view(-1, 1, 1)
    left = (torch.rand(n, device=areas.device) * (w - bw + 1)).floor().view(-1, 1, 1)
    rows = torch.arange(h, device=areas.device).view(1, h, 1)
    cols = torch.arange(w, device=areas.device).view(1, 1, w)
    inside = (rows >= top) & (rows < top + bh.view(-1, 1, 1))
    inside = inside & (cols >= left) & (cols < left + bw.view(-1, 1, 1))
    return inside.unsqueeze(1)


def pixel_masks(areas: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Bernoulli(area) per pixel, one draw per pixel shared over channels."""
    draws = torch.rand(areas.shape[0], 1, h, w, device=areas.device)
    return draws < areas.view(-1, 1, 1, 1)


def binary_masks(kind: str, areas: torch.Tensor, h: int, w: int) -> torch.Tensor:
    check_choice("mask kind", kind, MASK_KINDS)
    return box_masks(areas, h, w) if kind == "box" else pixel_masks(areas, h, w)


def mixup_images(x1: torch.Tensor, x2: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """Convex combination lam * x1 + (1 - lam) * x2, one lam per image (exactly x1 at lam=1)."""
    lam = lam.view(-1, *([1] * (x1.dim() - 1)))
    return lam * x1 + (1 - lam) * x2


def cutmix_images(
    x1: torch.Tensor, x2: torch.Tensor, lam: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste a box of x2 covering about 1 - lam of x1; returns (images, fraction of x1 kept)."""
    box = box_masks(1 - lam, x1.shape[-2], x1.shape[-1])
    return torch.where(box, x2, x1), 1 - box.float().mean(dim=(1, 2, 3))


def mix_labels(
    y1: torch.Tensor, y2: torch.Tensor, lam: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """Soft labels lam * onehot(y1) + (1 - lam) * onehot(y2); each row sums to one."""
    lam = lam.view(-1, 1)
    one1 = F.one_hot(y1, num_classes).to(lam.dtype)
    one2 = F.one_hot(y2, num_classes).to(lam.dtype)
    return lam * one1 + (1 - lam) * one2
