"""Training jobs other than the cell's own (dependencies, compare_with baselines) are composed by
Hydra's compose API and take the cell's training budget."""

from __future__ import annotations

import pytest

from robustlab.cache import training_key
from robustlab.plan import ConfigError, build_plan
from robustlab.plan.compose import (
    BUDGET_KEYS,
    baseline_config,
    defense_option,
    job_config,
    same_budget_overrides,
)


def test_a_derived_defense_gets_its_parents_keys(compose_cfg):
    sub = job_config(compose_cfg("defense=erm"), "miat_t", None, "test")
    assert sub.defense.base_loss == "trades"
    assert sub.defense._target_.endswith("stage2.MIAT")


def test_unknown_defense_is_hydras_one_line_message():
    with pytest.raises(ConfigError, match=r"eval.compare_with\[0\]='nope': .*nope"):
        defense_option("nope", "eval.compare_with[0]")


def test_baseline_takes_the_cells_budget_keys(compose_cfg):
    cfg = compose_cfg(
        "defense=miat",
        "defense.optimizer.name=sgd",
        "defense.optimizer.lr=0.1",
        "defense.warmup_epochs=3",
        "defense.inner.steps=7",
        "eval.compare_with=[pgd_at]",
    )
    (baseline,) = build_plan(cfg).baselines
    sub = baseline.config
    assert sub.defense.name == "pgd_at"
    assert sub.defense.optimizer.name == "sgd" and sub.defense.optimizer.lr == 0.1
    assert sub.defense.warmup_epochs == 3
    assert sub.defense.inner.steps == 7
    assert "alpha" not in sub.defense


def test_baseline_keeps_its_own_value_of_keys_it_does_not_define(compose_cfg):
    cfg = compose_cfg("defense=miat", "defense.warmup_epochs=3")
    overrides = same_budget_overrides(cfg, defense_option("erm", "test"))
    assert set(overrides["defense"]) == {"optimizer", "scheduler"} < set(BUDGET_KEYS)
    sub = baseline_config(cfg, "erm", "test")
    assert "inner" not in sub.defense and "warmup_epochs" not in sub.defense


@pytest.mark.parametrize("experiment", ["miat_quick", "miat_paper"])
def test_miat_baseline_is_the_classifier_of_stage_1(compose_cfg, experiment):
    """The same-budget PGD-AT baseline and MIAT's stage-1 classifier share one cache entry."""
    cfg = compose_cfg(f"experiment={experiment}")
    cfg.dataset = compose_cfg().dataset  # digits: the CIFAR files are not here
    plan = build_plan(cfg)
    estimators = dict(plan.cell.dependencies)["estimators"]
    classifier = dict(estimators.dependencies)["classifier"].config
    (baseline,) = plan.baselines
    assert classifier.defense.warmup_epochs == cfg.defense.warmup_epochs == 2
    assert training_key(classifier) == training_key(baseline.config)
