"""The gate of the translation defense (Amich & Eshete 2022): which inputs go to the translator.

"Exact benign accuracy" needs benign inputs to reach the classifier unchanged, so a detector
routes only flagged inputs through the translator (the paper's gate is not described in what we
could read; these are our options). Every gate computes an OOD score (higher = more shifted) and
flags ``score > threshold``:

- ``score``: a classifier confidence score, ``max_softmax`` (Hendrycks & Gimpel, ICLR 2017; the
  score is -max softmax) or ``energy`` (Liu et al., NeurIPS 2020; E = -T logsumexp(f / T));
- ``detector``: a small CNN trained to tell clean from shifted inputs (its logit is the score);
- ``always``: flag every input (translate everything), for comparison.

``calibrate`` sets the threshold on clean (validation) inputs to a false-positive rate ``fpr``:
the threshold is the k-th largest clean score, k = floor(fpr * n), so that at most k clean
inputs (score strictly above it) are flagged. The threshold is a buffer, so it is in the
state_dict the training cache stores.
"""

from __future__ import annotations

import math

import torch
from torch import nn

GATES = ("score", "detector", "always")
SCORES = ("max_softmax", "energy")


def _detector(in_channels: int, width: int) -> nn.Sequential:
    """Clean-vs-shifted CNN: two Conv3x3-ReLU blocks (the second stride 2), global pool, linear."""
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2 * width, 1),
    )


class Gate(nn.Module):
    """``flags(x, net)`` -> bool per example (True: translate); ``score`` is differentiable."""

    def __init__(
        self,
        kind: str = "score",
        score: str = "max_softmax",
        fpr: float = 0.05,
        temperature: float = 1.0,
        in_channels: int = 1,
        detector_width: int = 16,
    ):
        super().__init__()
        if kind not in GATES:
            raise ValueError(f"gate kind={kind!r} is not one of {list(GATES)}")
        if score not in SCORES:
            raise ValueError(f"gate score={score!r} is not one of {list(SCORES)}")
        if not 0.0 <= fpr < 1.0:
            raise ValueError(f"gate fpr={fpr} must be in [0, 1)")
        if temperature <= 0:
            raise ValueError(f"gate temperature={temperature} must be > 0")
        self.kind, self.score_name, self.fpr, self.temperature = kind, score, fpr, temperature
        self.detector = _detector(in_channels, detector_width) if kind == "detector" else None
        # +inf until calibrated: an uncalibrated score/detector gate flags nothing
        self.register_buffer("threshold", torch.tensor(math.inf))

    def score(self, x: torch.Tensor, net: nn.Module) -> torch.Tensor:
        """OOD score per example, higher = more shifted (zeros for ``always``)."""
        if self.kind == "always":
            return x.new_zeros(len(x))
        if self.kind == "detector":
            return self.detector(x).squeeze(1)
        logits = net(x)
        if self.score_name == "max_softmax":
            return -logits.softmax(1).amax(1)
        return -self.temperature * torch.logsumexp(logits / self.temperature, dim=1)

    def flags_from(self, score: torch.Tensor) -> torch.Tensor:
        if self.kind == "always":
            return torch.ones_like(score, dtype=torch.bool)
        return score > self.threshold

    @torch.no_grad()
    def flags(self, x: torch.Tensor, net: nn.Module) -> torch.Tensor:
        return self.flags_from(self.score(x, net))

    @torch.no_grad()
    def calibrate(self, x_clean: torch.Tensor, net: nn.Module, batch_size: int = 512) -> float:
        """Set the threshold to the fpr-quantile of clean scores; returns the realized FPR."""
        if self.kind == "always":
            return 1.0
        scores = torch.cat([self.score(c, net) for c in x_clean.split(batch_size)])
        k = math.floor(self.fpr * len(scores))
        self.threshold.copy_(scores.sort(descending=True).values[k])
        return int(self.flags_from(scores).sum()) / len(scores)
