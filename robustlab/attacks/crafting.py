"""Glue between torchattacks and robustlab's runner: a ``Craft`` maps ``(x, y, seed)`` to ``x_adv``.

torchattacks' ``forward`` is called directly, bypassing ``Attack.__call__``, which would switch the
model's train/eval mode; the caller owns the mode.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torchattacks.attack import Attack

from robustlab.attacks.rng import random_targets

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


def restarted(craft: Craft, model: nn.Module, restarts: int) -> Craft:
    """Rerun ``craft`` on the points still robust, keeping each point's first success."""
    if restarts == 1:
        return craft

    def broken(x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(x_adv).argmax(1) != y

    def run(x: torch.Tensor, y: torch.Tensor, seed: int) -> torch.Tensor:
        x_adv = craft(x, y, seed)
        robust = ~broken(x_adv, y)
        for _ in range(restarts - 1):
            idx = robust.nonzero().flatten()
            if idx.numel() == 0:
                break
            cand = craft(x[idx], y[idx], seed)
            hit = broken(cand, y[idx])
            x_adv[idx[hit]] = cand[hit]
            robust[idx[hit]] = False
        return x_adv

    return run
