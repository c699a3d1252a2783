"""Mixup Inference (Pang, Xu, Zhu, "Mixup Inference: Better Exploiting Mixup to Defend Adversarial
Attacks", ICLR 2020).

F_MI(x) = (1/N) sum_k softmax(F(lam * x + (1 - lam) * x_s_k)), partners x_s_k from a class-indexed
pool (:mod:`robustlab.inference.pool`), drawn fresh on every forward:

- ``pl`` (predicted label): partners of class y_hat = argmax F(x);
- ``ol`` (other labels): per draw a class drawn uniformly from the classes != y_hat;
- ``combined``: MI-PL (n_pl, lam_pl) acts as a detector: gap = max softmax F(x) - max MI-PL
  average; gap < threshold -> the MI-PL output, else MI-OL (n_ol, lam_ol), per example.

The output is log F_MI(x) (log-probabilities). All N mixes of a batch go through the net as one
batched forward, in chunks of ``chunk_size`` rows (bounding memory without gradients; under
autograd the activations of every chunk are kept for the backward pass).

What the adaptive attack does, and why (Tramer, Carlini, Brendel, Madry, "On Adaptive Attacks to
Adversarial Example Defenses", NeurIPS 2020, sec. on Mixup Inference):

- MI-OL: EOT over the partners. Gradients flow through the averaged softmax, so the attack
  differentiates the whole randomized pipeline; y_hat only picks partners among the other
  classes. ``expected_log_probs(x, draws)`` is the EOT expectation in one batched forward: D draws
  of N partners are D*N mixes, and F(x), which picks the partner classes, runs once, not D times.
- MI-PL: its partners are of class y_hat = argmax F(x), so its output follows F's decision, and
  that choice has no gradient. EOT through the mixes only (partners of the true class dominate
  every gradient) left 13% robust on digits where transfer from the bare net left 4.5%. Under
  the adaptive threat model the attack crafts on log F(x) (BPDA, Athalye et al. 2018, with the
  approximation in both passes): MI-PL's adaptive attack is the attack on the net that decides
  its partners.
- MI-Combined: the hard per-example switch at the gap threshold has no gradient, and attacking
  the plain forward only pushes the branch an example sits in: on digits (grid_default's mixup
  net, PGD-20, eps 0.2, n=200) it left 14.5% robust where transfer from the bare net left 4.5%.
  BPDA on the switch alone (hard forward value, smooth gradient) still left 9%: an example in the
  PL branch is right because its partners are of class argmax F(x) and MI-PL is far more
  confident than F, so cross-entropy on the hard PL value barely sees F. Under the adaptive
  threat model (``bpda_enabled``) the attack therefore crafts on a differentiable approximation
  (Athalye et al. 2018, BPDA with the approximation in both passes): ``s * log F(x) +
  (1 - s) * MI-OL``, ``s = sigmoid((threshold - gap) / bpda_temperature)`` from the real gap, so
  the detector, the PL branch (through F, whose argmax picks its partners) and MI-OL (EOT over its
  partners, each draw with its own gap) are all attacked: 4.0% on the same points. Attack-internal
  success checks see this approximation; every verdict is scored on the real forward.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from robustlab.inference.base import Predictor
from robustlab.inference.pool import any_classes, build_pool, other_classes, same_classes
from robustlab.precision import runs_channels_last

# rows per net call when chunk_size is null: on a CPU the smallcnn runs slower per row in large
# batches, the more so in the contiguous format (its NCHW max-pool leaves the cache);
# experiments/bench/mi_batched_forward.py, B=64, N=30, 2 threads, against N bare forwards in the
# same format: contiguous 32 rows 0.8x, 64 rows 1.05x, 256 rows 1.4x, 2048 rows 1.5-1.7x;
# channels_last (an evaluation on a CPU, robustlab.precision), first 32 rows 1.2x, 64 rows 1.15x,
# 256 rows 1.0x, 1024 rows 2.3x; then, in a later session with every chunk size interleaved in
# one run (MI-OL, N=30, against N bare forwards in channels_last, B = 32, 64, 128, 256, two or
# three runs each), 64 rows 0.87-1.08x, 128 rows 0.95-1.28x, 256 rows 1.05-1.47x: 64 rows, best or
# near best at every B. A GPU wants large batches.
CPU_CHUNK, CPU_CHUNK_CHANNELS_LAST, GPU_CHUNK = 32, 64, 2048
MODES = ("pl", "ol", "combined")
Partners = dict[str, torch.Tensor]  # branch ("pl" | "ol") -> (B, N, C, H, W) partner images


def default_chunk(net: nn.Module, device: torch.device) -> int:
    """Rows per net call when ``chunk_size`` is null: by device, and on a CPU by the net's
    memory format (the module comment above)."""
    if device.type != "cpu":
        return GPU_CHUNK
    return CPU_CHUNK_CHANNELS_LAST if runs_channels_last(net) else CPU_CHUNK


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
        chunk_size: int | None = None,
        pool_dataset: Any = None,
        bpda_temperature: float = 0.05,
    ):
        super().__init__(net, name or f"mi_{mode}")
        if mode not in MODES:
            raise ValueError(f"mixup inference mode={mode!r} is not one of {list(MODES)}")
        for key, lam in (("lam_pl", lam_pl), ("lam_ol", lam_ol)):
            if not 0.0 <= lam <= 1.0:
                raise ValueError(f"{key}={lam} is outside [0, 1]")
        if bpda_temperature <= 0:
            raise ValueError(f"bpda_temperature={bpda_temperature} must be > 0")
        for key, n in (
            ("n_pl", n_pl),
            ("n_ol", n_ol),
            ("chunk_size", 1 if chunk_size is None else chunk_size),
        ):
            if n < 1:
                raise ValueError(f"{key}={n} must be >= 1")
        if pool == "other" and mode != "ol":
            raise ValueError(
                f"pool=other has foreign labels: only mode=ol can use it, not {mode!r}"
            )
        self.mode, self.threshold, self.chunk_size = mode, threshold, chunk_size
        self.bpda_temperature = bpda_temperature
        self.differentiable = mode == "ol"  # PL's partner class, the gap switch: BPDA (docstring)
        self.lam = {"pl": lam_pl, "ol": lam_ol}
        self.n = {"pl": n_pl, "ol": n_ol}
        self.branches = ("pl", "ol") if mode == "combined" else (mode,)
        self.pool = build_pool(datamodule, pool, pool_size, pool_seed, pool_dataset)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.expected_log_probs(x, draws=1)

    def expected_log_probs(self, x: torch.Tensor, draws: int) -> torch.Tensor:
        """log of the mean of F_MI(x) over ``draws`` independent partner draws, in one batched
        forward (the EOT expectation; ``draws=1`` is the forward)."""
        logits = self.net(x)
        per_draw = self._forward_fixed(x, self.draw_partners(x, logits, draws), logits, draws)
        if draws == 1:
            return per_draw[:, 0]
        return per_draw.logsumexp(1) - math.log(draws)

    def draw_partners(self, x: torch.Tensor, logits: torch.Tensor, draws: int = 1) -> Partners:
        """Fresh partner images for each branch, following the PL/OL class rules: per example
        ``draws * n`` partners, draw after draw."""
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
            n = self.n[branch] * draws
            if self.pool.source == "other":
                classes = any_classes(self.pool, len(x), n, x.device)
            elif branch == "pl":
                classes = same_classes(y_hat, n)
            else:
                classes = other_classes(y_hat, n, num_classes)
            partners[branch] = self.pool.draw(classes)
        return partners

    def _forward_fixed(
        self,
        x: torch.Tensor,
        partners: Partners,
        logits: torch.Tensor | None = None,
        draws: int = 1,
        looped: bool = False,
    ) -> torch.Tensor:
        """log F_MI(x) per draw, (B, draws, C), for given partners; ``looped`` uses the per-mix
        reference path (one draw). Under BPDA: the crafting approximation (module docstring)."""
        logits = self.net(x) if logits is None else logits
        if self.use_bpda and self.mode == "pl":
            return logits.log_softmax(1)[:, None].expand(-1, draws, -1)
        if looped:
            logp = {b: self._mix_looped(x, partners[b], self.lam[b]) for b in self.branches}
        else:
            logp = {b: self._mix_batched(x, partners[b], self.lam[b], draws) for b in self.branches}
        if self.mode != "combined":
            return logp[self.mode]
        gap = logits.softmax(1).amax(1)[:, None] - logp["pl"].exp().amax(2)
        if not self.use_bpda:
            return torch.where((gap < self.threshold)[..., None], logp["pl"], logp["ol"])
        share_pl = torch.sigmoid((self.threshold - gap) / self.bpda_temperature)[..., None]
        pl = logits.log_softmax(1)[:, None]  # MI-PL follows argmax F(x): its approximation is F
        return share_pl * pl + (1 - share_pl) * logp["ol"]

    def _forward_looped(self, x: torch.Tensor, partners: Partners) -> torch.Tensor:
        """Reference: one net forward per mix (tests compare it with the batched path)."""
        return self._forward_fixed(x, partners, looped=True)[:, 0]

    def _mix_batched(
        self, x: torch.Tensor, partners: torch.Tensor, lam: float, draws: int
    ) -> torch.Tensor:
        """All B*draws*N mixes as one batch, through the net in chunks of ``chunk_size`` rows;
        the average over each draw's N mixes, (B, draws, C)."""
        b, n = partners.shape[0], partners.shape[1] // draws
        mixed = (lam * x[:, None] + (1 - lam) * partners).flatten(0, 1)
        size = self.chunk_size or default_chunk(self.net, mixed.device)
        logp = torch.cat([self.net(c).log_softmax(1) for c in mixed.split(size)])
        return logp.view(b, draws, n, -1).logsumexp(2) - math.log(n)

    def _mix_looped(self, x: torch.Tensor, partners: torch.Tensor, lam: float) -> torch.Tensor:
        n = partners.shape[1]
        logp = [self.net(lam * x + (1 - lam) * partners[:, k]).log_softmax(1) for k in range(n)]
        return (torch.stack(logp, 1).logsumexp(1) - math.log(n))[:, None]
