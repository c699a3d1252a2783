"""The job watcher of hydra/launcher=slurm on a cluster without accounting, without a cluster: sacct
fails once and squeue answers from then on (one log line, no warning per poll); a job gone from
the queue without a result ends its wait with an error instead of waiting forever. Fast: it runs
in plain `make test` (not marked slurm)."""

from __future__ import annotations

import logging
import subprocess
import time

import pytest
from hydra import compose, initialize_config_dir
from submitit.core.utils import UncompletedJobError
from submitit.slurm.slurm import SlurmInfoWatcher, SlurmJob, _make_sbatch_string

from robustlab.launchers.slurm import (
    GONE,
    QueueWatch,
    QueueWatcher,
    queue_states,
    squeue_command,
)
from robustlab.paths import CONF_DIR

SACCT_OFF = "Slurm accounting storage is disabled\n"


def test_queue_states_reads_array_tasks_ranges_and_live_states():
    text = "\n".join(
        [
            "12_0|RUNNING",
            "12_1|COMPLETED",
            "12_[3-5%2]|PENDING",
            "12_6|CONFIGURING",
            "12_7|REQUEUE_HOLD",
            "12_8|COMPLETING",
            "13|TIMEOUT",
            "",
            "garbage",
        ]
    )
    ids = [f"12_{i}" for i in range(10)] + ["13", "14"]
    states = {j: info["State"] for j, info in queue_states(text, ids).items()}
    assert states == {
        "12_0": "RUNNING",
        "12_1": "COMPLETED",
        "12_2": GONE,  # not listed: left the queue
        "12_3": "PENDING",
        "12_4": "PENDING",
        "12_5": "PENDING",
        "12_6": "RUNNING",  # a live state submitit does not know would count as done
        "12_7": "REQUEUED",
        "12_8": "COMPLETING",
        "12_9": GONE,
        "13": "TIMEOUT",
        "14": GONE,
    }
    assert queue_states(text, ["12_0"])["12_0"] == {"JobID": "12_0", "State": "RUNNING"}


def test_squeue_command_asks_each_array_once_with_finished_tasks():
    cmd = squeue_command(["12_1", "12_0", "9"])
    assert cmd[0] == "squeue"
    assert {"--noheader", "--array", "--states=all", "--format=%i|%T"} <= set(cmd)
    assert cmd[-1] == "--jobs=12,9"


class FakeSlurm:
    """subprocess.run for sacct (accounting off) and squeue, counting calls by program."""

    def __init__(self, squeue_out: str = "", squeue_rc: int = 0, squeue_err: str = ""):
        self.squeue_out, self.squeue_rc, self.squeue_err = squeue_out, squeue_rc, squeue_err
        self.calls: list[str] = []

    def __call__(self, cmd, **kwargs):
        self.calls.append(cmd[0])
        if cmd[0] == "sacct":
            raise subprocess.CalledProcessError(1, cmd, output=b"", stderr=SACCT_OFF.encode())
        assert cmd[0] == "squeue", cmd
        return subprocess.CompletedProcess(cmd, self.squeue_rc, self.squeue_out, self.squeue_err)


@pytest.fixture
def fake_slurm(monkeypatch):
    fake = FakeSlurm()
    monkeypatch.setattr(subprocess, "run", fake)
    return fake


def test_watcher_falls_back_to_squeue_once_and_quietly(fake_slurm, caplog):
    fake_slurm.squeue_out = "40_0|RUNNING\n40_1|PENDING\n"
    watcher = QueueWatcher(delay_s=60)
    with caplog.at_level(logging.INFO):
        for _ in range(5):
            assert not watcher.is_done("40_0", mode="force")
            time.sleep(0.002)  # submitit ignores forced polls less than 1 ms apart
            assert not watcher.is_done("40_1", mode="force")
            time.sleep(0.002)
    assert watcher.source == "squeue"
    assert fake_slurm.calls.count("sacct") == 1
    assert fake_slurm.calls.count("squeue") == 10
    messages = [r.getMessage() for r in caplog.records]
    assert [m for m in messages if "sacct" in m] == [
        "sacct unavailable (Slurm accounting storage is disabled): job states from squeue"
    ]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    # the job leaves the queue (its result file, if any, is read by the job itself)
    fake_slurm.squeue_out = "40_1|RUNNING\n"
    time.sleep(0.002)
    assert watcher.is_done("40_0", mode="force")
    assert watcher.get_state("40_0", mode="cache") == GONE
    assert not watcher.is_done("40_1", mode="force")


def test_a_job_no_longer_known_to_slurmctld_counts_as_gone(fake_slurm):
    fake_slurm.squeue_rc, fake_slurm.squeue_err = (
        1,
        "slurm_load_jobs error: Invalid job id specified",
    )
    watcher = QueueWatcher()
    assert watcher.is_done("41", mode="force")


def test_a_failing_squeue_warns_once_and_keeps_waiting(fake_slurm, caplog):
    fake_slurm.squeue_rc, fake_slurm.squeue_err = 1, "slurm_load_jobs error: Unable to contact"
    watcher = QueueWatcher()
    with caplog.at_level(logging.INFO):
        for _ in range(3):
            assert not watcher.is_done("42_0", mode="force")
            time.sleep(0.002)
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1


def test_a_job_gone_without_a_result_fails_instead_of_waiting_forever(fake_slurm, tmp_path):
    """What the launcher does with each job (submitit's SlurmJob.results) while QueueWatch is on."""
    (tmp_path / "43_0").mkdir()
    watch = QueueWatch()
    original = SlurmJob.watcher
    watch.on_multirun_start(config=None)
    try:
        assert isinstance(SlurmJob.watcher, QueueWatcher)
        job = SlurmJob(folder=tmp_path / "%j", job_id="43_0")
        job._results_timeout_s = 0
        with pytest.raises(UncompletedJobError, match="has not produced any output"):
            job.results()
    finally:
        watch.on_multirun_end(config=None)
    assert SlurmJob.watcher is original
    assert type(SlurmJob.watcher) is SlurmInfoWatcher


def test_slurm_launcher_config_is_requeue_ready():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=["hydra/launcher=slurm", "hydra.launcher.max_num_timeout=5"],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert launcher.max_num_timeout == 5 and launcher.signal_delay_s == 120
    assert cfg.hydra.callbacks.slurm_queue_watch._target_ == "robustlab.launchers.slurm.QueueWatch"
    sbatch = _make_sbatch_string(
        command="true",
        folder="/tmp/x/%j",
        signal_delay_s=launcher.signal_delay_s,
        additional_parameters=dict(launcher.additional_parameters),
    )
    assert "#SBATCH --signal=USR2@120" in sbatch.splitlines()
    assert "#SBATCH --requeue" in sbatch.splitlines()
