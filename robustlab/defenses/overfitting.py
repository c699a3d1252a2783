"""Catastrophic overfitting: the flag of Wong, Rice and Kolter, "Fast is better than free:
Revisiting adversarial training" (ICLR 2020), sec. 5.

Single-step adversarial training (fast AT, FGSM-AT) can, within about one epoch, stop being robust:
accuracy under PGD collapses towards zero while accuracy under FGSM holds or even rises. The net has
learned to defeat the one linear step it is trained on (its loss surface curves sharply around the
data, so FGSM's step from the clean point misses) without being robust to a few smaller steps.
Any adversarial training can show it; Wong et al.'s code (locuslab/fast_adversarial,
``--early-stop``) checks PGD accuracy once per epoch and stops when it falls by more than 0.2.

Every ``DefenseModule`` with a ``val_attack`` logs ``val/pgd_acc`` (PGD-5, random start) and
``val/fgsm_acc`` (one step of size eps from the clean point) per validation epoch.
``CatastrophicOverfittingMonitor`` keeps both histories and applies ``find_collapse`` (a pure
function of the two lists) after each validation epoch. On the first detection it prints one line
on stderr and adds ``"catastrophic_overfitting"`` to ``pl_module.training_flags``, which Lightning
checkpoints and the training cache keep.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl

FLAG = "catastrophic_overfitting"

# The thresholds of ``find_collapse`` and why:
# - MIN_DROP 0.2: Wong et al.'s own early-stop test (PGD accuracy more than 0.2 below the previous
#   epoch's). It is also ~5 standard deviations of the accuracy on a few hundred validation images
#   (sqrt(0.25 / 150) ~ 0.04), so PGD's random start and the epoch-to-epoch jitter do not reach it.
# - MAX_RATIO 0.5: the PGD accuracy must also fall below half of its reference: a collapse, not a
#   0.9 -> 0.7 wobble of a very robust net (catastrophic overfitting takes PGD accuracy to ~0).
# - WINDOW 2: the reference is the best PGD accuracy of the previous 2 validation epochs, since the
#   collapse happens "within the span of a single epoch" (Wong et al.) but a validation epoch may
#   land in its middle. A slow decline (robust overfitting, Rice et al. 2020: a different
#   phenomenon, not flagged here) never loses 0.2 within 2 epochs.
# - FGSM_SLACK 0.05: FGSM accuracy must hold (at most 0.05 below its value at the reference epoch,
#   about the epoch-to-epoch jitter of a stable net) or rise. A net that diverges (too high a
#   learning rate, a bad batch) loses FGSM accuracy along with PGD accuracy: not this flag.
MIN_DROP = 0.2
MAX_RATIO = 0.5
WINDOW = 2
FGSM_SLACK = 0.05


@dataclass(frozen=True)
class Collapse:
    """A detected collapse: positions ``before`` and ``at`` in the histories, and their values."""

    before: int
    at: int
    pgd_before: float
    pgd_at: float
    fgsm_before: float
    fgsm_at: float


def find_collapse(
    pgd: Sequence[float],
    fgsm: Sequence[float],
    *,
    min_drop: float = MIN_DROP,
    max_ratio: float = MAX_RATIO,
    window: int = WINDOW,
    fgsm_slack: float = FGSM_SLACK,
) -> Collapse | None:
    """The first catastrophic-overfitting collapse in per-epoch validation accuracies, or None.

    At position t, the reference r is the epoch of the highest PGD accuracy among the ``window``
    before t (the latest one on a tie). Position t is a collapse when all three hold:

    1. ``pgd[r] - pgd[t] >= min_drop``    (PGD accuracy fell by at least min_drop),
    2. ``pgd[t] <= max_ratio * pgd[r]``   (to at most max_ratio of what it was),
    3. ``fgsm[t] >= fgsm[r] - fgsm_slack`` (while FGSM accuracy held or rose).

    Causal: the answer for a prefix of the histories is the answer for the whole when it lies
    inside the prefix. Non-finite values never take part in a collapse.
    """
    if len(pgd) != len(fgsm):
        raise ValueError(f"pgd has {len(pgd)} epochs but fgsm has {len(fgsm)}")
    if window < 1:
        raise ValueError(f"window={window} must be >= 1")
    for t in range(1, len(pgd)):
        earlier = [i for i in range(max(0, t - window), t) if _finite(pgd[i], fgsm[i])]
        if not earlier or not _finite(pgd[t], fgsm[t]):
            continue
        r = max(earlier, key=lambda i: (pgd[i], i))
        if (
            pgd[r] - pgd[t] >= min_drop
            and pgd[t] <= max_ratio * pgd[r]
            and fgsm[t] >= fgsm[r] - fgsm_slack
        ):
            return Collapse(r, t, float(pgd[r]), float(pgd[t]), float(fgsm[r]), float(fgsm[t]))
    return None


def _finite(*values: float) -> bool:
    return all(math.isfinite(v) for v in values)


class CatastrophicOverfittingMonitor(pl.Callback):
    """After each validation epoch (not the sanity check), record ``val/pgd_acc`` and
    ``val/fgsm_acc`` and look for a collapse (``find_collapse``). The first one prints a warning
    on stderr (rank 0) and adds ``FLAG`` to ``pl_module.training_flags``; every validation epoch
    logs ``train/catastrophic_overfitting`` (0 or 1). A defense that logs neither metric (the
    translation defense, whose classifier is frozen) is left alone."""

    def __init__(self, pgd_key: str = "val/pgd_acc", fgsm_key: str = "val/fgsm_acc", **rule):
        self.pgd_key = pgd_key
        self.fgsm_key = fgsm_key
        self.rule = rule
        self.epochs: list[int] = []
        self.pgd: list[float] = []
        self.fgsm: list[float] = []
        self.collapse: Collapse | None = None

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        if self.pgd_key not in metrics or self.fgsm_key not in metrics:
            return
        self.epochs.append(int(trainer.current_epoch))
        self.pgd.append(float(metrics[self.pgd_key]))
        self.fgsm.append(float(metrics[self.fgsm_key]))
        if self.collapse is None:
            self.collapse = find_collapse(self.pgd, self.fgsm, **self.rule)
            if self.collapse is not None:
                self._flag(trainer, pl_module, self.collapse)
        pl_module.log(f"train/{FLAG}", float(self.collapse is not None), sync_dist=True)

    def _flag(self, trainer: pl.Trainer, pl_module: pl.LightningModule, c: Collapse) -> None:
        flags = pl_module.training_flags
        if FLAG in flags:  # restored from a checkpoint: already reported
            return
        flags.append(FLAG)
        if trainer.is_global_zero:
            print(
                f"robustlab: warning: catastrophic overfitting in {pl_module.name} at epoch "
                f"{self.epochs[c.at]}: val PGD acc {c.pgd_before:.3f} -> {c.pgd_at:.3f} while val "
                f"FGSM acc {c.fgsm_before:.3f} -> {c.fgsm_at:.3f} (Wong et al. 2020)",
                file=sys.stderr,
            )

    def state_dict(self) -> dict[str, Any]:
        """The histories (plain lists: Lightning checkpoints stay loadable with weights_only)."""
        return {"epochs": list(self.epochs), "pgd": list(self.pgd), "fgsm": list(self.fgsm)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.epochs = [int(e) for e in state_dict.get("epochs", [])]
        self.pgd = [float(v) for v in state_dict.get("pgd", [])]
        self.fgsm = [float(v) for v in state_dict.get("fgsm", [])]
        self.collapse = find_collapse(self.pgd, self.fgsm, **self.rule)
