"""Which candidate of an attack is kept, judged so that one lucky draw cannot decide it.

A randomized model's prediction on one forward is one draw. AutoAttack's ``rand`` version judges
success on a single evaluation, which inflates the robustness of randomized defenses (a point is
given up as broken on a lucky wrong draw, or a weaker candidate kept on a lucky right one). Here a
randomized model (``randomized = True`` and not already an expectation, as the EOT wrapper is) is
scored on ``SELECTION_DRAWS`` fresh draws: a candidate replaces another only when it is correct on
fewer of them, and a point leaves the attack only once it is wrong on every one. A deterministic
model is scored once, so plain nets keep the reference's rule exactly.
"""

from __future__ import annotations

import torch
from torch import nn

SELECTION_DRAWS = 10


def selection_draws(model: nn.Module) -> int:
    """How many forwards judge a candidate on ``model``: 1 unless it is randomized."""
    randomized = getattr(model, "randomized", False) and not getattr(model, "expectation", False)
    return SELECTION_DRAWS if randomized else 1


@torch.no_grad()
def correct_counts(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per example, on how many of ``selection_draws(model)`` forwards ``model`` is right."""
    draws = selection_draws(model)
    return sum((model(x).argmax(1) == y).long() for _ in range(draws))
