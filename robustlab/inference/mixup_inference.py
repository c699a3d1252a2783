"""Mixup Inference (Pang, Xu, Zhu, "Mixup Inference: Better Exploiting Mixup to Defend Adversarial
Attacks", ICLR 2020).

F_MI(x) = (1/N) sum_k softmax(F(lam * x + (1 - lam) * x_s_k)), partners x_s_k from a class-indexed
pool (:mod:`robustlab.inference.pool`), drawn fresh on every forward:

- ``pl`` (predicted label): partners of class y_hat = argmax F(x);
- ``ol`` (other labels): per draw a class drawn uniformly from the classes != y_hat;
- ``combined``: MI-PL (n_pl, lam_pl) acts as a detector: gap = max softmax F(x) - max MI-PL
  average; gap < threshold -> the MI-PL output, else MI-OL (n_ol, lam_ol), per example.

The output is log F_MI(x) (log-probabilities). Gradients flow through the averaged softmax, so an
adaptive EOT attack (Tramer et al. 2020) differentiates the whole randomized pipeline; y_hat only
picks partners, so no BPDA is needed. All N mixes of a batch go through the net as one batched
forward, in chunks of ``chunk_size`` rows (bounding memory without gradients; under autograd the
activations of every chunk are kept for the backward pass).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from robustlab.inference.base import Predictor
from robustlab.inference.pool import any_classes, build_pool, other_classes, same_classes

MODES = ("pl", "ol", "combined")
Partners = dict[str, torch.Tensor]  # branch ("pl" | "ol") -> (B, N, C, H, W) partner images


class MixupInference(Predictor):
    """MI-PL, MI-OL or MI-Combined around ``net``; partners from ``build_pool(datamodule, pool)``."""

    randomized = True
    differentiable = True
    output = "log_probs"
    expects_training = ("mixup", "interpolated_at")  # MI assumes a net trained on mixes

    def __init__(
        self,
        net: nn.Module,
        datamodule: Any,
        name: str | None = None,
        mode: str = "ol",
        lam_pl: float = 0.5,
        lam_ol: float = 0.5,
        n_pl: int = 10,
        n_ol: int = 30,
        threshold: float = 0.2,
        pool: str = "heldout",
        pool_size: int | None = None,
        pool_seed: int = 0,
        chunk_size: int = 2048,
        pool_dataset: Any = None,
    ):
        super().__init__(net, name or f"mi_{mode}")
        if mode not in MODES:
            raise ValueError(f"mixup inference mode={mode!r} is not one of {list(MODES)}")
        for key, lam in (("lam_pl", lam_pl), ("lam_ol", lam_ol)):
            if not 0.0 <= lam <= 1.0:
                raise ValueError(f"{key}={lam} is outside [0, 1]")
        for key, n in (("n_pl", n_pl), ("n_ol", n_ol), ("chunk_size", chunk_size)):
            if n < 1:
                raise ValueError(f"{key}={n} must be >= 1")
        if pool == "other" and mode != "ol":
            raise ValueError(
                f"pool=other has foreign labels: only mode=ol can use it, not {mode!r}"
            )
        self.mode, self.threshold, self.chunk_size = mode, threshold, chunk_size
        self.lam = {"pl": lam_pl, "ol": lam_ol}
        self.n = {"pl": n_pl, "ol": n_ol}
        self.branches = ("pl", "ol") if mode == "combined" else (mode,)
        self.pool = build_pool(datamodule, pool, pool_size, pool_seed, pool_dataset)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(x)
        return self._forward_fixed(x, self.draw_partners(x, logits), logits)

    def draw_partners(self, x: torch.Tensor, logits: torch.Tensor) -> Partners:
        """Fresh partner images for each branch, following the PL/OL class rules."""
        if self.pool.images.device != x.device:
            self.pool.to(x.device)
        if self.pool.images.shape[1:] != x.shape[1:]:
            raise ValueError(
                f"partner pool {self.pool.source!r} images are {tuple(self.pool.images.shape[1:])}"
                f", inputs are {tuple(x.shape[1:])}: the pool must match the input shape"
            )
        num_classes, y_hat = logits.shape[1], logits.argmax(1)
        if self.pool.source != "other":
            self.pool.require_classes(num_classes)
        partners = {}
        for branch in self.branches:
            n = self.n[branch]
            if self.pool.source == "other":
                classes = any_classes(self.pool, len(x), n, x.device)
            elif branch == "pl":
                classes = same_classes(y_hat, n)
            else:
                classes = other_classes(y_hat, n, num_classes)
            partners[branch] = self.pool.draw(classes)
        return partners

    def _forward_fixed(
        self, x: torch.Tensor, partners: Partners, logits: torch.Tensor | None = None, looped=False
    ) -> torch.Tensor:
        """log F_MI(x) for given partners; ``looped`` uses the per-draw reference path."""
        mix = self._mix_looped if looped else self._mix_batched
        logp = {b: mix(x, partners[b], self.lam[b]) for b in self.branches}
        if self.mode != "combined":
            return logp[self.mode]
        logits = self.net(x) if logits is None else logits
        gap = logits.softmax(1).amax(1) - logp["pl"].exp().amax(1)
        return torch.where((gap < self.threshold)[:, None], logp["pl"], logp["ol"])

    def _forward_looped(self, x: torch.Tensor, partners: Partners) -> torch.Tensor:
        """Reference: one net forward per draw (tests compare it with the batched path)."""
        return self._forward_fixed(x, partners, looped=True)

    def _mix_batched(self, x: torch.Tensor, partners: torch.Tensor, lam: float) -> torch.Tensor:
        """All B*N mixes as one batch, run through the net in chunks of ``chunk_size`` rows."""
        b, n = partners.shape[:2]
        mixed = (lam * x[:, None] + (1 - lam) * partners).flatten(0, 1)
        logp = torch.cat([self.net(c).log_softmax(1) for c in mixed.split(self.chunk_size)])
        return logp.view(b, n, -1).logsumexp(1) - math.log(n)

    def _mix_looped(self, x: torch.Tensor, partners: torch.Tensor, lam: float) -> torch.Tensor:
        n = partners.shape[1]
        logp = [self.net(lam * x + (1 - lam) * partners[:, k]).log_softmax(1) for k in range(n)]
        return torch.stack(logp, 1).logsumexp(1) - math.log(n)
