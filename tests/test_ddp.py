"""Lightning DDP on CPU (2 processes, gloo): training runs, the evaluation shards the test split
over ranks and gathers per-example flags so each test example is counted exactly once."""

from __future__ import annotations

import json
import subprocess
import sys


def robustlab(*args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "robustlab", *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_ddp_cpu_counts_each_test_example_once(tmp_path):
    common = [
        "dataset.train_limit=128",
        "eval.n_examples=51",
        "attack=[fgsm]",
        "cache.enabled=false",
        "trainer.enable_progress_bar=false",
        "logger=none",
    ]
    robustlab(
        "trainer=ddp_cpu", "trainer.max_epochs=1", *common, f"hydra.run.dir={tmp_path / 'ddp'}"
    )
    ddp = [json.loads(line) for line in (tmp_path / "ddp" / "records.jsonl").open()]
    assert len(ddp) == 2  # fgsm + worst case, written once (rank 0)
    assert all(r["n_examples"] == 51 for r in ddp)

    ckpt = tmp_path / "ddp" / "checkpoints" / "last.ckpt"
    robustlab("mode=eval", f"ckpt={ckpt}", *common, f"hydra.run.dir={tmp_path / 'single'}")
    single = [json.loads(line) for line in (tmp_path / "single" / "records.jsonl").open()]
    assert [(r["clean_acc"], r["robust_acc"]) for r in ddp] == [
        (r["clean_acc"], r["robust_acc"]) for r in single
    ]
