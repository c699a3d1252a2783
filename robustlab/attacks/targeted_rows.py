"""The (point, target) rows of APGD-T and FAB-T (Croce & Hein, ICML 2020) and the waves they run in.

A point's k-th target (k = 2 .. n_targets + 1) is the class of its k-th largest clean logit, the
reference's choice. The reference runs one target after another on the points still robust; here
the rows are taken target-major in waves of at most ``max_rows`` (on a deterministic model
skipping points already broken): with many points left a wave is one target of all of them (the
reference's batch, so its memory), with few left one wave carries all their targets through the
net at once.
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
    x: torch.Tensor,
    slots: int,
    max_rows: int,
    run: RowRun,
    judge: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``slots`` rows per point of ``x`` (slot-major) in waves of at most ``max_rows``;
    returns (x_adv, broken) per point.

    Without ``judge`` (a deterministic model) a point's later rows are skipped once one row broke
    it, and of several rows breaking it in one wave the first slot's is kept. With ``judge``
    (``(candidates, points) -> how often the model is right on each``, several draws of a
    randomized model) every row runs and a point keeps the candidate judged right least often,
    broken when that is never."""
    n = len(x)
    point = torch.arange(n, device=x.device).repeat(slots)
    slot = torch.arange(slots, device=x.device).repeat_interleave(n)
    todo = torch.ones(n * slots, dtype=torch.bool, device=x.device)
    x_adv, broken = x.clone(), torch.zeros(n, dtype=torch.bool, device=x.device)
    best = torch.full((n,), torch.iinfo(torch.long).max, device=x.device)
    while True:
        if judge is None:
            todo &= ~broken[point]
        rows = todo.nonzero().flatten()[:max_rows]
        if rows.numel() == 0:
            return x_adv, broken
        todo[rows] = False
        adv_rows, hit = run(point[rows], slot[rows])
        if judge is not None:
            score = judge(adv_rows, point[rows]).long()
        else:
            score = torch.where(hit, 0, 1)
        keep = first_per_point(point[rows], score * slots + slot[rows])
        better = score[keep] < best[point[rows][keep]]
        won = keep[better]
        x_adv[point[rows][won]] = adv_rows[won]
        best[point[rows][won]] = score[won]
        broken = best == 0


def first_per_point(points: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """Indices of the rows with the smallest ``key`` of each point, one per point."""
    by_key = torch.argsort(key, stable=True)
    order = by_key[torch.argsort(points[by_key], stable=True)]
    first = torch.ones(len(order), dtype=torch.bool, device=points.device)
    first[1:] = points[order][1:] != points[order][:-1]
    return order[first]
