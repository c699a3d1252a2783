"""A plain ``sbatch`` job (no submitit) ended by its time limit requeues itself through
robustlab's SIGTERM handler, and the requeued job resumes training where it stopped. (The cell is
longer than any number of attempts, so the test does not depend on this machine's speed; the
submitit test shows a cell finishing after its requeues.)"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from slurm_helpers import PARTITION, ROOT

pytestmark = pytest.mark.slurm


def test_sbatch_job_past_its_time_limit_requeues_itself_and_finishes(slurm, tmp_path):
    out = tmp_path / "cell"
    log = tmp_path / "job.log"
    cell = (
        f"cd {ROOT} && ROBUSTLAB_SLURM_REQUEUES=5 {sys.executable} -m robustlab defense=pgd_at trainer.max_epochs=100000 "
        "dataset.train_limit=600 eval.n_examples=64 'attack=[fgsm]' torch_threads=1 "
        f"trainer.enable_progress_bar=false hydra.run.dir={out} cache.dir={tmp_path / 'cache'}"
    )
    submitted = subprocess.run(
        [
            "sbatch",
            "--parsable",
            f"--partition={PARTITION}",
            "--time=1",
            "--requeue",
            "--open-mode=append",
            "--cpus-per-task=1",
            "--mem=1G",
            f"--output={log}",
            f"--wrap={cell}",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    job = submitted.stdout.strip().split(";")[0]
    deadline = time.monotonic() + 400
    resumed = "robustlab: resuming training of pgd_at at epoch"
    try:
        while time.monotonic() < deadline:
            if log.exists() and resumed in log.read_text():
                break
            time.sleep(5)
        text = log.read_text() if log.exists() else ""
    finally:
        subprocess.run(["scancel", job])
    assert f"robustlab: SLURM job {job} hit its time limit: requeued" in text, text[-3000:]
    assert resumed in text, text[-3000:]
