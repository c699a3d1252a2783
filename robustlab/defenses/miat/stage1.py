"""MIAT stage 1: train the natural and adversarial MI estimators E_n and E_a against a frozen
adversarially trained classifier (Zhou et al., ICML 2022, Sec. 3.2.2, Eq. 5-6).

E_n scores the pattern x against the output; E_a the noise n = x_adv - x. ``objective`` picks the
training objective (``objectives.py``): ``paper`` (default), Eq. 5 on the examples the classifier
gets right clean and wrong attacked -- E_n scores the clean output above the adversarial one, E_a
the reverse, the subtracted estimate clamped at 0 (MI >= 0, our addition: unclamped, the critic
lowers it without bound instead of learning the dependence, see ``estimators.py``); or
``official``, the cosine objective of the official code (dwDavidxd/MIAT, ``train_MI_estimator.py``),
which also trains on the examples the attack does not flip.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from robustlab.defenses.adversarial import AdversarialDefense
from robustlab.defenses.miat.estimators import MIEstimator
from robustlab.defenses.miat.objectives import LOSSES, OBJECTIVES, Estimates, mi_gaps, selected_mean
from robustlab.defenses.miat.selection import outcome_masks
from robustlab.defenses.optim import build_optimizer, build_schedule
from robustlab.models.loading import load_weights


def freeze(module: nn.Module) -> None:
    """No gradients into ``module`` and eval mode (BatchNorm statistics untouched)."""
    module.requires_grad_(False)
    module.eval()


class MIATEstimators(AdversarialDefense):
    """Stage 1 of MIAT: ``net`` is the frozen classifier loaded from ``dependencies['classifier']``
    (a PGD-AT checkpoint of the training cache); ``estimator_n`` and ``estimator_a`` are trained.

    ``estimator``: {hidden, width} of both estimators (hidden 2048 and width 64 in the paper);
    ``input_shape``: (channels, size, size) of the dataset's images, used to size them;
    ``objective``: ``paper`` or ``official`` (module docstring).
    The inner attack (``inner``) crafts the adversarial examples against the frozen classifier.
    """

    def __init__(
        self,
        *args,
        dependencies: dict[str, str],
        input_shape: Sequence[int],
        estimator: dict[str, Any],
        objective: str = "paper",
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        if objective not in OBJECTIVES:
            raise ValueError(
                f"miat_estimators: objective={objective!r} is not one of {list(OBJECTIVES)}"
            )
        self.objective = objective
        if self.warmup_epochs:
            raise ValueError(
                f"miat_estimators: warmup_epochs={self.warmup_epochs} must be 0: the classifier "
                "is frozen (warm the PGD-AT classifier up through the miat defense instead)"
            )
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

    def estimates(self, x: Tensor, y: Tensor) -> tuple[Estimates, Tensor, Tensor]:
        """The four estimates on PGD examples against the frozen classifier, and the masks
        ``correct_clean`` and ``wrong_adv`` (``selection.outcome_masks``)."""
        x_adv = self.craft(x, y)
        with torch.no_grad():
            logits_clean, logits_adv = self.net(x), self.net(x_adv)
        noise = x_adv - x
        est = Estimates(
            n_clean=self.estimator_n(x, logits_clean),
            n_adv=self.estimator_n(x, logits_adv),
            a_adv=self.estimator_a(noise, logits_adv),
            a_clean=self.estimator_a(noise, logits_clean),
        )
        return est, *outcome_masks(logits_clean, logits_adv, y)

    def training_loss(self, x, y):
        est, correct_clean, wrong_adv = self.estimates(x, y)
        flipped = correct_clean & wrong_adv
        gap_n, gap_a = mi_gaps(est)
        self.log("train/selected", flipped.float().mean(), on_step=False, on_epoch=True)
        self.log("train/mi_gap_n", selected_mean(gap_n, flipped).detach(), on_epoch=True)
        self.log("train/mi_gap_a", selected_mean(gap_a, flipped).detach(), on_epoch=True)
        return LOSSES[self.objective](est, correct_clean, wrong_adv), None

    def validation_step(self, batch, batch_idx):
        """The classifier's metrics, plus ``val/mi_gap`` (Eq. 5's two gaps on the flipped
        validation examples, higher is better) for checkpointing, whatever the objective."""
        super().validation_step(batch, batch_idx)
        est, correct_clean, wrong_adv = self.estimates(*batch)
        gap_n, gap_a = mi_gaps(est)
        flipped = correct_clean & wrong_adv
        self.log("val/mi_gap", selected_mean(gap_n, flipped) + selected_mean(gap_a, flipped))

    def configure_optimizers(self):
        params = [*self.estimator_n.parameters(), *self.estimator_a.parameters()]
        optimizer = build_optimizer(params, self.optimizer_cfg)
        schedule = build_schedule(
            optimizer, self.scheduler_cfg, int(self.trainer.estimated_stepping_batches)
        )
        if schedule is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": schedule}
