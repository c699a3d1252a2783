"""The whole cell through ``robustlab.run``: every defense trains and evaluates; records hold the
contract; eval-only mode, the training cache and resumption reproduce the same numbers."""

from __future__ import annotations

import json

import pytest
import torch

from robustlab.plan import ConfigError, build_plan
from robustlab.results.record import REQUIRED_FIELDS, WORST_CASE
from robustlab.run import run

FAST = (
    "dataset.train_limit=128",
    "eval.n_examples=48",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "logger=none",
)


@pytest.fixture
def cell(compose_cfg, tmp_path):
    def _cell(*overrides):
        return compose_cfg(f"cache.dir={tmp_path / 'cache'}", *FAST, *overrides)

    return _cell


@pytest.mark.parametrize(
    "defense",
    [
        "erm",
        "pgd_at",
        "trades",
        "mart",
        "fast_at",
        "m2at",
        "mixup",
        "interpolated_at",
        "translation",
    ],
)
def test_fast_dev_run_of_each_defense_on_digits(cell, defense):
    extra = (
        ["inference=[translation]", "eval.natural_shifts=[1]"] if defense == "translation" else []
    )
    cfg = cell(f"defense={defense}", "+trainer.fast_dev_run=true", "attack=[fgsm]", *extra)
    records = run(cfg)
    assert {r["defense"] for r in records} == {defense}
    assert all(0.0 <= r["robust_acc"] <= r["clean_acc"] <= 1.0 for r in records)


def test_records_hold_the_contract_and_worst_case_is_lowest(cell, tmp_path):
    cfg = cell("defense=erm", "attack=[fgsm,pgd]", "threat.eps=[0.1,0.2]", "attack.pgd.steps=5")
    records = run(cfg)
    lines = (tmp_path / "records.jsonl").read_text().splitlines()
    assert len(lines) == len(records) == 6  # 2 attacks x 2 eps + 2 worst cases
    for line in lines:
        rec = json.loads(line)
        assert set(REQUIRED_FIELDS) <= rec.keys()
    for eps in (0.1, 0.2):
        group = [r for r in records if r["eps"] == eps]
        worst = next(r for r in group if r["attack"] == WORST_CASE)
        assert all(worst["robust_acc"] <= r["robust_acc"] for r in group)
    pgd = sorted((r for r in records if r["attack"] == "pgd"), key=lambda r: r["eps"])
    assert pgd[1]["robust_acc"] <= pgd[0]["robust_acc"]


def test_same_seed_gives_identical_metrics(cell, tmp_path):
    first = run(cell("defense=pgd_at", "cache.enabled=false", "output_dir=" + str(tmp_path / "a")))
    second = run(cell("defense=pgd_at", "cache.enabled=false", "output_dir=" + str(tmp_path / "b")))
    keys = ("attack", "eps", "clean_acc", "robust_acc", "n_robust")
    assert [[r[k] for k in keys] for r in first] == [[r[k] for k in keys] for r in second]


def test_eval_mode_reproduces_the_numbers_from_the_saved_checkpoint(cell, tmp_path):
    trained = run(
        cell("defense=erm", "trainer.max_epochs=3", "output_dir=" + str(tmp_path / "train"))
    )
    ckpt = tmp_path / "train" / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, weights_only=True)["epoch"] == 2  # the final weights, always
    assert (tmp_path / "train" / "checkpoints" / "best.ckpt").is_file()
    evaluated = run(
        cell("mode=eval", f"ckpt={ckpt}", "defense=erm", "output_dir=" + str(tmp_path / "ev"))
    )
    strip = [(r["attack"], r["clean_acc"], r["robust_acc"]) for r in trained]
    assert strip == [(r["attack"], r["clean_acc"], r["robust_acc"]) for r in evaluated]


def test_cache_hit_skips_training_and_rerun_skips_a_complete_cell(cell, tmp_path, capsys):
    first = run(cell("defense=erm", "output_dir=" + str(tmp_path / "one")))
    other_attacks = run(cell("defense=erm", "attack=[pgd]", "output_dir=" + str(tmp_path / "two")))
    assert "reusing trained weights" in capsys.readouterr().out
    assert other_attacks[0]["clean_acc"] == first[0]["clean_acc"]
    again = run(cell("defense=erm", "output_dir=" + str(tmp_path / "one")))
    assert "is complete" in capsys.readouterr().out
    assert again == first
    lines = (tmp_path / "one" / "records.jsonl").read_text().splitlines()
    assert len(lines) == len(first)


def test_mixup_inference_reports_both_threat_models(cell):
    records = run(
        cell(
            "defense=mixup",
            "attack=[pgd]",
            "attack.pgd.steps=3",
            "inference=[plain,mi_ol]",
            "eval.eot_draws=2",
            "eval.n_examples=16",
        )
    )
    seen = {(r["inference"], r["threat_model"]) for r in records if r["attack"] == "pgd"}
    assert seen == {("plain", "adaptive"), ("mi_ol", "oblivious"), ("mi_ol", "adaptive")}


@pytest.mark.parametrize(
    "override, message",
    [
        ("dataset.eps=1.5", "dataset.eps=1.5 is outside (0, 1]"),
        ("dataset.eps=0", "dataset.eps=0"),
        ("trainer.max_epochs=0", "trainer.max_epochs=0 must be a positive integer"),
        ("mode=eval", "mode=eval needs ckpt=PATH"),
        ("mode=fit", "mode='fit' is not one of ['train', 'eval']"),
    ],
)
def test_bad_input_is_a_one_line_error_before_training(cell, override, message):
    with pytest.raises(ValueError) as err:
        build_plan(cell(override))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_dataset_root_without_its_files(cell, tmp_path):
    with pytest.raises(ConfigError) as err:
        build_plan(cell("dataset=mnist", f"dataset.root={tmp_path / 'empty'}"))
    assert "train-images-idx3-ubyte" in str(err.value) and "\n" not in str(err.value)


def test_mismatched_or_corrupt_checkpoint(cell, tmp_path):
    wrong = tmp_path / "wrong.pt"
    torch.save({"weight": torch.zeros(3)}, wrong)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    for path in (wrong, corrupt):
        with pytest.raises(ValueError) as err:
            build_plan(cell("mode=eval", f"ckpt={path}"))
        assert str(path) in str(err.value) and "\n" not in str(err.value)
