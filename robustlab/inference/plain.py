"""The identity inference wrapper: the trained net as it is."""

from __future__ import annotations

import torch

from robustlab.inference.base import Predictor


class Plain(Predictor):
    """Deterministic, differentiable: the predictor is the net itself."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
