"""What is evaluated is what is named: ``mode=eval`` records carry the defense the checkpoint was
trained with (read from the file), a contradicting ``defense=`` is one line before any data is read,
and a checkpoint that names no defense is recorded as the one named, else ``external``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from test_bad_input import robustlab

from robustlab.models.provenance import checkpoint_defense, checkpoint_training_flags
from robustlab.paths import CONF_DIR
from robustlab.plan import ConfigError, build_plan
from robustlab.run import main, run

FAST = (
    "dataset.train_limit=64",
    "eval.n_examples=16",
    "attack=[fgsm]",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "logger=none",
)


@pytest.fixture(scope="module")
def erm_ckpt(tmp_path_factory) -> Path:
    """A Lightning checkpoint written by a real (tiny) ERM training run."""
    root = tmp_path_factory.mktemp("erm")
    overrides = [f"output_dir={root / 'train'}", f"cache.dir={root / 'cache'}", *FAST]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        run(compose(config_name="config", overrides=overrides))
    return root / "train" / "checkpoints" / "last.ckpt"


@pytest.fixture
def plain_ckpt(erm_ckpt, tmp_path) -> Path:
    """The same weights as a bare state_dict: nothing in the file names a defense."""
    state = torch.load(erm_ckpt, map_location="cpu", weights_only=True)["state_dict"]
    path = tmp_path / "plain.pt"
    torch.save({k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}, path)
    return path


def evaluate(monkeypatch, tmp_path, *args: str) -> set[str]:
    """Run ``robustlab mode=eval ARGS`` in this process; the defenses its records carry."""
    run_dir = tmp_path / "run"
    argv = ["robustlab", "mode=eval", f"hydra.run.dir={run_dir}", f"cache.dir={tmp_path / 'c'}"]
    monkeypatch.setattr(sys, "argv", [*argv, *FAST, *args])
    main()
    records = [json.loads(line) for line in (run_dir / "records.jsonl").open()]
    assert records
    return {r["defense"] for r in records}


def test_erm_checkpoint_is_recorded_as_erm(monkeypatch, tmp_path, erm_ckpt):
    assert checkpoint_defense(erm_ckpt) == "erm"
    assert evaluate(monkeypatch, tmp_path, f"ckpt={erm_ckpt}") == {"erm"}


def test_erm_checkpoint_named_as_pgd_at_is_one_line(monkeypatch, capsys, tmp_path, erm_ckpt):
    monkeypatch.chdir(tmp_path)
    line = robustlab(
        monkeypatch, capsys, tmp_path, "mode=eval", f"ckpt={erm_ckpt}", "defense=pgd_at"
    )
    assert line == (
        f"robustlab: error: ckpt={erm_ckpt} was trained with defense=erm, not defense=pgd_at: "
        "drop defense= or pass defense=erm"
    )


def test_plain_state_dict_is_external_unless_named(monkeypatch, tmp_path, plain_ckpt):
    assert checkpoint_defense(plain_ckpt) is None
    assert evaluate(monkeypatch, tmp_path / "a", f"ckpt={plain_ckpt}") == {"external"}
    named = evaluate(monkeypatch, tmp_path / "b", f"ckpt={plain_ckpt}", "defense=pgd_at")
    assert named == {"pgd_at"}


def relabelled(erm_ckpt: Path, path: Path, **changes) -> Path:
    """The ERM checkpoint with its recorded defense name or training flags changed."""
    ckpt = torch.load(erm_ckpt, map_location="cpu", weights_only=True)
    if "name" in changes:
        ckpt["hyper_parameters"]["name"] = changes.pop("name")
    ckpt.update(changes)
    torch.save(ckpt, path)
    return path


def test_compose_api_counts_only_a_non_default_defense_as_named(
    compose_cfg, tmp_path, erm_ckpt, plain_ckpt
):
    """Outside a Hydra run the command line is unknown: a composed defense other than the config's
    default (erm) counts as named; the default lets the checkpoint say what it is."""
    pgd_at_ckpt = relabelled(erm_ckpt, tmp_path / "pgd_at.ckpt", name="pgd_at")
    plan = build_plan(compose_cfg("mode=eval", f"ckpt={pgd_at_ckpt}", f"cache.dir={tmp_path}"))
    assert plan.recorded_defense == "pgd_at"
    plan = build_plan(compose_cfg("mode=eval", f"ckpt={plain_ckpt}", f"cache.dir={tmp_path}"))
    assert plan.recorded_defense == "external"
    with pytest.raises(ConfigError, match="trained with defense=erm, not defense=pgd_at"):
        build_plan(compose_cfg("mode=eval", f"ckpt={erm_ckpt}", "defense=pgd_at"))


def test_training_flags_in_the_checkpoint_reach_the_records(monkeypatch, tmp_path, erm_ckpt):
    flagged = relabelled(
        erm_ckpt, tmp_path / "co.ckpt", robustlab_training_flags=["catastrophic_overfitting"]
    )
    assert checkpoint_training_flags(flagged) == ("catastrophic_overfitting",)
    assert checkpoint_training_flags(erm_ckpt) == ()
    evaluate(monkeypatch, tmp_path, f"ckpt={flagged}")
    records = [json.loads(line) for line in (tmp_path / "run" / "records.jsonl").open()]
    assert all("catastrophic_overfitting" in r["sanity_flags"] for r in records)


def test_a_foreign_lightning_checkpoint_names_no_robustlab_defense(tmp_path):
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"name": "resnet18"}}, foreign)
    assert checkpoint_defense(foreign) is None


def cache_file(path: Path, **extra) -> Path:
    """A training-cache file as robustlab.cache.CacheWriter writes it (``extra``: newer keys)."""
    state = {"net.head.weight": torch.zeros(2, 2)}
    torch.save({"state_dict": state, "training_config": repr({"seed": 0}), **extra}, path)
    return path


def test_cache_files_name_their_defense_when_they_record_it(tmp_path):
    assert checkpoint_defense(cache_file(tmp_path / "new.pt", defense="pgd_at")) == "pgd_at"
    assert checkpoint_defense(cache_file(tmp_path / "old.pt")) is None


def test_unreadable_or_missing_file_is_one_line(tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="corrupt.pt") as err:
        checkpoint_defense(corrupt)
    assert "\n" not in str(err.value)
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        checkpoint_defense(tmp_path / "nope.pt")
