"""MIAT stage 1: train the natural and adversarial MI estimators E_n and E_a against a frozen
adversarially trained classifier (Zhou et al., ICML 2022, Sec. 3.2.2, Eq. 5-6).

On the selected examples X' (correct when clean, wrong when attacked; ``selection.py``):

    E_n maximizes mean_X' [ I_n(x; h(x)) - [I_n(x; h(x_adv))]+ ]      (natural MI: pattern x)
    E_a maximizes mean_X' [ I_a(n; h(x_adv)) - [I_a(n; h(x))]+ ],  n = x_adv - x   (adversarial MI)

so E_n scores the clean output above the adversarial one and E_a the reverse. The subtracted
estimate is clamped at 0 (MI >= 0; ``nonnegative``, our addition): unclamped, the critic lowers it
without bound instead of learning the dependence (see ``estimators.py``). The official code
(dwDavidxd/MIAT, ``train_MI_estimator.py``) replaces this difference by cosine-similarity terms and
also trains on the examples the attack does not flip; we follow the paper's Eq. 5. When a batch has
no selected example, the objective falls back to the whole batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from robustlab.defenses.adversarial import AdversarialDefense
from robustlab.defenses.miat.estimators import MIEstimator, nonnegative
from robustlab.defenses.miat.selection import select_flipped
from robustlab.defenses.optim import build_optimizer, build_schedule
from robustlab.models.loading import load_weights


def freeze(module: nn.Module) -> None:
    """No gradients into ``module`` and eval mode (BatchNorm statistics untouched)."""
    module.requires_grad_(False)
    module.eval()


def selected_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` over ``mask``, or over all values when the mask is empty."""
    return values[mask].mean() if bool(mask.any()) else values.mean()


class MIATEstimators(AdversarialDefense):
    """Stage 1 of MIAT: ``net`` is the frozen classifier loaded from ``dependencies['classifier']``
    (a PGD-AT checkpoint of the training cache); ``estimator_n`` and ``estimator_a`` are trained.

    ``estimator``: {hidden, width} of both estimators (hidden 2048 and width 64 in the paper);
    ``input_shape``: (channels, size, size) of the dataset's images, used to size them.
    The inner attack (``inner``) crafts the adversarial examples against the frozen classifier.
    """

    def __init__(
        self,
        *args,
        dependencies: dict[str, str],
        input_shape: Sequence[int],
        estimator: dict[str, Any],
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        if "classifier" not in dependencies:
            raise ValueError(
                f"miat_estimators: dependencies={sorted(dependencies)} lack 'classifier'"
            )
        load_weights(self.net, dependencies["classifier"])
        freeze(self.net)
        self.estimator_n = MIEstimator.for_net(self.net, input_shape, **estimator)
        self.estimator_a = MIEstimator.for_net(self.net, input_shape, **estimator)

    def train(self, mode: bool = True):
        """Train the estimators only: the classifier stays in eval mode."""
        super().train(mode)
        self.net.eval()
        return self

    def mi_gaps(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per-example gaps I_n(x;h(x)) - [I_n(x;h(x_adv))]+ and I_a(n;h(x_adv)) - [I_a(n;h(x))]+,
        and the selection mask, on PGD examples against the frozen classifier."""
        x_adv = self.craft(x, y)
        with torch.no_grad():
            logits_clean, logits_adv = self.net(x), self.net(x_adv)
        noise = x_adv - x
        gap_n = self.estimator_n(x, logits_clean) - nonnegative(self.estimator_n(x, logits_adv))
        gap_a = self.estimator_a(noise, logits_adv) - nonnegative(
            self.estimator_a(noise, logits_clean)
        )
        return gap_n, gap_a, select_flipped(logits_clean, logits_adv, y)

    def training_loss(self, x, y):
        gap_n, gap_a, mask = self.mi_gaps(x, y)
        self.log("train/selected", mask.float().mean(), on_step=False, on_epoch=True)
        self.log("train/mi_gap_n", selected_mean(gap_n, mask).detach(), on_epoch=True)
        self.log("train/mi_gap_a", selected_mean(gap_a, mask).detach(), on_epoch=True)
        return -(selected_mean(gap_n, mask) + selected_mean(gap_a, mask)), None

    def validation_step(self, batch, batch_idx):
        """The classifier's metrics, plus ``val/mi_gap`` (higher is better) for checkpointing."""
        super().validation_step(batch, batch_idx)
        gap_n, gap_a, mask = self.mi_gaps(*batch)
        self.log("val/mi_gap", selected_mean(gap_n, mask) + selected_mean(gap_a, mask))

    def configure_optimizers(self):
        params = [*self.estimator_n.parameters(), *self.estimator_a.parameters()]
        optimizer = build_optimizer(params, self.optimizer_cfg)
        schedule = build_schedule(
            optimizer, self.scheduler_cfg, int(self.trainer.estimated_stepping_batches)
        )
        if schedule is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": schedule}
