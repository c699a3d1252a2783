"""Configs of other training jobs of a cell (dependencies, baselines), composed by Hydra.

A job is the cell's config with its defense replaced by another option of the ``defense`` group:
that option is composed by Hydra's compose API (defaults lists, packages and the search path of
this run, so a user's plugin defenses are found as the cell's were), then the job's overrides
(e.g. the cell's training budget) are merged on top.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from robustlab.paths import CONF_PACKAGE
from robustlab.plan.errors import ConfigError

# Keys that set a defense's training budget; a compare_with baseline takes the cell's values of
# those both define, so it is trained with the same optimizer, schedule, inner attack and warm-up.
BUDGET_KEYS = ("optimizer", "scheduler", "inner", "warmup_epochs")


def _search_path_overrides() -> list[str]:
    """``hydra.searchpath=[...]`` of the running app (none outside a Hydra app)."""
    try:
        paths = list(HydraConfig.get().searchpath)
    except ValueError:
        return []
    quoted = ",".join(f"'{p}'" for p in paths)
    return [f"hydra.searchpath=[{quoted}]"] if paths else []


def _compose(overrides: list[str]) -> DictConfig:
    if GlobalHydra.instance().is_initialized():
        return compose(config_name="config", overrides=overrides)
    with initialize_config_module(config_module=CONF_PACKAGE, version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def defense_option(name: str, where: str) -> dict[str, Any]:
    """The ``defense`` group's option ``name`` as Hydra composes it, interpolations unresolved."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}={name!r} must name a defense (an option of conf/defense)")
    try:
        composed = _compose([f"defense={name}", *_search_path_overrides()])
    except HydraException as err:
        raise ConfigError(f"{where}={name!r}: {str(err).splitlines()[0]}") from None
    return OmegaConf.to_container(composed.defense, resolve=False)


def job_config(
    parent: DictConfig, name: str, overrides: Mapping[str, Any] | None, where: str
) -> DictConfig:
    """The parent cell's config with ``defense=name`` (+ ``overrides``): a dependency's."""
    return _with_defense(parent, name, defense_option(name, where), overrides)


def baseline_config(cell: DictConfig, name: str, where: str) -> DictConfig:
    """Baseline ``name`` of ``eval.compare_with`` with the cell's values of BUDGET_KEYS (those
    both define), e.g. PGD-AT with MIAT's optimizer, schedule and warm-up."""
    baseline = defense_option(name, where)
    return _with_defense(cell, name, baseline, same_budget_overrides(cell, baseline))


def same_budget_overrides(cell: DictConfig, baseline: Mapping[str, Any]) -> dict[str, Any]:
    """The cell's values of the BUDGET_KEYS that the composed ``baseline`` defense also has."""
    own = OmegaConf.to_container(cell.defense, resolve=True)
    return {"defense": {key: own[key] for key in BUDGET_KEYS if key in own and key in baseline}}


def _with_defense(
    parent: DictConfig, name: str, defense: dict[str, Any], overrides: Mapping[str, Any] | None
) -> DictConfig:
    """``parent`` with ``defense`` (+ ``overrides``), its Lightning files under the parent's
    ``dependencies/NAME``."""
    sub = OmegaConf.to_container(parent, resolve=False)
    sub.pop("hydra", None)
    sub["defense"] = defense
    sub["output_dir"] = str(Path(parent.output_dir) / "dependencies" / name)
    sub_cfg = OmegaConf.create(sub)
    for key, value in (overrides or {}).items():
        OmegaConf.update(sub_cfg, key, value, merge=True)
    return sub_cfg
