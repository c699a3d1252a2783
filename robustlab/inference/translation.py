"""``inference=translation``: gate -> translator -> classifier (Amich & Eshete 2022).

Per example, ``out = net(where(flag(x), T(x), x))``: inputs the gate passes reach the classifier
bit for bit unchanged, so the benign accuracy on them is exactly the classifier's.

The gate's decision ``flag = score(x) > threshold`` is a hard step, so the predictor declares
``differentiable = False`` and the adaptive threat model attacks it with BPDA (Athalye et al.,
ICML 2018). Without BPDA the decision carries no gradient (the input gradient still flows through
T for flagged inputs and through the identity for passed ones). With ``bpda_enabled()`` the
decision goes through ``bpda``: its forward value is the hard step, its backward pass that of the
surrogate ``sigmoid((score - threshold) / bpda_temperature)``, and the routing adds
``(m - m.detach()) * (T(x) - x)``, which is zero in value and carries the decision's gradient;
the attack is then end to end through the translator. Nothing is random: ``randomized = False``.
"""

from __future__ import annotations

import torch
from torch import nn

from robustlab.inference.base import Predictor
from robustlab.inference.bpda import bpda


class TranslationPredictor(Predictor):
    """``gate`` and ``translator`` (the parts ``defense=translation`` trains) + ``net``."""

    randomized = False
    differentiable = False

    def __init__(
        self,
        net: nn.Module,
        translator: nn.Module,
        gate: nn.Module,
        name: str = "translation",
        bpda_temperature: float = 0.1,
    ):
        super().__init__(net, name)
        if bpda_temperature <= 0:
            raise ValueError(f"translation bpda_temperature={bpda_temperature} must be > 0")
        self.translator = translator
        self.gate = gate
        self.bpda_temperature = bpda_temperature
        self.last_flags: torch.Tensor | None = None

    def routed(self, x: torch.Tensor) -> torch.Tensor:
        """The classifier's input: T(x) where the gate flags x, x itself elsewhere."""
        if self.use_bpda:
            score = self.gate.score(x, self.net)
        else:
            with torch.no_grad():
                score = self.gate.score(x, self.net)
        flags = self.gate.flags_from(score).detach()
        self.last_flags = flags
        translated = self.translator(x)
        out = torch.where(flags.view(-1, *[1] * (x.dim() - 1)), translated, x)
        if self.use_bpda and self.gate.kind != "always":
            m = self.decision(score)
            out = out + (m - m.detach()).view(-1, *[1] * (x.dim() - 1)) * (translated - x)
        return out

    def decision(self, score: torch.Tensor) -> torch.Tensor:
        """The hard 0/1 decision; with BPDA, its gradient is that of the sigmoid surrogate."""
        threshold = self.gate.threshold

        def step(s: torch.Tensor) -> torch.Tensor:
            return self.gate.flags_from(s).to(s.dtype)

        if not self.use_bpda:
            return step(score.detach())
        return bpda(step, score, lambda s: torch.sigmoid((s - threshold) / self.bpda_temperature))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.routed(x))

    @torch.no_grad()
    def translated_share(self, x: torch.Tensor, batch_size: int = 256) -> float:
        """Share of ``x`` the gate sends to the translator (1 - benign pass rate on clean x)."""
        flags = torch.cat([self.gate.flags(c, self.net) for c in x.split(batch_size)])
        return float(flags.float().mean())

    def benign_pass_rate(self, x_clean: torch.Tensor, batch_size: int = 256) -> float:
        """Share of clean inputs that reach the classifier unchanged."""
        return 1.0 - self.translated_share(x_clean, batch_size)
