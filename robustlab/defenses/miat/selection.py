"""MIAT's sample selection (Zhou et al., ICML 2022, Eq. 6): the examples a model classifies
correctly when clean and wrongly when attacked, X' = {x : delta(h(x)) = y and delta(h(x_adv)) != y}.

delta is the argmax over the CLASS axis of the logits. The official code (dwDavidxd/MIAT) takes
``F.softmax(logits, dim=0)`` -- a softmax over the BATCH axis -- before that argmax, which rescales
each class column by a batch-dependent constant and so changes which class wins; that is a bug,
and it is not reproduced here.
"""

from __future__ import annotations

from torch import Tensor


def outcome_masks(logits_clean: Tensor, logits_adv: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Boolean masks (N,): correct on the clean input, and wrong on the adversarial one."""
    return logits_clean.argmax(dim=1) == y, logits_adv.argmax(dim=1) != y


def select_flipped(logits_clean: Tensor, logits_adv: Tensor, y: Tensor) -> Tensor:
    """Boolean mask (N,): correct on the clean input and wrong on the adversarial one."""
    correct_clean, wrong_adv = outcome_masks(logits_clean, logits_adv, y)
    return correct_clean & wrong_adv
