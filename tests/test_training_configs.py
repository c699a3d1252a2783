"""Defense configs outside Hydra's own composition: dependencies and compare_with baselines read
conf/defense/*.yaml through ``defense_config``, and baselines take the cell's training budget."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from robustlab.cache import training_key
from robustlab.paths import CONF_DIR
from robustlab.training import BUDGET_KEYS, defense_config, dependency_config, same_budget_spec

DEFENSES = sorted(p.stem for p in (CONF_DIR / "defense").glob("*.yaml"))


@pytest.mark.parametrize("name", DEFENSES)
def test_defense_config_composes_as_hydra_does(compose_cfg, name):
    hydra_composed = OmegaConf.to_container(compose_cfg(f"defense={name}").defense)
    assert defense_config(name) == hydra_composed


def test_unknown_defense_names_the_valid_ones():
    with pytest.raises(ValueError, match=r"defense='nope' not found; valid defenses: \['erm'"):
        defense_config("nope")


def test_dependency_on_a_derived_defense_gets_its_parents_keys(compose_cfg):
    sub = dependency_config(compose_cfg("defense=erm"), {"defense": "miat_t"})
    assert sub.defense.base_loss == "trades"
    assert sub.defense._target_.endswith("stage2.MIAT")


def test_baseline_takes_the_cells_budget_keys(compose_cfg):
    cfg = compose_cfg(
        "defense=miat",
        "defense.optimizer.name=sgd",
        "defense.optimizer.lr=0.1",
        "defense.warmup_epochs=3",
        "defense.inner.steps=7",
    )
    sub = dependency_config(cfg, same_budget_spec(cfg, "pgd_at"))
    assert sub.defense.name == "pgd_at"
    assert sub.defense.optimizer.name == "sgd" and sub.defense.optimizer.lr == 0.1
    assert sub.defense.warmup_epochs == 3
    assert sub.defense.inner.steps == 7
    assert "alpha" not in sub.defense


def test_baseline_keeps_its_own_value_of_keys_it_does_not_define(compose_cfg):
    cfg = compose_cfg("defense=miat", "defense.warmup_epochs=3")
    spec = same_budget_spec(cfg, "erm")
    assert set(spec["overrides"]["defense"]) == {"optimizer", "scheduler"} < set(BUDGET_KEYS)
    sub = dependency_config(cfg, spec)
    assert "inner" not in sub.defense and "warmup_epochs" not in sub.defense


def _dependency(cfg, key):
    spec = OmegaConf.to_container(cfg.defense, resolve=True)["dependencies"][key]
    return dependency_config(cfg, spec)


@pytest.mark.parametrize("experiment", ["miat_quick", "miat_paper"])
def test_miat_baseline_is_the_classifier_of_stage_1(compose_cfg, experiment):
    """The same-budget PGD-AT baseline and MIAT's stage-1 classifier share one cache entry."""
    cfg = compose_cfg(f"experiment={experiment}")
    classifier = _dependency(_dependency(cfg, "estimators"), "classifier")
    baseline = dependency_config(cfg, same_budget_spec(cfg, "pgd_at"))
    assert classifier.defense.warmup_epochs == cfg.defense.warmup_epochs == 2
    assert training_key(classifier) == training_key(baseline)
