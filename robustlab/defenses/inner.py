"""The inner maximization of adversarial training: batched PGD (Madry et al., ICLR 2018).

Written here rather than taken from torchattacks so training controls the loss being maximized
(CE for PGD-AT, KL for TRADES), the norm and the start, and stays a few tensor ops per step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
NORMS = ("linf", "l2")


@dataclass(frozen=True)
class InnerAttack:
    """PGD settings: ``step_size=None`` means eps/4 (2/255 for eps 8/255, Madry's CIFAR setting)."""

    eps: float
    steps: int = 10
    step_size: float | None = None
    norm: str = "linf"
    random_start: bool = True

    def __post_init__(self):
        if self.norm not in NORMS:
            raise ValueError(f"inner attack norm={self.norm!r} is not one of {list(NORMS)}")
        if self.steps < 1:
            raise ValueError(f"inner attack steps={self.steps} must be >= 1")

    @property
    def alpha(self) -> float:
        return self.eps / 4 if self.step_size is None else self.step_size


def _l2_normalize(t: torch.Tensor) -> torch.Tensor:
    norms = t.flatten(1).norm(dim=1).clamp_min(1e-12)
    return t / norms.view(-1, *([1] * (t.dim() - 1)))


def _project(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    if norm == "linf":
        return delta.clamp(-eps, eps)
    norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
    factor = (eps / norms).clamp(max=1.0)
    return delta * factor.view(-1, *([1] * (delta.dim() - 1)))


def random_start(x: torch.Tensor, eps: float, norm: str, scale: float = 1.0) -> torch.Tensor:
    """A random point of the eps-ball around x (uniform per coordinate for L-inf)."""
    if norm == "linf":
        delta = torch.empty_like(x).uniform_(-eps, eps) * scale
    else:
        delta = (
            _l2_normalize(torch.randn_like(x))
            * eps
            * scale
            * torch.rand(x.shape[0], *([1] * (x.dim() - 1)), device=x.device)
        )
    return (x + delta).clamp(0, 1)


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    attack: InnerAttack,
    loss_fn: LossFn | None = None,
    start: torch.Tensor | None = None,
) -> torch.Tensor:
    """Maximize ``loss_fn(model(x_adv), target)`` over the eps-ball; returns a detached x_adv.

    ``loss_fn`` defaults to summed cross-entropy; ``start`` overrides the random start.
    """
    loss_fn = loss_fn or (lambda logits, t: F.cross_entropy(logits, t, reduction="sum"))
    x = x.detach()
    if start is not None:
        x_adv = start.detach()
    elif attack.random_start:
        x_adv = random_start(x, attack.eps, attack.norm)
    else:
        x_adv = x.clone()
    with torch.enable_grad():
        for _ in range(attack.steps):
            x_adv.requires_grad_(True)
            loss = loss_fn(model(x_adv), target)
            (grad,) = torch.autograd.grad(loss, x_adv)
            step = grad.sign() if attack.norm == "linf" else _l2_normalize(grad)
            x_adv = x_adv.detach() + attack.alpha * step
            x_adv = (x + _project(x_adv - x, attack.eps, attack.norm)).clamp(0, 1)
    return x_adv.detach()
