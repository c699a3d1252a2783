"""A 2-cell sweep through hydra/launcher=slurm on the local cluster (no accounting) completes
with one record set per cell, without sacct warnings."""

from __future__ import annotations

import json
import subprocess

import pytest
from slurm_helpers import records, wait_for

pytestmark = pytest.mark.slurm


def test_two_cell_sweep_writes_one_record_set_per_cell(slurm):
    sweep = slurm.sweep(
        "two_cells",
        "defense=erm,pgd_at",
        "trainer.max_epochs=2",
        "dataset.train_limit=256",
        "eval.n_examples=64",
        "attack=[fgsm]",
    )
    out = sweep.wait(timeout=300)
    cells = sorted(p for p in sweep.sweep_dir.iterdir() if p.is_dir() and p.name[0] != ".")
    assert [c.name for c in cells] == ["0_digits_erm", "1_digits_pgd_at"]
    for cell, defense in zip(cells, ["erm", "pgd_at"]):
        rows = records(cell)
        assert sorted(r["attack"] for r in rows) == ["fgsm", "worst_case"]
        assert {r["defense"] for r in rows} == {defense}
        assert json.loads((cell / "DONE.json").read_text())["n_records"] == len(rows)
    # one job array, one line about the missing accounting, no warning per poll
    assert len(list(sweep.sweep_dir.glob(".submitit/*_[01]"))) == 2
    assert "Bypassing sacct error" not in out
    assert out.count("sacct unavailable") == 1


def test_a_cancelled_job_fails_the_sweep_instead_of_leaving_it_waiting(slurm):
    """Without accounting submitit alone never learns that a job without a result has ended."""
    sweep = slurm.sweep(
        "cancelled",
        "defense=erm",
        "trainer.max_epochs=200",
        "eval.n_examples=64",
        "attack=[fgsm]",
    )
    job = sweep.job_id()
    cell = sweep.sweep_dir / "0_digits_erm"
    wait_for(lambda: (cell / "checkpoints").is_dir(), timeout=120, what="training", sweep=sweep)
    subprocess.run(["scancel", job], check=True)
    try:
        sweep.proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        sweep.proc.kill()
        pytest.fail(f"the sweep still waits 120 s after scancel:\n{sweep.tail()}")
    out = sweep.log.read_text()
    assert sweep.proc.returncode != 0
    assert f"Job {job} (task: 0)" in out and "has not produced any output" in out, sweep.tail()
    assert "Bypassing sacct error" not in out
