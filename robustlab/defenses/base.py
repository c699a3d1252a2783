"""DefenseModule: the LightningModule every defense extends.

It owns the net, the optimizer and schedule, and the metrics every defense logs: train loss and
accuracy, val clean accuracy, and a cheap validation PGD accuracy with its FGSM companion (one step
of size eps from the clean point: the pair the catastrophic-overfitting check in
``robustlab.defenses.overfitting`` compares). A subclass only says how a batch becomes a training
loss (``training_loss``). ``warmup_epochs`` clean epochs (cross-entropy on the natural inputs) may
precede the defense's own loss; the official MIAT code (dwDavidxd/MIAT) warms its target model up
this way for 2 epochs before adversarial training.

The training metrics cost no extra forward and no synchronisation per step: the accuracy is that of
logits the step computed anyway (``train/clean_acc``, or ``train/adv_acc`` for defenses that
train on adversarial examples alone; none where the step has only logits of mixed inputs), and
loss and accuracy are summed on the device over the epoch and logged once, at its end.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import TQDMProgressBar
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from robustlab.console import PacedProgressBar
from robustlab.defenses.inner import InnerAttack, pgd
from robustlab.defenses.optim import build_optimizer, build_schedule


class DefenseModule(pl.LightningModule):
    """Base class: ``net`` maps pixel-space [0,1] NCHW inputs to logits.

    ``parts`` names the trained submodules besides ``net`` that an inference wrapper may take
    (e.g. the translation defense's ``translator`` and ``gate``); ``expected_warnings`` are
    message patterns of third-party warnings its training raises on purpose (silenced during its
    fit only).
    """

    parts: tuple[str, ...] = ()
    expected_warnings: tuple[str, ...] = ()
    # what the logits ``training_loss`` returns are computed on: "clean" or "adv" inputs, logged
    # as ``train/{train_logits}_acc`` (warm-up epochs always return clean logits)
    train_logits: str = "clean"

    def __init__(
        self,
        net: nn.Module,
        name: str,
        num_classes: int,
        optimizer: dict[str, Any],
        scheduler: dict[str, Any] | None = None,
        val_attack: dict[str, Any] | None = None,
        monitor: str = "val/clean_acc",
        warmup_epochs: int = 0,
    ):
        super().__init__()
        if warmup_epochs < 0:
            raise ValueError(f"{name}: warmup_epochs={warmup_epochs} must be >= 0")
        self.warmup_epochs = warmup_epochs
        self.net = net
        self.name = name
        self.monitor = monitor
        self.optimizer_cfg = dict(optimizer)
        self.scheduler_cfg = dict(scheduler or {"name": "none"})
        self.val_attack = InnerAttack(**val_attack) if val_attack else None
        self.save_hyperparameters(ignore=["net"])
        self._epoch_sums: dict[str, torch.Tensor] = {}  # loss and accuracy sums of the epoch
        self._epoch_count = 0
        self.val_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.val_pgd_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        # FGSM from the clean point (no random start, one step of size eps) with val_attack's eps and
        # norm: deterministic, so it draws nothing from the global generator
        self.val_fgsm_attack = (
            InnerAttack(
                eps=self.val_attack.eps,
                steps=1,
                step_size=self.val_attack.eps,
                norm=self.val_attack.norm,
                random_start=False,
            )
            if self.val_attack is not None
            else None
        )
        self.val_fgsm_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        # flags raised while training (e.g. "catastrophic_overfitting"): plain strings, kept in
        # Lightning checkpoints and in the training cache
        self.training_flags: list[str] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_loss(
        self, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return (loss, logits or None): the logits the step computed on the inputs
        ``train_logits`` names, for the training accuracy; None when it has none (mixed inputs),
        and then no training accuracy is logged (no forward is added for it)."""
        raise NotImplementedError

    def warmup_loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy on the natural inputs: the loss of the clean warm-up epochs."""
        logits = self.net(x)
        return F.cross_entropy(logits, y), logits

    def training_step(self, batch, batch_idx):
        x, y = batch
        if self.current_epoch < self.warmup_epochs:
            loss, logits = self.warmup_loss(x, y)
            on = "clean"
        else:
            loss, logits = self.training_loss(x, y)
            on = self.train_logits
        self._tally(loss, logits, y, on)
        return loss

    @torch.no_grad()
    def _tally(self, loss: torch.Tensor, logits: torch.Tensor | None, y: torch.Tensor, on: str):
        """Add the batch's loss and correct predictions to the epoch's sums, on the device."""
        n = len(y)
        parts = {"loss": loss.detach().float() * n}
        if logits is not None:
            parts[f"{on}_acc"] = (logits.detach().argmax(1) == y).sum().float()
        for key, value in parts.items():
            total = self._epoch_sums.get(key)
            self._epoch_sums[key] = value if total is None else total + value
        self._epoch_count += n

    def on_train_epoch_start(self) -> None:
        self._epoch_sums, self._epoch_count = {}, 0

    def on_train_epoch_end(self) -> None:
        """``train/loss`` and the accuracies: the epoch's means, averaged over DDP ranks (which
        see equally many examples)."""
        for key, total in self._epoch_sums.items():
            self.log(
                f"train/{key}", total / self._epoch_count, prog_bar=key == "loss", sync_dist=True
            )
        self._epoch_sums, self._epoch_count = {}, 0

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        self.val_acc(logits, y)
        self.log("val/loss", F.cross_entropy(logits, y), sync_dist=True)
        self.log("val/clean_acc", self.val_acc, prog_bar=True)
        if self.val_attack is not None:
            x_adv = pgd(self.net, x, y, self.val_attack)
            with torch.no_grad():
                self.val_pgd_acc(self.net(x_adv), y)
            self.log("val/pgd_acc", self.val_pgd_acc, prog_bar=True)
            x_fgsm = pgd(self.net, x, y, self.val_fgsm_attack)
            with torch.no_grad():
                self.val_fgsm_acc(self.net(x_fgsm), y)
            self.log("val/fgsm_acc", self.val_fgsm_acc)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["robustlab_training_flags"] = list(self.training_flags)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.training_flags = [str(f) for f in checkpoint.get("robustlab_training_flags", [])]

    def configure_callbacks(self):
        """Lightning's default progress bar (redrawn after every batch) becomes a
        ``PacedProgressBar`` (at most twice a second); another bar the trainer has is kept."""
        bar = self.trainer.progress_bar_callback
        if type(bar) is TQDMProgressBar and bar.refresh_rate == 1:
            return [PacedProgressBar()]
        return []

    def configure_optimizers(self):
        optimizer = build_optimizer(self.net.parameters(), self.optimizer_cfg)
        schedule = build_schedule(
            optimizer, self.scheduler_cfg, int(self.trainer.estimated_stepping_batches)
        )
        if schedule is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": schedule}
