"""The training cache: a hash of everything that determines training names a checkpoint.

A cell whose checkpoint exists only evaluates; cells that share a training config and run at the
same time train it once (a file lock), the others wait and reuse it. Attacks, inference wrappers
and evaluation settings are not part of the key, so sweeping them never retrains.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from filelock import FileLock
from omegaconf import DictConfig, OmegaConf

from robustlab.checkpointing import save_atomic
from robustlab.config import config_hash
from robustlab.precision import net_options

# Dataset keys that change how data is read or batched for evaluation, not what training sees.
_DATASET_IGNORED = ("root", "download", "num_workers", "eval_batch_size")
# Trainer keys that determine the trained weights: the schedule, precision and the process layout
# (DDP over N processes multiplies the effective batch). The accelerator kind is left out.
_TRAINER_KEPT = (
    "max_epochs",
    "precision",
    "accumulate_grad_batches",
    "gradient_clip_val",
    "devices",
    "num_nodes",
    "strategy",
    "fast_dev_run",
    "limit_train_batches",
)


def training_config(cfg: DictConfig) -> dict[str, Any]:
    """The part of a cell's config that determines its trained weights (the CPU thread count
    included: runs with different counts train different weights; so are trainer.precision and,
    when on, precision.channels_last and precision.compile, which change the net's arithmetic).
    """
    full = OmegaConf.to_container(cfg, resolve=True)
    dataset = {k: v for k, v in full["dataset"].items() if k not in _DATASET_IGNORED}
    trainer = {k: full["trainer"].get(k) for k in _TRAINER_KEPT}
    out = {
        "cpu_threads": cpu_threads(cfg),
        "dataset": dataset,
        "model": full["model"],
        "defense": full["defense"],
        "trainer": trainer,
        "seed": full["seed"],
    }
    net = net_options(cfg)
    if net:  # absent when off: the keys of nets trained before these options stay valid
        out["net_format"] = net
    return out


def cpu_threads(cfg: DictConfig) -> int | None:
    """The CPU thread count training runs with (it changes float reductions, hence the weights);
    None on an accelerator, where the net's arithmetic does not run on CPU threads."""
    accelerator = str(cfg.trainer.get("accelerator", "cpu"))
    if accelerator not in ("cpu", "auto") or (accelerator == "auto" and torch.cuda.is_available()):
        return None
    return int(cfg.get("torch_threads") or torch.get_num_threads())


def training_key(cfg: DictConfig) -> str:
    return config_hash(training_config(cfg))


def checkpoint_path(cfg: DictConfig) -> Path:
    name = f"{cfg.dataset.name}-{cfg.model.name}-{cfg.defense.name}-{training_key(cfg)}.pt"
    return Path(cfg.cache.dir) / name


def is_worker_rank() -> bool:
    """True in the extra processes of a DDP run (they must not take locks or tidy files): those
    Lightning's launcher starts (LOCAL_RANK, NODE_RANK) and the tasks srun starts beside task 0
    under SLURM (SLURM_PROCID)."""
    return any(
        int(os.environ.get(k, "0")) != 0 for k in ("LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")
    )


def training_lock(path: Path) -> FileLock | None:
    """The lock guarding ``path`` (None in DDP worker processes, which follow rank 0)."""
    if is_worker_rank():
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path) + ".lock")


class CacheWriter(pl.Callback):
    """After fit, rank 0 stores the trained defense (its full state_dict: the net under "net.",
    plus any other trained parts, its name and its ``training_flags``) atomically in the cache and
    releases the lock, so waiting cells can start evaluating while this one evaluates too."""

    def __init__(self, path: Path, training_cfg: dict[str, Any], lock: FileLock | None):
        self.path = path
        self.training_cfg = training_cfg
        self.lock = lock

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            write_cache(self.path, pl_module, self.training_cfg)
        if self.lock is not None and self.lock.is_locked:
            self.lock.release()


def write_cache(path: Path, defense: pl.LightningModule, training_cfg: dict[str, Any]) -> None:
    """Store a trained defense atomically: its full state_dict, name and training flags."""
    state = {k: v.detach().cpu() for k, v in defense.state_dict().items()}
    save_atomic(
        {
            "state_dict": state,
            "training_config": repr(training_cfg),
            "defense": defense.name,
            # raised while training (e.g. "catastrophic_overfitting"): plain strings
            "training_flags": list(defense.training_flags),
        },
        path,
    )


def remove_stale_temp_files(path: Path) -> None:
    """Temp files an interrupted atomic write of ``path`` left beside it (call under its lock)."""
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        tmp.unlink(missing_ok=True)
