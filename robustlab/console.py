"""A quiet console: third-party tips, hardware banners and deprecation notices that say nothing
about the run are filtered where they come from; robustlab's own warnings, and every other
warning, still show.

Filtered: Lightning's product tip (litlogger), its GPU/TPU/HPU availability lines, the
"Loading `train_dataloader`" and "`Trainer.fit` stopped" notes (robustlab says what each cell
does itself), its checkpoint-restore note (robustlab says where training resumes), the
logging-interval and srun hints, and the pytree deprecation Lightning
triggers in torch. Warnings expected in one situation only (a resumed training's non-empty
checkpoint folder, a defense's frozen modules) are silenced around that fit alone
(``robustlab.training.fit``).

``PacedProgressBar``: Lightning's progress bar, redrawn at most twice a second, as tqdm paces its
own display (Lightning's default redraws it after every batch: about 0.6 ms a step on a CPU).
"""

from __future__ import annotations

import logging
import re
import time
import warnings

from pytorch_lightning.callbacks import TQDMProgressBar

NOISE = re.compile(
    "|".join(
        (
            r"💡 Tip:",
            r"(GPU|TPU|HPU) available:",
            r"Loading `train_dataloader` to estimate",
            r"`Trainer\.fit` stopped:",
            r"Restored all states from the checkpoint",
            # a defense's paced bar (configure_callbacks) replacing the default one
            r"The following callbacks returned in `LightningModule\.configure_callbacks` will "
            r"override existing callbacks passed to Trainer: TQDMProgressBar$",
        )
    )
)
WARNING_NOISE = (
    r".*isinstance\(treespec, LeafSpec\)` is deprecated",
    r"The `srun` command is available on your system but is not used",
    r"The number of training batches \(\d+\) is smaller than the logging interval",
)
LIGHTNING_LOGGERS = (
    "pytorch_lightning.utilities.rank_zero",
    "lightning_fabric.utilities.rank_zero",
)


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not NOISE.match(record.getMessage())


def quiet_third_party() -> None:
    """Install the filters (idempotent; called in every process that runs cells)."""
    for name in LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNoise) for f in logger.filters):
            logger.addFilter(_DropNoise())
    for message in WARNING_NOISE:
        warnings.filterwarnings("ignore", message=message)


class PacedProgressBar(TQDMProgressBar):
    """Lightning's TQDM bar, redrawn when ``interval`` seconds have passed since it last was, and
    at the end of each loop; the metrics shown are the same."""

    def __init__(self, interval: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        self.interval = float(interval)
        self._drawn = float("-inf")

    def _should_update(self, current: int, total: int) -> bool:
        if not self.is_enabled:
            return False
        now = time.monotonic()
        if current == total or now - self._drawn >= self.interval:
            self._drawn = now
            return True
        return False
