"""`scontrol requeue` of a running cell, during training and during evaluation: the requeued job
resumes (training at the epoch it reached; evaluation from its saved batches, without training
again) and writes records identical to an uninterrupted run of the same cell (which runs through
SLURM beside the first test)."""

from __future__ import annotations

import re
import time

import pytest
from slurm_helpers import records, requeue, wait_for

pytestmark = pytest.mark.slurm

EPOCHS = 30
# ~0.4 s per epoch and ~30 s of PGD-1000 on one thread (clean and FGSM take a second), so that a
# requeue lands inside either part, and evaluation outlasts SLURM's KillWait (10 s) after it
CELL = [
    "defense=erm",
    f"trainer.max_epochs={EPOCHS}",
    "eval.n_examples=512",
    "eval.batch_size=32",
    "attack=[fgsm,pgd]",
    "attack.pgd.steps=1000",
]
REQUEUED = "requeued 1 time(s)"


@pytest.fixture(scope="module")
def reference(slurm):
    """The same cell, uninterrupted (started now, waited for where compared)."""
    return slurm.sweep("uninterrupted", *CELL)


def test_requeue_during_training_resumes_at_the_epoch_reached(slurm, reference):
    sweep = slurm.sweep("requeue_training", *CELL)
    job = sweep.job_id()
    cell = sweep.sweep_dir / "0_digits_erm"
    wait_for(
        lambda: (cell / "checkpoints" / "last.ckpt").is_file(),
        timeout=240,
        what="checkpoint of a finished epoch",
        sweep=sweep,
    )
    requeue(job)
    sweep.wait(timeout=480)
    log = sweep.job_log()
    before, _, after = log.partition(REQUEUED)
    assert after, f"the job did not run again after the requeue:\n{sweep.tail()}"
    assert "resuming training" not in before
    resumed = re.search(rf"robustlab: resuming training of erm at epoch (\d+) of {EPOCHS}", after)
    assert resumed, f"the requeued job did not resume training:\n{sweep.tail()}"
    assert 2 <= int(resumed.group(1)) <= EPOCHS
    reference.wait(timeout=480)
    assert records(cell) == records(reference.cell())


def test_requeue_during_evaluation_reuses_training_and_saved_batches(slurm, reference):
    sweep = slurm.sweep("requeue_evaluation", *CELL)
    job = sweep.job_id()
    cell = sweep.sweep_dir / "0_digits_erm"
    wait_for(
        lambda: any((cell / "eval_state").rglob("*.pt")),
        timeout=240,
        what="a saved evaluation batch",
        sweep=sweep,
    )
    time.sleep(5)  # into PGD
    assert not (cell / "DONE.json").exists()
    requeue(job)
    sweep.wait(timeout=480)
    log = sweep.job_log()
    _, _, after = log.partition(REQUEUED)
    assert after, f"the job did not run again after the requeue:\n{sweep.tail()}"
    assert "reusing" in after, f"the requeued job did not reuse the trained net:\n{sweep.tail()}"
    assert "resuming training" not in after and "Trainer.fit" not in after
    assert re.search(r"evaluation of \S+ resumes: [1-9]\d* of \d+ units done", after), sweep.tail()
    reference.wait(timeout=480)
    assert records(cell) == records(reference.cell())
