"""Training through the cache: a ``TrainingJob``'s dependencies first, then its defense, fitted with
Lightning, or reloaded when its training config is already cached.

A defense config may declare ``dependencies: {key: {defense: NAME, overrides: {...}}}``; the plan
turns each into a job of its own, and the defense receives ``dependencies={key: checkpoint path}``.
MIAT and the translation defense use this.
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate

from robustlab.cache import CacheWriter, checkpoint_path, training_config, training_lock
from robustlab.checkpointing import AtomicCheckpointIO
from robustlab.defenses.base import DefenseModule
from robustlab.defenses.overfitting import CatastrophicOverfittingMonitor
from robustlab.plan import TrainingJob


def build_defense(job: TrainingJob, net: torch.nn.Module) -> DefenseModule:
    """The job's defense around ``net``, its dependencies trained (or found) first."""
    deps = {key: str(ensure_trained(dep)) for key, dep in job.dependencies}
    extra = {"dependencies": deps} if deps else {}
    return instantiate(job.config.defense, net=net, _convert_="all", **extra)


def load_cached(defense: DefenseModule, path: Path) -> None:
    """Load a cached checkpoint (the defense's full state_dict) into ``defense``, with the flags
    its training raised (``training_flags``; none in cache files written before they were kept)."""
    cached = torch.load(path, map_location="cpu", weights_only=True)
    defense.load_state_dict(cached["state_dict"], strict=True)
    defense.training_flags = [str(flag) for flag in cached.get("training_flags", [])]


def fit(
    job: TrainingJob,
    defense: DefenseModule,
    datamodule: pl.LightningDataModule,
    *,
    loggers: list,
    callbacks: list,
    cached: Path | None,
    lock,
) -> pl.Trainer:
    """Fit with Lightning; the CacheWriter (first after checkpoints) stores the result. A defense
    with a validation attack is watched for catastrophic overfitting (its ``training_flags``)."""
    cfg = job.config
    if defense.val_attack is not None:
        callbacks = [CatastrophicOverfittingMonitor(), *callbacks]
    if cached is not None:
        callbacks = [CacheWriter(cached, training_config(cfg), lock), *callbacks]
    trainer = instantiate(
        cfg.trainer,
        logger=loggers or False,
        callbacks=callbacks,
        default_root_dir=str(cfg.output_dir),
        plugins=[AtomicCheckpointIO()],
    )
    trainer.fit(defense, datamodule=datamodule)
    return trainer


def ensure_trained(job: TrainingJob) -> Path:
    """The cached checkpoint of the job's training config, training it first if missing."""
    cfg = job.config
    cached = checkpoint_path(cfg)
    lock = training_lock(cached)
    if lock is not None:
        lock.acquire()
    try:
        if not cached.is_file():
            print(f"robustlab: training dependency {job.defense} -> {cached}")
            datamodule = instantiate(cfg.dataset)
            pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
            defense = build_defense(job, instantiate(cfg.model))
            fit(job, defense, datamodule, loggers=[], callbacks=[], cached=cached, lock=lock)
        return cached
    finally:
        if lock is not None and lock.is_locked:
            lock.release()
