"""BPDA: Backward Pass Differentiable Approximation (Athalye, Carlini, Wagner, ICML 2018).

A non-differentiable step ``fn`` runs as is on the forward pass; on the backward pass the
gradient flows through ``surrogate`` instead (the identity by default: straight-through).
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def bpda(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    surrogate: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Return ``fn(x)`` whose gradient w.r.t. ``x`` is that of ``surrogate(x)`` (identity if None)."""
    with torch.no_grad():
        out = fn(x)
    approx = x if surrogate is None else surrogate(x)
    return approx + (out - approx).detach()
