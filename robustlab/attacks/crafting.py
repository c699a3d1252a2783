"""Glue between torchattacks and robustlab's runner: a ``Craft`` maps ``(x, y, seed)`` to ``x_adv``.

torchattacks' ``forward`` is called directly, bypassing ``Attack.__call__``, which would switch the
model's train/eval mode; the caller owns the mode.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torchattacks.attack import Attack

from robustlab.attacks.rng import random_targets, restart_seed
from robustlab.attacks.selection import correct_counts, selection_draws

Craft = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]


def plain(atk: Attack, targets: bool, num_classes: int) -> Craft:
    """Call ``atk.forward`` on ``y``, or on a random wrong class per example when ``targets``."""
    if targets:
        atk.set_mode_targeted_by_label(quiet=True)

    def craft(x: torch.Tensor, y: torch.Tensor, seed: int) -> torch.Tensor:
        atk.device = x.device
        if hasattr(atk, "seed"):
            atk.seed = seed
        return atk.forward(x, random_targets(y, num_classes) if targets else y)

    return craft


def restart_split(model: nn.Module, restarts: int) -> tuple[int, int]:
    """(restarts inside torchattacks, restarts by :func:`restarted`): a torchattacks attack judges
    its own restarts on one forward, so on a randomized model robustlab takes them over."""
    return (1, restarts) if selection_draws(model) > 1 else (restarts, 1)


def restarted(craft: Craft, model: nn.Module, restarts: int) -> Craft:
    """Rerun ``craft`` on the points still robust, each restart with a seed of its own (the
    call's seed again would replay the last run's starts: torchattacks reseeds from it); per
    point keep the candidate ``model`` is right on least often
    (:mod:`robustlab.attacks.selection`: one forward for a deterministic model)."""
    if restarts == 1:
        return craft

    def run(x: torch.Tensor, y: torch.Tensor, seed: int) -> torch.Tensor:
        x_adv = craft(x, y, seed)
        best = correct_counts(model, x_adv, y)
        for restart in range(1, restarts):
            idx = best.nonzero().flatten()
            if idx.numel() == 0:
                break
            cand = craft(x[idx], y[idx], restart_seed(seed, restart))
            counts = correct_counts(model, cand, y[idx])
            better = counts < best[idx]
            x_adv[idx[better]] = cand[better]
            best[idx[better]] = counts[better]
        return x_adv

    return run
