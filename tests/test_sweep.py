"""Train once, evaluate many: the cache key, the lock, resumable cells, and whole sweeps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from robustlab.cache import training_key
from robustlab.results.record import REQUIRED_FIELDS
from robustlab.results.store import RECORDS_FILE, append_records
from robustlab.resume import DONE_FILE, completed_records, discard_partial, mark_complete

ROBUSTLAB = [sys.executable, "-m", "robustlab"]
TINY = [
    "dataset.train_limit=128",
    "eval.n_examples=40",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "logger=none",
    "attack=[fgsm]",
]


@pytest.mark.parametrize(
    "same",
    [
        "attack=[pgd,autoattack]",
        "threat.eps=[0.1,0.3]",
        "inference=mi_ol",
        "eval.n_examples=10",
        "dataset.root=/elsewhere",
        "logger=wandb",
    ],
)
def test_cache_key_ignores_evaluation(compose_cfg, same):
    assert training_key(compose_cfg(same)) == training_key(compose_cfg())


@pytest.mark.parametrize(
    "different",
    [
        "defense=pgd_at",
        "defense.optimizer.lr=0.1",
        "seed=1",
        "trainer.max_epochs=3",
        "trainer.precision=bf16-mixed",
        "model.hidden=64",
        "dataset.train_limit=10",
        "trainer=ddp_cpu",
    ],
)
def test_cache_key_follows_training(compose_cfg, different):
    assert training_key(compose_cfg(different)) != training_key(compose_cfg())


def record(i):
    return {k: 0 for k in REQUIRED_FIELDS} | {"attack": f"a{i}"}


def test_resume_logic(tmp_path):
    assert completed_records(tmp_path, "h") is None
    append_records(tmp_path / RECORDS_FILE, [record(0), record(1)])
    assert completed_records(tmp_path, "h") is None  # records without marker: killed mid-cell
    discard_partial(tmp_path)
    assert not (tmp_path / RECORDS_FILE).exists()
    append_records(tmp_path / RECORDS_FILE, [record(0)])
    mark_complete(tmp_path, "h", 1)
    assert [r["attack"] for r in completed_records(tmp_path, "h")] == ["a0"]
    assert completed_records(tmp_path, "other-config") is None


def test_concurrent_cells_train_a_shared_config_once(tmp_path):
    cache = f"cache.dir={tmp_path / 'cache'}"
    procs = [
        subprocess.Popen(
            [*ROBUSTLAB, *TINY, cache, f"hydra.run.dir={tmp_path / name}", f"attack=[{attack}]"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name, attack in (("a", "fgsm"), ("b", "pgd"))
    ]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sum("reusing trained weights" in out for out in outputs) == 1
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1


def cells(root):
    return {p.parent.name: [json.loads(x) for x in p.open()] for p in root.rglob(RECORDS_FILE)}


@pytest.mark.slow
def test_sweep_killed_midway_finishes_on_rerun_with_one_record_set_per_cell(tmp_path):
    sweep = [
        *ROBUSTLAB,
        "-m",
        "defense=erm,pgd_at,mixup",
        *TINY,
        f"cache.dir={tmp_path / 'cache'}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        "hydra.sweep.subdir=${defense.name}",
    ]
    proc = subprocess.Popen(
        sweep, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + 300
    while not (tmp_path / "sweep" / "erm" / DONE_FILE).exists():
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    subprocess.run(sweep, check=True, capture_output=True, timeout=600)
    done = cells(tmp_path / "sweep")
    assert sorted(done) == ["erm", "mixup", "pgd_at"]
    for records in done.values():
        assert [r["attack"] for r in records] == ["fgsm", "worst_case"]
    rerun = subprocess.run(sweep, check=True, capture_output=True, text=True, timeout=600)
    assert rerun.stdout.count("is complete") == 3


@pytest.mark.slow
def test_joblib_sweep_gives_the_same_records_as_a_sequential_one(tmp_path):
    def sweep(name, *launcher):
        subprocess.run(
            [
                *ROBUSTLAB,
                "-m",
                "defense=erm,pgd_at",
                *TINY,
                "torch_threads=1",
                f"cache.dir={tmp_path / name / 'cache'}",
                f"hydra.sweep.dir={tmp_path / name}",
                "hydra.sweep.subdir=${defense.name}",
                *launcher,
            ],
            check=True,
            capture_output=True,
            timeout=600,
        )
        keys = ("defense", "attack", "clean_acc", "robust_acc", "n_robust")
        return {
            cell: [[r[k] for k in keys] for r in recs]
            for cell, recs in cells(tmp_path / name).items()
        }

    sequential = sweep("seq")
    parallel = sweep("par", "hydra/launcher=parallel", "hydra.launcher.n_jobs=2")
    assert sequential == parallel and len(sequential) == 2
