"""The (point, target) rows of APGD-T and FAB-T (Croce & Hein, ICML 2020) and the waves they run in.

A point's k-th target (k = 2 .. n_targets + 1) is the class of its k-th largest clean logit, the
reference's choice. The reference runs one target after another on the points still robust; here
the rows are taken target-major in waves of at most ``max_rows``, skipping points already broken:
with many points left a wave is one target of all of them (the reference's batch, so its memory),
with few left one wave carries all their targets through the net at once.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# (points, slot) -> (adversarial row, broken row) for the rows pairing point[i] with slot[i]
RowRun = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def target_labels(clean_logits: torch.Tensor, n_targets: int) -> torch.Tensor:
    """(points, n_targets): column k-2 holds the class of the k-th largest clean logit."""
    order = clean_logits.sort(dim=1)[1]
    return torch.stack([order[:, -k] for k in range(2, n_targets + 2)], dim=1)


def run_in_waves(
    x: torch.Tensor, slots: int, max_rows: int, run: RowRun
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``slots`` rows per point of ``x`` (slot-major, skipping broken points) in waves of at
    most ``max_rows``; returns (x_adv, broken) per point."""
    n = len(x)
    point = torch.arange(n, device=x.device).repeat(slots)
    slot = torch.arange(slots, device=x.device).repeat_interleave(n)
    todo = torch.ones(n * slots, dtype=torch.bool, device=x.device)
    x_adv, broken = x.clone(), torch.zeros(n, dtype=torch.bool, device=x.device)
    while True:
        todo &= ~broken[point]
        rows = todo.nonzero().flatten()[:max_rows]
        if rows.numel() == 0:
            return x_adv, broken
        todo[rows] = False
        adv_rows, hit = run(point[rows], slot[rows])
        x_adv[point[rows][hit]] = adv_rows[hit]
        broken[point[rows][hit]] = True
