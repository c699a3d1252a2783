"""A cell longer than its SLURM time limit: SLURM signals USR2 before the limit, submitit (through
the launcher's checkpoint) requeues the job, and the requeued job resumes training and finishes."""

from __future__ import annotations

import json
import re

import pytest
from slurm_helpers import records

pytestmark = pytest.mark.slurm

# PGD-AT epochs of ~1.7 s on one thread (alone on a 2-core machine): ~90 s of training, well past
# the 1-minute limit, resumed at most a couple of seconds before where it was stopped
EPOCHS = 50


def test_a_cell_past_its_time_limit_is_requeued_and_finishes(slurm):
    sweep = slurm.sweep(
        "time_limit",
        "defense=pgd_at",
        f"trainer.max_epochs={EPOCHS}",
        "eval.n_examples=64",
        "attack=[fgsm]",
        # USR2 5 s before the 1-minute limit; slurmctld acts every 30 s, so it comes 25-55 s in
        "hydra.launcher.signal_delay_s=5",
        "hydra.launcher.max_num_timeout=6",
        timeout_min=1,
    )
    sweep.wait(timeout=540)
    log = sweep.job_log() + sweep.job_err()
    # submitit's USR2 handler: a time-out (the limit is under 10 minutes), the launcher's
    # checkpoint pickles the same cell again, `scontrol requeue` (whose SIGTERM ends the job)
    assert "Caught signal SIGUSR2" in log and "this job is timed-out" in log, sweep.tail()
    assert "Calling checkpoint method" in log
    assert "requeued 1 time(s)" in log
    resumed = [
        int(k) for k in re.findall(rf"resuming training of pgd_at at epoch (\d+) of {EPOCHS}", log)
    ]
    assert resumed and resumed[0] >= 2 and resumed == sorted(resumed), sweep.tail()
    cell = sweep.cell()
    rows = records(cell)
    assert sorted(r["attack"] for r in rows) == ["fgsm", "worst_case"]
    assert json.loads((cell / "DONE.json").read_text())["n_records"] == len(rows)
    print(f"time_limit: resumed at epochs {resumed}")
