"""TRADES (Zhang et al., "Theoretically Principled Trade-off between Robustness and Accuracy",
ICML 2019): CE on clean inputs plus beta * KL(f(x_adv) || f(x)), the inner maximization on the KL.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from robustlab.defenses.adversarial import AdversarialDefense
from robustlab.modes import eval_mode


def small_noise_start(x: torch.Tensor) -> torch.Tensor:
    """The official TRADES/MART start of the inner maximization: x + 0.001 * N(0, I)."""
    return x.detach() + 0.001 * torch.randn_like(x)


def kl_sum(logits_adv: torch.Tensor, probs_clean: torch.Tensor) -> torch.Tensor:
    """Summed KL(p_clean || p_adv), as ``KLDivLoss(reduction="sum")`` in the official code."""
    return F.kl_div(F.log_softmax(logits_adv, dim=1), probs_clean, reduction="sum")


def trades_loss(
    logits_clean: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor, beta: float
) -> torch.Tensor:
    """CE(f(x), y) + beta * KL(f(x_adv) || f(x)) averaged over the batch (batchmean)."""
    robust = kl_sum(logits_adv, F.softmax(logits_clean, dim=1)) / logits_clean.shape[0]
    return F.cross_entropy(logits_clean, y) + beta * robust


class TRADES(AdversarialDefense):
    """TRADES; ``beta`` weighs robustness against accuracy (6 in the paper's CIFAR-10 runs).

    The inner maximization ascends the summed KL to the clean prediction, from x + 0.001*randn
    (``inner.random_start`` is not used), with BatchNorm/Dropout in eval mode.
    """

    def __init__(self, *args, beta: float = 6.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.beta = beta

    def craft_kl(self, x: torch.Tensor) -> torch.Tensor:
        start = small_noise_start(x)
        with torch.no_grad(), eval_mode(self.net):
            probs_clean = F.softmax(self.net(x), dim=1)
        return self.craft(x, probs_clean, loss_fn=kl_sum, start=start)

    def training_loss(self, x, y):
        x_adv = self.craft_kl(x)
        logits_clean = self.net(x)
        return trades_loss(logits_clean, self.net(x_adv), y, self.beta), logits_clean
