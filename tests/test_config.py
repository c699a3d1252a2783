"""Every config of every group composes and resolves; the CLI turns bad input into one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from robustlab.config import config_hash
from robustlab.paths import CONF_DIR
from robustlab.plan import ConfigError, build_plan
from robustlab.plan.checks import accepted_parameters

GROUPS = ("dataset", "model", "defense", "trainer", "logger")


def options(group: str) -> list[str]:
    """The selectable options of a group (bases such as ``_adversarial`` are not)."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml") if not p.stem.startswith("_"))


@pytest.mark.parametrize("group, option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_group_option_composes_and_resolves(compose_cfg, group, option):
    cfg = compose_cfg(f"{group}={option}")
    OmegaConf.to_container(cfg, resolve=True)
    assert cfg[group] is not None


@pytest.mark.parametrize("option", options("inference"))
def test_every_inference_option_composes_under_its_own_key(compose_cfg, option):
    cfg = compose_cfg(f"inference=[{option}]")
    assert list(cfg.inference) == [option] and "_target_" in cfg.inference[option]


LOCAL = {"cifar10", "cifar100", "svhn", "imagefolder", "mnist", "fashion_mnist"}


def plan_of(compose_cfg, *overrides: str):
    """The plan of a config whose dataset files may not exist here (checked apart)."""
    cfg = compose_cfg(*overrides)
    if cfg.dataset.name in LOCAL:
        cfg.dataset = compose_cfg().dataset  # digits: no files needed
        cfg.dataset.eps = compose_cfg(*overrides).dataset.eps
    return build_plan(cfg)


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_plans(compose_cfg, experiment):
    plan = plan_of(compose_cfg, f"experiment={experiment}")
    assert plan.evaluation.attacks and plan.evaluation.inferences


@pytest.mark.parametrize("defense", options("defense"))
def test_every_defense_config_holds_only_its_class_parameters(compose_cfg, defense):
    inference = ["inference=[translation]"] if defense == "translation" else []
    build_plan(compose_cfg(f"defense={defense}", *inference))


def test_accepted_parameters_follow_the_kwargs_chain():
    class Base:
        def __init__(self, a, b=1):
            pass

    class Child(Base):
        def __init__(self, *args, c, **kwargs):
            super().__init__(*args, **kwargs)

    class Open:
        def __init__(self, **kwargs):
            pass

    assert accepted_parameters(Child) == {"a", "b", "c"}
    assert accepted_parameters(Open) is None


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["experiment=miat_quick", "defense=pgd_at"],
            r"defense: \['alpha', 'dependencies', 'estimator'\] not parameters of PGDAT.*eval.compare_with",
        ),
        (
            ["experiment=miat_quick", "+defense.dependencies.estimators.overrides.defense.hiden=3"],
            r"defense.dependencies.estimators: \['hiden'\] not parameters of MIATEstimators",
        ),
        (
            ["experiment=miat_quick", "+defense.dependencies.x.overrides={}"],
            r"defense.dependencies.x names no defense",
        ),
    ],
)
def test_keys_a_defense_does_not_take_are_a_one_line_error(compose_cfg, overrides, message):
    with pytest.raises(ConfigError, match=message):
        build_plan(compose_cfg(*overrides))


@pytest.mark.parametrize(
    "launcher", options("hydra/launcher") + ["joblib", "submitit_local", "submitit_slurm"]
)
def test_launcher_configs_compose(compose_cfg, launcher):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=[f"hydra/launcher={launcher}", "output_dir=/tmp/x"],
            return_hydra_config=True,
        )
    assert "_target_" in cfg.hydra.launcher


def test_every_attack_plans_with_a_threat_eps_list(compose_cfg):
    names = options("attack")
    cfg = compose_cfg(f"attack=[{','.join(names)}]", "threat.eps=[0.1,0.2]")
    specs = build_plan(cfg).evaluation.attacks
    assert [s.name for s in specs] == names
    for spec in specs:
        assert spec.eps == ((0.1, 0.2) if spec.norm == "linf" else (1.0,))


def test_one_attack_is_overridden_natively(compose_cfg):
    cfg = compose_cfg("attack=[fgsm,pgd,pgd50]", "attack.pgd.steps=77")
    fgsm, pgd, pgd50 = build_plan(cfg).evaluation.attacks
    assert (pgd.steps, pgd50.steps, pgd50.step_ratio) == (77, 50, 0.25)
    assert not hasattr(fgsm, "steps")


def test_variants_inherit_through_defaults_lists_and_every_attack_has_a_target():
    for path in (CONF_DIR / "attack").glob("*.yaml"):
        text = path.read_text()
        assert "_target_:" in text and "base:" not in text, path.name
    assert "- pgd@_here_" in (CONF_DIR / "attack" / "pgd50.yaml").read_text()


def test_attack_kinds_are_read_from_the_spec_classes():
    from robustlab.attacks.kinds import whitebox_kinds

    assert {"fgsm", "pgd", "apgd", "fab", "cw", "eot_pgd"} <= whitebox_kinds()
    assert "square" not in whitebox_kinds()


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "robustlab", *args, f"hydra.run.dir={cwd}"],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_unknown_group_option_lists_valid_choices(tmp_path):
    result = cli("dataset=nope", cwd=tmp_path)
    assert result.returncode != 0
    assert "nope" in result.stderr and "digits" in result.stderr and "mnist" in result.stderr


def test_bad_value_is_one_line_on_stderr(tmp_path):
    result = cli("dataset.eps=2", cwd=tmp_path)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [
        "robustlab: error: dataset.eps=2.0 is outside (0, 1]: pixels live in [0,1], "
        "so an L-inf eps must be in (0, 1] (e.g. 8/255=0.0314 for CIFAR, 0.3 for MNIST)"
    ]


def test_warmup_covering_every_epoch_is_a_one_line_error(compose_cfg):
    with pytest.raises(
        ConfigError, match=r"warmup_epochs=2 >= trainer.max_epochs=2: the miat loss"
    ):
        build_plan(compose_cfg("experiment=miat_quick", "trainer.max_epochs=2"))
    build_plan(compose_cfg("experiment=miat_quick", "trainer.max_epochs=3"))


def test_cell_hash_ignores_where_the_cache_lives(compose_cfg, tmp_path):
    """Rerunning a finished sweep with another cache dir (or the cache off) must find its cells
    complete: where trained weights are kept does not change what a cell computes."""
    base = compose_cfg(f"cache.dir={tmp_path / 'one'}")
    same = [
        compose_cfg(f"cache.dir={tmp_path / 'two'}"),
        compose_cfg(f"cache.dir={tmp_path / 'two'}", "cache.enabled=false"),
    ]
    assert {config_hash(cfg) for cfg in same} == {config_hash(base)}
    assert build_plan(same[0]).cell_hash == build_plan(base).cell_hash
    assert config_hash(compose_cfg("seed=1")) != config_hash(base)
