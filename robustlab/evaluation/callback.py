"""The Lightning callback through which attacks reach a trained defense.

After fit it evaluates the net on the test split (sharded over DDP ranks, flags gathered, each
test example counted once) and writes the records; optionally, every k validation epochs, it
evaluates a fixed subset of the validation split and only logs the numbers.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch

from robustlab.evaluation.evaluator import Evaluator


def split_tensors(datamodule, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    datamodule.setup("test" if split == "test" else "fit")
    return datamodule.tensors(split)


class RobustEvaluation(pl.Callback):
    def __init__(self, evaluator: Evaluator, every_n_val_epochs: int = 0, val_subset: int = 256):
        self.evaluator = evaluator
        self.every_n_val_epochs = every_n_val_epochs
        self.val_subset = val_subset
        self.records: list[dict] = []

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        x, y = split_tensors(trainer.datamodule, "test")
        with torch.inference_mode(False):
            self.records = self.evaluator.evaluate(
                pl_module.net,
                x,
                y,
                rank=trainer.global_rank,
                world_size=trainer.world_size,
                defense=pl_module,
            )

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        k = self.every_n_val_epochs
        if k <= 0 or trainer.sanity_checking or (trainer.current_epoch + 1) % k:
            return
        x, y = split_tensors(trainer.datamodule, "val")
        subset = Evaluator(
            **{
                **self.evaluator.__dict__,
                "n_examples": self.val_subset,
                "progress": False,
                "resumable": False,
            }
        )
        with torch.inference_mode(False):
            records = subset.evaluate(
                pl_module.net,
                x,
                y,
                rank=trainer.global_rank,
                world_size=trainer.world_size,
                write=False,
                defense=pl_module,
            )
        for r in records:
            pl_module.log(
                f"val_robust/{r['attack']}/{r['threat_model']}_{r['eps']:g}",
                r["robust_acc"],
                rank_zero_only=True,
            )
