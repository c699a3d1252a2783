"""Mixup training and Interpolated Adversarial Training, the models Mixup Inference sits on.

- Mixup (Zhang, Cisse, Dauphin, Lopez-Paz, ICLR 2018): train on x_mix = lam*x + (1-lam)*x[perm]
  with soft labels lam*onehot(y) + (1-lam)*onehot(y[perm]), one lam ~ Beta(alpha, alpha) per batch.
- Interpolated AT (Lamb et al., AISec 2019), as trained by Pang et al. (ICLR 2020, official
  code ``train_resnet_mixup.py``): PGD crafted on the model's own predictions (argmax of the clean
  logits, eval mode; "avoids label leaking"), then the adversarial and the clean batch are each
  mixed with their own lam/perm draw and loss = 0.5*CE(mixed adv) + 0.5*CE(mixed clean), both
  halves in one forward so BatchNorm sees them together, as the official code does. The official
  code draws one lam per example and mixes two permutations; this follows Zhang et al. instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from robustlab.defenses.adversarial import AdversarialDefense
from robustlab.defenses.base import DefenseModule
from robustlab.modes import eval_mode

Draw = tuple[float, torch.Tensor]  # (lam, permutation of the batch)


def draw_mix(alpha: float, batch_size: int, device: torch.device) -> Draw:
    """lam ~ Beta(alpha, alpha) and a random permutation, from torch's global generator."""
    lam = torch.distributions.Beta(alpha, alpha).sample().item()
    return lam, torch.randperm(batch_size, device=device)


def mix(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, draw: Draw
) -> tuple[torch.Tensor, torch.Tensor]:
    """(lam*x + (1-lam)*x[perm], matching soft labels whose rows sum to one)."""
    lam, perm = draw
    onehot = F.one_hot(y, num_classes).to(x.dtype)
    return lam * x + (1 - lam) * x[perm], lam * onehot + (1 - lam) * onehot[perm]


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of -sum_c target_c * log softmax(logits)_c."""
    return -(target * logits.log_softmax(1)).sum(1).mean()


def _check_alpha(alpha: float) -> float:
    if alpha <= 0:
        raise ValueError(f"mixup alpha={alpha} must be > 0 (Beta(alpha, alpha))")
    return float(alpha)


class Mixup(DefenseModule):
    """Soft-label CE on mixed batches (Zhang et al. 2018)."""

    def __init__(self, *args, alpha: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.alpha = _check_alpha(alpha)

    def mixup_loss(self, x: torch.Tensor, y: torch.Tensor, draw: Draw) -> torch.Tensor:
        x_mix, target = mix(x, y, self.hparams.num_classes, draw)
        return soft_cross_entropy(self.net(x_mix), target)

    def training_loss(self, x, y):
        return self.mixup_loss(x, y, draw_mix(self.alpha, len(y), x.device)), None


class InterpolatedAT(AdversarialDefense):
    """0.5*CE(mixed PGD examples) + 0.5*CE(mixed clean examples); PGD on predicted labels."""

    def __init__(self, *args, alpha: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.alpha = _check_alpha(alpha)

    def craft_on_predictions(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_adv, the clean logits whose argmax it was crafted on: eval mode, no graph)."""
        with torch.no_grad(), eval_mode(self.net):
            logits = self.net(x)
        return self.craft(x, logits.argmax(1)), logits

    def interpolated_loss(
        self,
        x: torch.Tensor,
        x_adv: torch.Tensor,
        y: torch.Tensor,
        adv_draw: Draw,
        clean_draw: Draw,
    ) -> torch.Tensor:
        c = self.hparams.num_classes
        adv_mix, adv_target = mix(x_adv, y, c, adv_draw)
        clean_mix, clean_target = mix(x, y, c, clean_draw)
        adv_logits, clean_logits = self.net(torch.cat([adv_mix, clean_mix])).chunk(2)
        return 0.5 * soft_cross_entropy(adv_logits, adv_target) + 0.5 * soft_cross_entropy(
            clean_logits, clean_target
        )

    def training_loss(self, x, y):
        x_adv, logits_clean = self.craft_on_predictions(x)
        draws = [draw_mix(self.alpha, len(y), x.device) for _ in range(2)]
        return self.interpolated_loss(x, x_adv, y, *draws), logits_clean
