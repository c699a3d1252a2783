"""MART (Wang et al., "Improving Adversarial Robustness Requires Revisiting Misclassified
Examples", ICLR 2020): boosted CE on adversarial examples plus a KL term weighted by how badly the
clean input is classified, 1 - p_y(x)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from robustlab.defenses.adversarial import AdversarialDefense
from robustlab.defenses.trades import small_noise_start


def mart_loss(
    logits_clean: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor, beta: float
) -> torch.Tensor:
    """BCE(p_adv, y) + beta * mean_i[KL(p_clean_i || p_adv_i) * (1 - p_clean_i[y_i])].

    BCE = CE(adv) - log(1 - max_{k != y} p_adv_k); the stabilizing constants (1.0001, 1e-12,
    1.0000001) are those of the official code.
    """
    probs_adv = F.softmax(logits_adv, dim=1)
    probs_clean = F.softmax(logits_clean, dim=1)
    top2 = probs_adv.argsort(dim=1)[:, -2:]
    runner_up = torch.where(top2[:, -1] == y, top2[:, -2], top2[:, -1])
    boosted_ce = F.cross_entropy(logits_adv, y) + F.nll_loss(
        torch.log(1.0001 - probs_adv + 1e-12), runner_up
    )
    kl = F.kl_div(torch.log(probs_adv + 1e-12), probs_clean, reduction="none").sum(dim=1)
    p_true = probs_clean.gather(1, y.unsqueeze(1)).squeeze(1)
    return boosted_ce + beta * (kl * (1.0000001 - p_true)).mean()


class MART(AdversarialDefense):
    """MART; ``beta`` weighs the misclassification-aware KL term (6 in the paper's CIFAR-10 runs).

    The inner maximization is PGD on summed CE from x + 0.001*randn, as in the official code
    (``inner.random_start`` is not used), with BatchNorm/Dropout in eval mode.
    """

    def __init__(self, *args, beta: float = 6.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.beta = beta

    def training_loss(self, x, y):
        x_adv = self.craft(x, y, start=small_noise_start(x))
        logits_clean = self.net(x)
        return mart_loss(logits_clean, self.net(x_adv), y, self.beta), logits_clean
