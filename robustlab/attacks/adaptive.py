"""Adaptive threat-model tools: EOT over randomness and BPDA through non-differentiable parts.

EOT (Athalye, Engstrom, Ilyas, Kwok, ICML 2018; Tramer et al., NeurIPS 2020 for Mixup Inference)
attacks the expected prediction of a randomized predictor. BPDA (Athalye, Carlini, Wagner, ICML
2018) routes gradients of non-differentiable steps through a surrogate; it is switched on only
while an attack crafts (inside the context manager of :func:`adaptive_model`): scoring always
uses the predictor's real forward, outside it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch
from torch import nn


class EOT(nn.Module):
    """``log(mean_k softmax(predictor(x)))`` over ``draws`` independent forwards (log-probs).

    A predictor that can compute the expectation in one batched forward offers
    ``expected_log_probs(x, draws)`` (Mixup Inference does); others are drawn one forward at a
    time, since a batch of copies of ``x`` need not give independent draws.
    """

    output = "log_probs"
    randomized = True
    expectation = True  # already an average over draws: attacks judge it on one forward

    def __init__(self, predictor: nn.Module, draws: int):
        super().__init__()
        if draws < 1:
            raise ValueError(f"EOT needs draws >= 1, got {draws}")
        self.predictor, self.draws = predictor, draws
        self.differentiable = getattr(predictor, "differentiable", True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batched = getattr(self.predictor, "expected_log_probs", None)
        if batched is not None:
            return batched(x, self.draws)
        logp = torch.stack([self.predictor(x).log_softmax(-1) for _ in range(self.draws)])
        return logp.logsumexp(0) - math.log(self.draws)


def adaptive_model(
    predictor: nn.Module, eot_draws: int, native_eot: bool = False
) -> tuple[nn.Module, Callable[[], AbstractContextManager]]:
    """The model an adaptive attack crafts on, and a factory of the context to craft in.

    ``EOT(predictor, eot_draws)`` if the predictor is randomized (and the attack has no EOT of its
    own, ``native_eot``), else the predictor; the context is ``predictor.bpda_enabled()`` if it is
    not differentiable, else a null context. Score the adversarial examples outside the context,
    on the predictor itself.
    """
    randomized = getattr(predictor, "randomized", False)
    use_eot = randomized and eot_draws > 1 and not native_eot
    model = EOT(predictor, eot_draws) if use_eot else predictor
    if getattr(predictor, "differentiable", True):
        return model, nullcontext
    return model, predictor.bpda_enabled
