"""Every config of every group composes and resolves; the CLI turns bad input into one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from robustlab.attacks.specs import available_attacks, resolve_attack_specs
from robustlab.paths import CONF_DIR
from robustlab.validate import ConfigError, accepted_parameters, validate_config, validate_defenses

GROUPS = ("dataset", "model", "defense", "inference", "trainer", "logger")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize("group, option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_group_option_composes_and_resolves(compose_cfg, group, option):
    cfg = compose_cfg(f"{group}={option}")
    OmegaConf.to_container(cfg, resolve=True)
    assert cfg[group] is not None


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_composes(compose_cfg, experiment):
    cfg = compose_cfg(f"experiment={experiment}")
    OmegaConf.to_container(cfg, resolve=True)
    resolve_attack_specs(cfg)
    validate_defenses(cfg)  # its defense, dependencies and compare_with baselines


@pytest.mark.parametrize("defense", options("defense"))
def test_every_defense_config_holds_only_its_class_parameters(compose_cfg, defense):
    validate_defenses(compose_cfg(f"defense={defense}"))


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
            r"defense: \['dependencies', 'estimator'\] are not parameters of defense=pgd_at .*"
            r"eval.compare_with",
        ),
        (
            ["experiment=miat_quick", "+defense.dependencies.estimators.overrides.defense.hiden=3"],
            r"defense.dependencies.estimators: \['hiden'\] are not parameters of "
            r"defense=miat_estimators",
        ),
        (
            ["experiment=miat_quick", "+defense.dependencies.x.overrides={}"],
            r"defense.dependencies.x names no defense",
        ),
    ],
)
def test_keys_a_defense_does_not_take_are_a_one_line_error(compose_cfg, overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate_defenses(compose_cfg(*overrides))


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


def test_every_attack_resolves_with_eps_lists(compose_cfg):
    names = available_attacks()
    cfg = compose_cfg(f"attacks=[{','.join(names)}]", "attack.eps=[0.1,0.2]")
    specs = resolve_attack_specs(cfg)
    assert [s["name"] for s in specs] == names
    for spec in specs:
        assert spec["eps"] == ([0.1, 0.2] if spec["norm"] == "linf" else [1.0])


def test_per_attack_override(compose_cfg):
    cfg = compose_cfg("attacks=[fgsm,pgd]", "+attack.pgd.steps=77", "attack.steps=5")
    fgsm, pgd = resolve_attack_specs(cfg)
    assert pgd["steps"] == 77 and "steps" not in fgsm


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
        validate_config(compose_cfg("experiment=miat_quick", "trainer.max_epochs=2"))
    validate_config(compose_cfg("experiment=miat_quick", "trainer.max_epochs=3"))
