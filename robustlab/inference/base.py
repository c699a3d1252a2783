"""Predictor contract: what an attack sees of a defended model.

A predictor is an ``nn.Module`` mapping pixel-space inputs (float NCHW in [0,1]) to scores.
It declares, for the attacks that evaluate it:

- ``randomized``: its output depends on fresh randomness on every forward (attacks use EOT);
- ``differentiable``: False when a part of it has no useful gradient (attacks use BPDA);
- ``output``: ``"logits"`` or ``"log_probs"`` (both are valid inputs to cross-entropy-style losses);
- ``expects_training``: the defenses whose nets it is designed for (empty: any net); evaluating
  it on a net trained otherwise is said on stderr and in the records.

Non-differentiable parts call ``robustlab.inference.bpda.bpda`` when ``self.use_bpda`` is True;
the adaptive threat model switches it on with ``with predictor.bpda_enabled(): ...``.

``net`` is the bare trained network underneath; the oblivious threat model crafts on it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


class Predictor(nn.Module):
    """Base class for inference wrappers around a trained net."""

    randomized: bool = False
    differentiable: bool = True
    output: str = "logits"
    expects_training: tuple[str, ...] = ()

    def __init__(self, net: nn.Module, name: str | None = None):
        super().__init__()
        self.net = net
        self.use_bpda = False
        self._name = name or type(self).__name__.lower()

    @contextmanager
    def bpda_enabled(self) -> Iterator[None]:
        """Route gradients of non-differentiable parts through their BPDA surrogates."""
        previous, self.use_bpda = self.use_bpda, True
        try:
            yield
        finally:
            self.use_bpda = previous

    @property
    def name(self) -> str:
        return self._name

    def needs_adaptive_tools(self) -> bool:
        """True when a white-box attack must use EOT or BPDA to be meaningful."""
        return self.randomized or not self.differentiable
