"""M2AT, Masking and Mixing Adversarial Training (Adachi et al., VISAPP 2023, arXiv 2302.08066).

Per batch: craft x_adv with the configured inner attack, delta = x_adv - x; draw binary masks M1,
M2; x1 = x + M1 * delta, x2 = x[perm] + M2 * delta[perm] for a random partner permutation; mix x1
and x2 (mixup: convex combination; cutmix: paste a box of x2 into x1) and their labels in the same
proportion; train with soft-label CE.

The paper's full text was not available, so the defaults are our choices, not the paper's:
- ``mask_kind="box"``: a contiguous rectangle leaves one region clean and another adversarial,
  the partial perturbation most different from PGD-AT's whole-image one (a per-pixel Bernoulli
  mask spreads the perturbation thinly instead; kept as ``pixel``).
- ``mask_area="beta"`` with ``mask_alpha = mask_beta = 1``: a uniform area in [0, 1] spans clean
  (area 0) to full PGD (area 1) examples without tuning a ratio.
- ``mixing="mixup"`` with ``mix_alpha=1``: Beta(1, 1), the mixup paper's CIFAR-10 setting.
- ``complementary_masks=False``: independent masks are the general case; complementary masks
  (M2 = 1 - M1) are an option.
With ``mask_area="fixed"``, ``mask_ratio=1`` and ``mix_lam=1`` the input is PGD-AT's x_adv.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from robustlab.defenses.adversarial import AdversarialDefense
from robustlab.defenses.masks import (
    MASK_AREAS,
    MASK_KINDS,
    MIXINGS,
    binary_masks,
    check_choice,
    cutmix_images,
    mix_labels,
    mixup_images,
    sample_fractions,
)


def _check_fraction(name: str, value: float | None) -> None:
    if value is not None and not 0.0 <= value <= 1.0:
        raise ValueError(f"m2at {name}={value} must be in [0, 1]")


class M2AT(AdversarialDefense):
    """M2AT; the options and their defaults are explained in the module docstring."""

    def __init__(
        self,
        *args,
        mask_kind: str = "box",
        mask_area: str = "beta",
        mask_ratio: float = 0.5,
        mask_alpha: float = 1.0,
        mask_beta: float = 1.0,
        complementary_masks: bool = False,
        mixing: str = "mixup",
        mix_alpha: float = 1.0,
        mix_lam: float | None = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        check_choice("m2at mask_kind", mask_kind, MASK_KINDS)
        check_choice("m2at mask_area", mask_area, MASK_AREAS)
        check_choice("m2at mixing", mixing, MIXINGS)
        _check_fraction("mask_ratio", mask_ratio)
        _check_fraction("mix_lam", mix_lam)
        for name, value in [
            ("mask_alpha", mask_alpha),
            ("mask_beta", mask_beta),
            ("mix_alpha", mix_alpha),
        ]:
            if value <= 0:
                raise ValueError(f"m2at {name}={value} must be > 0")
        self.mask_kind = mask_kind
        self.mask_ratio = mask_ratio if mask_area == "fixed" else None
        self.mask_alpha, self.mask_beta = mask_alpha, mask_beta
        self.complementary_masks = complementary_masks
        self.mixing = mixing
        self.mix_alpha, self.mix_lam = mix_alpha, mix_lam

    def masks(self, n: int, h: int, w: int, device=None) -> torch.Tensor:
        """Boolean (n, 1, h, w) masks of the configured kind and area."""
        areas = sample_fractions(n, self.mask_ratio, self.mask_alpha, self.mask_beta, device)
        return binary_masks(self.mask_kind, areas, h, w)

    def mask_pair(self, n: int, h: int, w: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(M1, M2): M2 = 1 - M1 with ``complementary_masks``, else an independent draw."""
        m1 = self.masks(n, h, w, device)
        return m1, ~m1 if self.complementary_masks else self.masks(n, h, w, device)

    def mixed_batch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The training input and its soft labels (rows sum to one)."""
        x_adv = self.craft(x, y)
        n, _, h, w = x.shape
        m1, m2 = self.mask_pair(n, h, w, x.device)
        perm = torch.randperm(n, device=x.device)
        # x + M * delta for a binary M, written as a select so a full mask gives x_adv bit for bit
        x1 = torch.where(m1, x_adv, x)
        x2 = torch.where(m2, x_adv[perm], x[perm])
        lam = sample_fractions(n, self.mix_lam, self.mix_alpha, self.mix_alpha, x.device)
        if self.mixing == "mixup":
            x_mix = mixup_images(x1, x2, lam)
        else:
            x_mix, lam = cutmix_images(x1, x2, lam)
        return x_mix, mix_labels(y, y[perm], lam, self.hparams.num_classes)

    def training_loss(self, x, y):
        x_mix, soft = self.mixed_batch(x, y)
        return F.cross_entropy(self.net(x_mix), soft), None
