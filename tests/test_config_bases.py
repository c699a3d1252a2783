"""Defense and dataset configs state only what differs from their shared bases (conf/defense/_base.yaml,
conf/defense/_adversarial.yaml, conf/dataset/_image.yaml), through Hydra defaults lists."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from robustlab.paths import CONF_DIR

# A dataset config names its class, name, root, statistics and at most this many other keys.
MAX_DATASET_KEYS = 13


def options(group: str) -> list[str]:
    """Selectable options: a leading underscore marks a base, not an option."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml") if not p.stem.startswith("_"))


def own(group: str, name: str) -> dict:
    """The keys a config file states itself (its defaults list aside)."""
    raw = OmegaConf.to_container(OmegaConf.load(CONF_DIR / group / f"{name}.yaml"))
    raw.pop("defaults", None)
    return raw


def parent(group: str, name: str) -> str | None:
    defaults = OmegaConf.load(CONF_DIR / group / f"{name}.yaml").get("defaults") or []
    parents = [d for d in defaults if d != "_self_"]
    assert len(parents) <= 1, f"{group}/{name}: one parent expected, got {parents}"
    return parents[0] if parents else None


def composed(compose_cfg, group: str, name: str, resolve: bool = True) -> dict:
    return OmegaConf.to_container(compose_cfg(f"{group}={name}")[group], resolve=resolve)


def test_bases_exist_and_are_not_options():
    for group, base in (("defense", "_base"), ("defense", "_adversarial"), ("dataset", "_image")):
        assert (CONF_DIR / group / f"{base}.yaml").is_file()
        assert base not in options(group)
    assert "pgd_at" in options("defense") and "digits" in options("dataset")


@pytest.mark.parametrize(
    "group, name", [(g, o) for g in ("defense", "dataset") for o in options(g)]
)
def test_every_option_composes_with_nothing_left_to_set(compose_cfg, group, name):
    cfg = compose_cfg(f"{group}={name}")
    assert not OmegaConf.missing_keys(cfg[group]), f"{group}={name} leaves ??? unset"
    node = OmegaConf.to_container(cfg[group], resolve=True)
    assert node["name"] == name and node["_target_"]
    assert "defaults" not in node


@pytest.mark.parametrize(
    "group, name", [(g, o) for g in ("defense", "dataset") for o in options(g)]
)
def test_every_option_states_only_what_differs_from_its_parent(compose_cfg, group, name):
    base = parent(group, name)
    assert base is not None, f"{group}/{name}.yaml has no defaults list naming its base"
    inherited = composed(compose_cfg, group, base, resolve=False)
    for key, value in own(group, name).items():
        if key not in inherited:
            continue
        was = inherited[key]
        merged = (
            OmegaConf.to_container(OmegaConf.merge(was, value))
            if isinstance(was, dict) and isinstance(value, dict)
            else value
        )
        assert merged != was, f"{group}/{name}.yaml restates {key}={value!r} of {base}"


def _differing(a: dict, b: dict) -> set[str]:
    return {k for k in a.keys() | b.keys() if a.get(k, "<absent>") != b.get(k, "<absent>")}


def test_pgd_at_and_mart_differ_only_in_loss_and_start(compose_cfg):
    pgd_at = composed(compose_cfg, "defense", "pgd_at")
    mart = composed(compose_cfg, "defense", "mart")
    assert _differing(pgd_at, mart) == {"_target_", "name", "beta", "inner"}
    assert _differing(pgd_at["inner"], mart["inner"]) == {"random_start"}
    assert pgd_at["inner"]["random_start"] is True and "random_start" not in mart["inner"]


def test_trades_and_mart_differ_only_in_class_and_name(compose_cfg):
    trades = composed(compose_cfg, "defense", "trades")
    mart = composed(compose_cfg, "defense", "mart")
    assert _differing(trades, mart) == {"_target_", "name"}


def test_adversarial_defenses_share_budget_and_validation(compose_cfg):
    """Every option built on _adversarial keeps its keys unless it says otherwise."""
    shared = composed(compose_cfg, "defense", "_adversarial")
    derived = [o for o in options("defense") if parent("defense", o) == "_adversarial"]
    assert {"pgd_at", "trades", "mart", "fast_at", "m2at", "interpolated_at", "miat"} <= set(
        derived
    )
    for name in derived:
        cfg = composed(compose_cfg, "defense", name)
        assert set(shared) - {"_target_", "name"} <= set(cfg), name
        assert cfg["num_classes"] == shared["num_classes"]


@pytest.mark.parametrize("name", options("dataset"))
def test_dataset_yaml_is_short(name):
    assert parent("dataset", name) == "_image"
    stated = own("dataset", name)
    assert {"_target_", "name", "root", "mean", "std"} <= set(stated)
    assert len(stated) <= MAX_DATASET_KEYS, f"dataset/{name}.yaml states {sorted(stated)}"


def test_dataset_base_holds_every_shared_argument(compose_cfg):
    base = OmegaConf.load(CONF_DIR / "dataset" / "_image.yaml")
    for name in options("dataset"):
        cfg = composed(compose_cfg, "dataset", name)
        assert set(base) - {"defaults"} <= set(cfg), name
