"""Preemption-proof cells (#16): a killed cell resumes where it stopped and writes the records an
uninterrupted run writes; damaged files are said in one line and redone, never trusted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from data_fixtures import Hostile

import robustlab.evaluation.units as units_module
import robustlab.training as training
from robustlab.cache import checkpoint_path, training_key
from robustlab.results.store import RECORDS_FILE
from robustlab.resume import DONE_FILE
from robustlab.run import run

VOLATILE = {"run_id", "started", "finished", "wall_seconds", "versions", "costs"}
TINY = (
    "dataset.train_limit=192",
    "eval.n_examples=40",
    "eval.batch_size=16",
    "attack=[fgsm,pgd]",
    "attack.pgd.steps=3",
    "trainer.enable_progress_bar=false",
    "logger=none",
    "torch_threads=1",
)


@pytest.fixture
def cell(compose_cfg, tmp_path):
    """A tiny digits cell writing into ``tmp_path/name`` with the cache ``tmp_path/cache_name``."""

    def _cell(name: str, *overrides: str):
        return compose_cfg(
            f"output_dir={tmp_path / name}",
            f"cache.dir={tmp_path / ('cache_' + name)}",
            *TINY,
            *overrides,
        )

    return _cell


def stable(records):
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in records]


def cache_weights(cfg):
    return torch.load(checkpoint_path(cfg), weights_only=True)["state_dict"]


class _KillAtEpoch(pl.Callback):
    """Killed at the start of ``epoch`` of the cell's own defense (not of its dependencies)."""

    def __init__(self, epoch, defense):
        self.epoch, self.defense = epoch, defense

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch and pl_module.name == self.defense:
            raise SystemExit(137)


def run_killed_in_training(monkeypatch, cfg, epoch):
    original = training.checkpoint_callbacks
    with monkeypatch.context() as patch:
        patch.setattr(
            training,
            "checkpoint_callbacks",
            lambda *a: [*original(*a), _KillAtEpoch(epoch, cfg.defense.name)],
        )
        with pytest.raises(SystemExit):
            run(cfg)


@pytest.mark.parametrize("defense", ["pgd_at", "mixup", "translation"])
def test_a_cell_killed_in_training_resumes_bit_identical(defense, cell, monkeypatch, capsys):
    """Killed at the start of epoch 3 of 4, the rerun resumes there (the log says so) and ends
    with the very weights and records of an uninterrupted run."""
    whole = cell("whole", f"defense={defense}", "trainer.max_epochs=4")
    expected = run(whole)
    killed = cell("killed", f"defense={defense}", "trainer.max_epochs=4")
    run_killed_in_training(monkeypatch, killed, epoch=2)
    capsys.readouterr()
    assert stable(run(killed)) == stable(expected)
    assert f"resuming training of {defense} at epoch 3 of 4" in capsys.readouterr().out
    got, want = cache_weights(killed), cache_weights(whole)
    assert all(torch.equal(got[k], want[k]) for k in want)
    checkpoints = sorted(p.name for p in (Path(killed.output_dir) / "checkpoints").iterdir())
    assert checkpoints == ["best.ckpt", "last.ckpt"]  # never best-v1.ckpt


def test_killed_after_the_last_epoch_takes_its_checkpoint(cell, monkeypatch, capsys):
    """Killed between the last epoch's checkpoint and the cache write: nothing is retrained."""
    expected = run(cell("whole", "trainer.max_epochs=2"))
    killed = cell("killed", "trainer.max_epochs=2")
    with monkeypatch.context() as patch:
        patch.setattr("robustlab.cache.write_cache", _raise_exit)
        with pytest.raises(SystemExit):
            run(killed)
    capsys.readouterr()
    assert stable(run(killed)) == stable(expected)
    out = capsys.readouterr().out
    assert "training of erm had finished (epoch 2)" in out
    assert "resuming training" not in out


def _raise_exit(*_args, **_kwargs):
    raise SystemExit(137)


def test_an_unreadable_or_foreign_last_checkpoint_is_not_resumed(cell, monkeypatch, capsys):
    expected = run(cell("whole", "trainer.max_epochs=3"))
    killed = cell("killed", "trainer.max_epochs=3")
    run_killed_in_training(monkeypatch, killed, epoch=2)
    last = Path(killed.output_dir) / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:200])  # truncated
    capsys.readouterr()
    assert stable(run(killed)) == stable(expected)
    captured = capsys.readouterr()
    assert f"{last} is unreadable" in captured.err
    assert "resuming training" not in captured.out
    # a checkpoint left by another training config (here: another learning rate) is dropped
    other = cell("other", "trainer.max_epochs=3", "defense.optimizer.lr=0.003")
    run_killed_in_training(monkeypatch, other, epoch=2)
    same_dir = cell("other", "trainer.max_epochs=3")
    assert training_key(same_dir) != training_key(other)
    capsys.readouterr()
    assert stable(run(same_dir))[0]["clean_acc"] == stable(expected)[0]["clean_acc"]
    assert "another training config's; training from scratch" in capsys.readouterr().out


def _kill_at_unit(monkeypatch, n):
    """SystemExit when the n-th not-yet-stored unit is about to be computed."""
    original = units_module.UnitStore.run
    seen = [0]

    def run_unit(self, unit, compute):
        if self.directory is not None and not self.has(unit):
            seen[0] += 1
            if seen[0] == n:
                raise SystemExit(137)
        return original(self, unit, compute)

    monkeypatch.setattr(units_module.UnitStore, "run", run_unit)


def _count_computed(monkeypatch):
    original = units_module.UnitStore.run
    computed = []

    def run_unit(self, unit, compute):
        if self.directory is not None and not self.has(unit):
            computed.append(unit)
        return original(self, unit, compute)

    monkeypatch.setattr(units_module.UnitStore, "run", run_unit)
    return computed


def test_a_cell_killed_in_evaluation_recomputes_only_missing_units(cell, monkeypatch, capsys):
    """Mixup's net through plain and MI-OL (randomized: its scoring draws are seeded per unit):
    killed in the middle of MI-OL's units, the rerun reuses the training cache and every
    finished unit, and writes the records of an uninterrupted run."""
    overrides = (
        "defense=mixup",
        "trainer.max_epochs=1",
        "inference=[plain,mi_ol]",
        "inference.mi_ol.n_ol=4",
        "eval.eot_draws=2",
        "eval.score_draws=3",
    )
    with monkeypatch.context() as patch:
        computed = _count_computed(patch)
        expected = run(cell("whole", *overrides))
    total = len(computed)
    killed = cell("killed", *overrides)
    with monkeypatch.context() as patch:
        _kill_at_unit(patch, total - 5)
        with pytest.raises(SystemExit):
            run(killed)
    capsys.readouterr()
    with monkeypatch.context() as patch:
        computed = _count_computed(patch)
        assert stable(run(killed)) == stable(expected)
    assert len(computed) == 6  # the unit being computed when killed, and the 5 after it
    out = capsys.readouterr().out
    assert "robustlab: reusing trained weights" in out
    assert "evaluation of mi_ol resumes:" in out
    assert not (Path(killed.output_dir) / "eval_state").exists()  # dropped once DONE is written


def test_an_unreadable_unit_file_is_recomputed(cell, monkeypatch, capsys):
    expected = run(cell("whole", "trainer.max_epochs=1"))
    killed = cell("killed", "trainer.max_epochs=1")
    with monkeypatch.context() as patch:
        _kill_at_unit(patch, 8)
        with pytest.raises(SystemExit):
            run(killed)
    stored = sorted((Path(killed.output_dir) / "eval_state").rglob("*.pt"))
    assert len(stored) == 7
    stored[0].write_bytes(b"garbage")
    capsys.readouterr()
    assert stable(run(killed)) == stable(expected)
    assert "is unreadable" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["truncated", "empty", "other_architecture", "hostile"])
def test_a_corrupt_cache_entry_is_said_and_retrained(damage, cell, capsys, tmp_path):
    first = cell("first", "trainer.max_epochs=1")
    expected = run(first)
    cached = checkpoint_path(first)
    if damage == "truncated":
        cached.write_bytes(cached.read_bytes()[:300])
    elif damage == "empty":
        cached.write_bytes(b"")
    elif damage == "other_architecture":
        torch.save({"state_dict": {"net.layer.weight": torch.zeros(3)}}, cached)
    else:
        torch.save({"state_dict": Hostile(Path.touch, tmp_path / "ran")}, cached)
    again = cell("second", "trainer.max_epochs=1", f"cache.dir={cached.parent}")
    capsys.readouterr()
    assert stable(run(again))[0]["clean_acc"] == stable(expected)[0]["clean_acc"]
    err = capsys.readouterr().err
    assert err.count("corrupt cache entry") == 1
    assert not (tmp_path / "ran").exists()
    assert torch.load(cached, weights_only=True)["defense"] == "erm"  # retrained and stored


@pytest.mark.parametrize("damage", ["missing_line", "cut_mid_line", "outcomes_gone"])
def test_a_damaged_record_file_redoes_the_cell(damage, cell, capsys):
    cfg = cell("one", "trainer.max_epochs=1")
    expected = run(cfg)
    records = Path(cfg.output_dir) / RECORDS_FILE
    lines = records.read_text().splitlines(keepends=True)
    if damage == "missing_line":
        records.write_text("".join(lines[:-1]))
    elif damage == "cut_mid_line":
        records.write_text("".join(lines[:-1]) + lines[-1][:40])
    else:
        (Path(cfg.output_dir) / "outcomes.npz").write_bytes(b"PK\x03\x04 not a zip")
    capsys.readouterr()
    assert stable(run(cfg)) == stable(expected)
    captured = capsys.readouterr()
    assert "redoing" in captured.err and "is complete" not in captured.out
    assert len(records.read_text().splitlines()) == len(expected)
    assert json.loads((Path(cfg.output_dir) / DONE_FILE).read_text())["n_records"] == len(expected)


def test_stale_temp_files_are_removed(cell, monkeypatch):
    cfg = cell("one", "trainer.max_epochs=1")
    out = Path(cfg.output_dir)
    cached = checkpoint_path(cfg)
    stale = [
        out / f".{RECORDS_FILE}.abcd1234.tmp",
        out / "checkpoints" / ".last.ckpt.abcd1234.tmp",
        cached.parent / f".{cached.name}.abcd1234.tmp",
    ]
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half")
    run(cfg)
    assert not [p for p in stale if p.exists()]


def test_the_cache_key_holds_the_cpu_thread_count(cell):
    assert training_key(cell("a", "torch_threads=1")) != training_key(cell("a", "torch_threads=2"))
    assert training_key(cell("a", "torch_threads=1")) == training_key(cell("b", "torch_threads=1"))


def _cli(tmp_path, *args, multirun=False):
    flags = ["-m"] if multirun else []
    cache = f"cache.dir={tmp_path / 'cache'}"
    return [sys.executable, "-m", "robustlab", *flags, *TINY, cache, *args]


def test_two_runs_into_one_directory_write_one_record_set(tmp_path):
    out = tmp_path / "cell"
    cmd = _cli(tmp_path, "trainer.max_epochs=1", f"hydra.run.dir={out}")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    procs = [subprocess.Popen(cmd, env=env, **pipes) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    lines = (out / RECORDS_FILE).read_text().splitlines()
    assert json.loads((out / DONE_FILE).read_text())["n_records"] == len(lines)
    assert sum("is complete" in o for o, _ in outs) == 1  # the second waited, then skipped


def test_sigterm_in_a_sweep_exits_non_zero_and_the_rerun_resumes(tmp_path):
    """SIGTERM during the first cell's training: exit 143 with one line, the second cell never
    starts; the rerun resumes the first cell at the epoch it reached and runs the second."""
    sweep = tmp_path / "sweep"
    cmd = _cli(
        tmp_path,
        "defense=pgd_at,erm",
        "trainer.max_epochs=6",
        "dataset.train_limit=320",
        f"hydra.sweep.dir={sweep}",
        multirun=True,
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    last = sweep / "0_digits_pgd_at" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 240
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    assert "robustlab: SIGTERM received: stopping" in err
    assert not (sweep / "1_digits_erm").exists()
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "resuming training of pgd_at at epoch" in rerun.stdout
    for name in ("0_digits_pgd_at", "1_digits_erm"):
        assert (sweep / name / DONE_FILE).is_file()


def test_units_of_another_config_are_never_reused(cell, monkeypatch, capsys):
    """Killed in evaluation, then rerun in the same directory with another PGD step count: the
    FGSM units (same attack parameters, same weights) belong to another evaluated config."""
    killed = cell("killed", "trainer.max_epochs=1")
    with monkeypatch.context() as patch:
        _kill_at_unit(patch, 10)
        with pytest.raises(SystemExit):
            run(killed)
    changed = cell("killed", "trainer.max_epochs=1", "attack.pgd.steps=4")
    expected = run(cell("fresh", "trainer.max_epochs=1", "attack.pgd.steps=4"))
    capsys.readouterr()
    assert stable(run(changed)) == stable(expected)
    assert "resumes:" not in capsys.readouterr().out


def test_a_garbled_done_marker_redoes_the_cell(cell, capsys):
    cfg = cell("one", "trainer.max_epochs=1")
    expected = run(cfg)
    (Path(cfg.output_dir) / DONE_FILE).write_text("[]")
    capsys.readouterr()
    assert stable(run(cfg)) == stable(expected)
    assert "redoing" in capsys.readouterr().err
