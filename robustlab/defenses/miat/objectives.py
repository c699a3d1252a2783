"""The two stage-1 objectives of MIAT's estimators (Zhou et al., "Improving Adversarial Robustness
via Mutual Information Estimation", ICML 2022), as losses to minimize over one batch.

Both take the four per-example estimates of a batch (``Estimates``) and two masks over it:
``correct_clean`` (the frozen classifier is right on x) and ``wrong_adv`` (wrong on x_adv).

- ``paper`` (Eq. 5-6): on the flipped examples W = correct_clean & wrong_adv, E_n maximizes
  I_n(x; h(x)) - [I_n(x; h(x_adv))]+ and E_a maximizes I_a(n; h(x_adv)) - [I_a(n; h(x))]+
  (whole batch when W is empty). [.]+ clamps the minimized estimate at 0 (MI >= 0, ours).
- ``official`` (dwDavidxd/MIAT ``train_MI_estimator.py``, read, not copied): cosine terms over the
  vectors of estimates instead of differences, on W and on C = correct_clean & ~wrong_adv:
  E_n: 5|cos(I_n(h(x)), I_n(h(x_adv)))|_W - sum_W I_n(h(x)) / |R|
       + 0.5 (5|1 - cos(I_n(h(x)), I_n(h(x_adv)))|_C - sum_C I_n(h(x)) / |R|),   R = correct_clean
  E_a: 5|cos(I_a(h(x_adv)), I_a(h(x)))|_W - mean_W I_a(h(x_adv))
       + 0.5 (8|1 - cos(I_a(h(x)), I_a(h(x_adv)))|_C + 0.1 mean_C I_a(h(x_adv)))
  and, when R is empty, -mean I_n(x; h(x)) - mean I_a(n; h(x_adv)) over the batch. So on flipped
  examples the clean and adversarial estimate vectors are made orthogonal, never pushed apart in
  sign, and every estimate stays where stage 2's cosines (``cosine_loss``) behave.
"""

from __future__ import annotations

from typing import NamedTuple

import torch.nn.functional as F
from torch import Tensor

from robustlab.defenses.miat.estimators import nonnegative

OBJECTIVES = ("paper", "official")


class Estimates(NamedTuple):
    """Per-example estimates (N,): I_n(x; h(x)), I_n(x; h(x_adv)), I_a(n; h(x_adv)), I_a(n; h(x))."""

    n_clean: Tensor
    n_adv: Tensor
    a_adv: Tensor
    a_clean: Tensor


def cosine_loss(a: Tensor, b: Tensor) -> Tensor:
    """L_cos(a, b) = |1 - cos(a, b)| between two vectors."""
    return (1 - F.cosine_similarity(a, b, dim=0)).abs()


def abs_cosine(a: Tensor, b: Tensor) -> Tensor:
    """|cos(a, b)| between two vectors: 0 when they are orthogonal."""
    return F.cosine_similarity(a, b, dim=0).abs()


def selected_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` over ``mask``, or over all values when the mask is empty."""
    return values[mask].mean() if bool(mask.any()) else values.mean()


def mi_gaps(est: Estimates) -> tuple[Tensor, Tensor]:
    """Per-example gaps of Eq. 5: I_n(h(x)) - [I_n(h(x_adv))]+ and I_a(h(x_adv)) - [I_a(h(x))]+."""
    return est.n_clean - nonnegative(est.n_adv), est.a_adv - nonnegative(est.a_clean)


def paper_loss(est: Estimates, correct_clean: Tensor, wrong_adv: Tensor) -> Tensor:
    """Minus the two gaps of Eq. 5, averaged over the flipped examples (or the whole batch)."""
    flipped = correct_clean & wrong_adv
    gap_n, gap_a = mi_gaps(est)
    return -(selected_mean(gap_n, flipped) + selected_mean(gap_a, flipped))


def _official_flipped(est: Estimates, mask: Tensor, n_right: Tensor) -> Tensor:
    """On the flipped examples: orthogonal estimate vectors; raise I_n(h(x)) and I_a(h(x_adv))."""
    n_clean, a_adv = est.n_clean[mask], est.a_adv[mask]
    loss_n = 5 * abs_cosine(n_clean, est.n_adv[mask]) - n_clean.sum() / n_right
    loss_a = 5 * abs_cosine(a_adv, est.a_clean[mask]) - a_adv.mean()
    return loss_n + loss_a


def _official_kept(est: Estimates, mask: Tensor, n_right: Tensor) -> Tensor:
    """On the examples still right under attack: aligned vectors; lower I_a(h(x_adv)) a little."""
    n_clean, a_adv = est.n_clean[mask], est.a_adv[mask]
    loss_n = 5 * cosine_loss(n_clean, est.n_adv[mask]) - n_clean.sum() / n_right
    loss_a = 8 * cosine_loss(est.a_clean[mask], a_adv) + 0.1 * a_adv.mean()
    return loss_n + loss_a


def official_loss(est: Estimates, correct_clean: Tensor, wrong_adv: Tensor) -> Tensor:
    """The official code's estimator objective (module docstring), E_n's and E_a's summed."""
    if not bool(correct_clean.any()):
        return -(est.n_clean.mean() + est.a_adv.mean())
    n_right = correct_clean.sum()
    flipped, kept = correct_clean & wrong_adv, correct_clean & ~wrong_adv
    loss = est.n_clean.new_zeros(())
    if bool(flipped.any()):
        loss = loss + _official_flipped(est, flipped, n_right)
    if bool(kept.any()):
        loss = loss + 0.5 * _official_kept(est, kept, n_right)
    return loss


LOSSES = {"paper": paper_loss, "official": official_loss}
