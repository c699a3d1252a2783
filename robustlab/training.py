"""Training through the cache: build a defense (resolving the trained defenses it depends on),
fit it with Lightning, or reload it when its training config is already cached.

A defense config may declare ``dependencies: {key: {defense: NAME, overrides: {...}}}``: each is
the same cell with ``defense=NAME`` (plus overrides), trained once through the cache; the defense
receives ``dependencies={key: checkpoint path}``. MIAT and the translation defense use this.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from robustlab.cache import CacheWriter, checkpoint_path, training_config, training_lock
from robustlab.checkpointing import AtomicCheckpointIO
from robustlab.defenses.base import DefenseModule
from robustlab.paths import CONF_DIR

# Keys that set a defense's training budget; a compare_with baseline takes the cell's values of
# those both define, so it is trained with the same optimizer, schedule, inner attack and warm-up.
BUDGET_KEYS = ("optimizer", "scheduler", "inner", "warmup_epochs")


def defense_config(name: str) -> dict[str, Any]:
    """``conf/defense/NAME.yaml`` composed as Hydra composes it: its ``defaults`` list (other
    defense configs and ``_self_``, implicitly last) merged in order."""
    path = CONF_DIR / "defense" / f"{name}.yaml"
    if not path.is_file():
        valid = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ValueError(f"defense={name!r} not found; valid defenses: {valid}")
    own = OmegaConf.load(path)
    defaults = list(own.pop("defaults", None) or [])
    if "_self_" not in defaults:
        defaults.append("_self_")
    merged = OmegaConf.create()
    for entry in defaults:
        if not isinstance(entry, str):
            raise ValueError(f"{path}: defaults entry {entry!r} is not a defense name or _self_")
        part = own if entry == "_self_" else defense_config(entry)
        merged = OmegaConf.merge(merged, part)
    return OmegaConf.to_container(merged)


def dependency_config(cfg: DictConfig, spec: dict[str, Any]) -> DictConfig:
    """The parent's cell config with the defense replaced by ``spec['defense']`` (+ overrides)."""
    name = spec["defense"]
    sub = OmegaConf.to_container(cfg, resolve=False)
    sub.pop("hydra", None)
    sub["defense"] = defense_config(name)
    sub["output_dir"] = str(Path(cfg.output_dir) / "dependencies" / name)
    sub_cfg = OmegaConf.create(sub)
    for key, value in (spec.get("overrides") or {}).items():
        OmegaConf.update(sub_cfg, key, value, merge=True)
    return sub_cfg


def same_budget_spec(cfg: DictConfig, name: str) -> dict[str, Any]:
    """The dependency spec of baseline ``name`` trained with the cell's values of BUDGET_KEYS
    (those both defenses define), e.g. PGD-AT with MIAT's optimizer, schedule and warm-up."""
    baseline = defense_config(name)
    own = OmegaConf.to_container(cfg.defense, resolve=True)
    shared = {key: own[key] for key in BUDGET_KEYS if key in own and key in baseline}
    return {"defense": name, "overrides": {"defense": shared}}


def resolve_dependencies(cfg: DictConfig) -> dict[str, str]:
    """Train (or find) every dependency of ``cfg.defense``; {key: cached checkpoint path}."""
    specs = OmegaConf.to_container(cfg.defense, resolve=True).get("dependencies") or {}
    return {key: str(ensure_trained(dependency_config(cfg, spec))) for key, spec in specs.items()}


def build_defense(cfg: DictConfig, net: torch.nn.Module) -> DefenseModule:
    deps = resolve_dependencies(cfg)
    extra = {"dependencies": deps} if deps else {}
    return instantiate(cfg.defense, net=net, _convert_="all", **extra)


def load_cached(defense: DefenseModule, path: Path) -> None:
    """Load a cached checkpoint (the defense's full state_dict) into ``defense``."""
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    defense.load_state_dict(state, strict=True)


def fit(
    cfg: DictConfig,
    defense: DefenseModule,
    datamodule: pl.LightningDataModule,
    *,
    loggers: list,
    callbacks: list,
    cached: Path | None,
    lock,
) -> pl.Trainer:
    """Fit with Lightning; the CacheWriter (first after checkpoints) stores the result."""
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


def ensure_trained(cfg: DictConfig) -> Path:
    """The cached checkpoint of ``cfg``'s training config, training it first if missing."""
    cached = checkpoint_path(cfg)
    lock = training_lock(cached)
    if lock is not None:
        lock.acquire()
    try:
        if not cached.is_file():
            print(f"robustlab: training dependency {cfg.defense.name} -> {cached}")
            datamodule = instantiate(cfg.dataset)
            datamodule.check_files()
            pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
            defense = build_defense(cfg, instantiate(cfg.model))
            fit(cfg, defense, datamodule, loggers=[], callbacks=[], cached=cached, lock=lock)
        return cached
    finally:
        if lock is not None and lock.is_locked:
            lock.release()
