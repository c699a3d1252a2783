"""Training through the cache: a ``TrainingJob``'s dependencies first, then its defense, fitted with
Lightning, or reloaded when its training config is already cached.

A defense config may declare ``dependencies: {key: {defense: NAME, overrides: {...}}}``; the plan
turns each into a job of its own, and the defense receives ``dependencies={key: checkpoint path}``.
MIAT and the translation defense use this.

Every fit resumes from the job's ``checkpoints/last.ckpt`` when a killed run left one
(``robustlab.training_resume``); a cache entry that cannot be loaded is said in one line,
removed and trained again.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from pytorch_lightning.callbacks import ModelCheckpoint

from robustlab.cache import (
    CacheWriter,
    checkpoint_path,
    is_worker_rank,
    remove_stale_temp_files,
    training_config,
    training_key,
    training_lock,
    write_cache,
)
from robustlab.checkpointing import AtomicCheckpointIO
from robustlab.defenses.base import DefenseModule
from robustlab.defenses.overfitting import CatastrophicOverfittingMonitor
from robustlab.plan import TrainingJob
from robustlab.precision import build_net
from robustlab.training_resume import ResumeState, resume_point, rng_state, set_rng_state


class CorruptCheckpoint(ValueError):
    """A saved state that cannot be loaded into the defense it is meant for."""


def build_defense(job: TrainingJob, net: torch.nn.Module) -> DefenseModule:
    """The job's defense around ``net``, its dependencies trained (or found) first."""
    deps = {key: str(ensure_trained(dep)) for key, dep in job.dependencies}
    extra = {"dependencies": deps} if deps else {}
    return instantiate(job.config.defense, net=net, _convert_="all", **extra)


def checked_state(defense: torch.nn.Module, state: Any, source: Path) -> dict[str, torch.Tensor]:
    """``state`` if it is a state_dict with exactly the defense's keys and shapes, else
    CorruptCheckpoint naming ``source`` and the first difference."""
    if not isinstance(state, dict):
        raise CorruptCheckpoint(f"{source}: no state_dict")
    expected = defense.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise CorruptCheckpoint(f"{source}: keys differ (missing {missing[:3]}, extra {extra[:3]})")
    for key, value in expected.items():
        if not isinstance(state[key], torch.Tensor) or state[key].shape != value.shape:
            raise CorruptCheckpoint(f"{source}: {key} has another shape than the model's")
    return state


def load_cached(defense: DefenseModule, path: Path) -> None:
    """Load a cached checkpoint (the defense's full state_dict) into ``defense``, with the flags
    its training raised (``training_flags``; none in cache files written before they were kept).
    A file that is truncated, empty, not a checkpoint or of another architecture raises
    CorruptCheckpoint and leaves ``defense`` untouched."""
    try:
        cached = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CorruptCheckpoint(f"{path}: unreadable ({reason[:160]})") from None
    state = checked_state(
        defense, cached.get("state_dict") if isinstance(cached, dict) else None, path
    )
    defense.load_state_dict(state, strict=True)
    defense.training_flags = [str(flag) for flag in cached.get("training_flags", [])]


def reuse_cached(defense: DefenseModule, cached: Path) -> bool:
    """Load the cache entry into ``defense``; a corrupt one is said in one line and removed
    (the caller trains again). False when there is nothing usable."""
    if not cached.is_file():
        return False
    try:
        load_cached(defense, cached)
    except CorruptCheckpoint as err:
        print(f"robustlab: warning: corrupt cache entry {err}; training again", file=sys.stderr)
        cached.unlink(missing_ok=True)
        return False
    return True


def checkpoint_callbacks(dirpath: Path, monitor: str | None) -> list[ModelCheckpoint]:
    """``last.ckpt`` every epoch (the resume point and the evaluated weights; Lightning's own
    ``save_last`` only writes when the monitored metric improves) and, with a ``monitor``,
    ``best.ckpt`` (its highest value), overwritten in place rather than versioned."""
    last = ModelCheckpoint(
        dirpath=dirpath, filename="last", monitor=None, save_top_k=1, enable_version_counter=False
    )
    if monitor is None:
        return [last]
    best = ModelCheckpoint(
        dirpath=dirpath,
        filename="best",
        monitor=monitor,
        mode="max",
        enable_version_counter=False,
    )
    return [best, last]


def fit(
    job: TrainingJob,
    defense: DefenseModule,
    datamodule: pl.LightningDataModule,
    *,
    loggers: list,
    callbacks: list,
    cached: Path | None,
    lock,
    monitor: str | None = None,
) -> pl.Trainer | None:
    """Fit with Lightning, from ``checkpoints/last.ckpt`` when a killed run left one; the
    CacheWriter (first) stores the result. A defense with a validation attack is watched for
    catastrophic overfitting (its ``training_flags``). None when the killed run had already
    finished its last epoch: ``defense`` then holds those weights (and the cache them too)."""
    cfg = job.config
    key = training_key(cfg)
    checkpoint_dir = Path(cfg.output_dir) / "checkpoints"
    resume = (
        None
        if cfg.trainer.get("fast_dev_run")
        else resume_point(checkpoint_dir, key, tidy=not is_worker_rank())
    )
    max_epochs = cfg.trainer.get("max_epochs")
    if resume is not None and max_epochs is not None and resume["epoch"] + 1 >= int(max_epochs) > 0:
        finish_from_checkpoint(job, defense, resume, cached)
        return None
    if defense.val_attack is not None:
        callbacks = [CatastrophicOverfittingMonitor(), *callbacks]
    if not is_worker_rank():
        say_what_trains(job, resume, cached, max_epochs)
    callbacks = [
        ResumeState(key),
        *checkpoint_callbacks(checkpoint_dir, monitor),
        *callbacks,
    ]
    if cached is not None:
        callbacks = [CacheWriter(cached, training_config(cfg), lock), *callbacks]
    trainer = instantiate(
        cfg.trainer,
        logger=loggers or False,
        callbacks=callbacks,
        default_root_dir=str(cfg.output_dir),
        plugins=[AtomicCheckpointIO()],
    )
    with warnings.catch_warnings():
        expected = [*defense.expected_warnings]
        if resume is not None:  # it resumes into its own checkpoint folder on purpose
            expected.append(r"Checkpoint directory .* exists and is not empty")
        for message in expected:
            warnings.filterwarnings("ignore", message=message)
        trainer.fit(
            defense,
            datamodule=datamodule,
            ckpt_path=None if resume is None else str(resume["path"]),
            weights_only=True,
        )
    return trainer


def drop_foreign_checkpoints(job: TrainingJob) -> None:
    """When the weights come from the cache, the cell's ``checkpoints/`` may only hold those of
    the same training (a killed run of it); another config's are removed."""
    if not is_worker_rank():
        resume_point(Path(job.config.output_dir) / "checkpoints", training_key(job.config))


def say_what_trains(job: TrainingJob, resume, cached: Path | None, max_epochs) -> None:
    """One line: training from scratch or resuming, with where the result goes."""
    where = f" -> {cached}" if cached is not None else ""
    if resume is None:
        print(f"robustlab: training {job.defense} for {max_epochs} epoch(s){where}")
    else:
        print(
            f"robustlab: resuming training of {job.defense} at epoch {resume['epoch'] + 2} "
            f"of {max_epochs}{where}"
        )


def finish_from_checkpoint(
    job: TrainingJob, defense: DefenseModule, resume: dict[str, Any], cached: Path | None
) -> None:
    """The killed run had completed every epoch (it died before storing the result): take the
    weights and flags of its last checkpoint, and store them in the cache."""
    checkpoint = resume["checkpoint"]
    defense.load_state_dict(checked_state(defense, checkpoint["state_dict"], resume["path"]))
    defense.on_load_checkpoint(checkpoint)
    print(
        f"robustlab: training of {job.defense} had finished (epoch {resume['epoch'] + 1}); "
        f"taking its weights from {resume['path']}"
    )
    if cached is not None:
        write_cache(cached, defense, training_config(job.config))


@contextmanager
def isolated_rng() -> Iterator[None]:
    """Run the body without changing any generator's state for the caller: training a
    dependency (or not, when it is cached) leaves the caller's random stream as it was."""
    saved = rng_state()
    try:
        yield
    finally:
        set_rng_state(saved)


def ensure_trained(job: TrainingJob) -> Path:
    """The cached checkpoint of the job's training config, training it first if missing or
    corrupt (checked by loading it into the job's defense)."""
    cfg = job.config
    cached = checkpoint_path(cfg)
    lock = training_lock(cached)
    if lock is not None:
        lock.acquire()
    try:
        with isolated_rng():
            if lock is not None:
                remove_stale_temp_files(cached)
            defense = build_defense(job, build_net(cfg))
            if not reuse_cached(defense, cached):
                datamodule = instantiate(cfg.dataset)
                pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
                defense = build_defense(job, build_net(cfg))
                fit(job, defense, datamodule, loggers=[], callbacks=[], cached=cached, lock=lock)
        return cached
    finally:
        if lock is not None and lock.is_locked:
            lock.release()
