"""What ``hydra/launcher=slurm`` adds to hydra-submitit-launcher's SLURM launcher: job states on
clusters without accounting, and a line in a requeued job's log.

How requeue works (submitit 1.5.4, hydra-submitit-launcher 1.2.0). Each cell is a task of a SLURM
job array submitted with ``--signal=USR2@signal_delay_s``: SLURM sends USR2 to the job's tasks that
long before its time limit (up to ~30 s earlier, as slurmctld checks every 30 s). submitit's
handler in the job calls the launcher's ``checkpoint``, which returns the same call (the same
cell), pickles it over the job's submission, runs ``scontrol requeue <job>`` and exits; SLURM
starts the job again and robustlab resumes the cell from its saved state (training from
``checkpoints/last.ckpt``, evaluation from its saved batches). A USR2 in the last 10 minutes of the
limit (the last 20% for limits over 50 minutes; so always for limits up to 10 minutes) is a
time-out and uses up one of ``max_num_timeout`` requeues, after which the cell fails; an earlier
one counts as preemption and requeues without limit. SIGTERM (what SLURM sends on ``scancel``,
``scontrol requeue``, preemption and at the time limit itself) submitit only logs ("Bypassing
signal SIGTERM"): the job dies by SIGKILL after the cluster's KillWait (GraceTime on preemption)
without writing a result, and SLURM requeues it if its policy says so; a requeued job runs the
same pickled call again. The launcher waits for a job while SLURM lists it as pending, requeued or
running.

Accounting. submitit's SlurmJob asks ``sacct`` for the states of jobs without a result file. Where
accounting is off sacct fails on every poll ("Bypassing sacct error ..., status may be
inaccurate" each time), the state stays UNKNOWN, and a job that ended without a result (cancelled,
preempted without requeue, a failed node) leaves the launcher waiting forever. QueueWatcher asks
sacct once; where that fails it reads the states from ``squeue`` from then on (one line on the
log), and a job that has left the queue without a result counts as finished: its cell fails with
submitit's "has not produced any output" error and the end of its log.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Iterable, Sequence
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from submitit.slurm.slurm import SlurmInfoWatcher, SlurmJob, read_job_id

log = logging.getLogger(__name__)

# The state a job gets once the queue no longer lists it (it ended; result file or not).
GONE = "GONE"

# squeue states of live jobs, in the vocabulary submitit's InfoWatcher.is_done knows (it counts
# every state outside READY, PENDING, RUNNING, UNKNOWN, REQUEUED, COMPLETING, PREEMPTED as done).
LIVE_STATES = {
    "CONFIGURING": "RUNNING",
    "RESIZING": "RUNNING",
    "SIGNALING": "RUNNING",
    "STAGE_OUT": "RUNNING",
    "SUSPENDED": "RUNNING",
    "STOPPED": "RUNNING",
    "REQUEUE_FED": "REQUEUED",
    "REQUEUE_HOLD": "REQUEUED",
    "SPECIAL_EXIT": "REQUEUED",
    "RESV_DEL_HOLD": "PENDING",
}

SQUEUE_FORMAT = "%i|%T"


def squeue_command(job_ids: Iterable[str]) -> list[str]:
    """squeue listing every task of these jobs (arrays one task a line), finished ones included
    while slurmctld still holds them (MinJobAge)."""
    mains = sorted({str(j).split("_")[0] for j in job_ids})
    return [
        "squeue",
        "--noheader",
        "--array",
        "--states=all",
        f"--format={SQUEUE_FORMAT}",
        f"--jobs={','.join(mains)}",
    ]


def queue_states(text: str, job_ids: Iterable[str]) -> dict[str, dict[str, str]]:
    """``{job_id: {"JobID": ..., "State": ...}}`` for each of ``job_ids`` (``123`` or ``123_4``)
    from the output of ``squeue_command``: live states in submitit's vocabulary, terminal ones as
    squeue says them, and GONE for a job the queue does not list."""
    listed: dict[str, str] = {}
    for line in text.splitlines():
        job_id, _, state = line.strip().partition("|")
        words = state.split()
        if not job_id or not words:
            continue
        state = LIVE_STATES.get(words[0], words[0])
        try:
            groups = read_job_id(job_id)
        except ValueError:
            continue
        for group in groups:
            if len(group) >= 3:  # a range of array tasks not yet expanded: 123_[2-5%2]
                for index in range(int(group[1]), int(group[2]) + 1):
                    listed[f"{group[0]}_{index}"] = state
            else:
                listed["_".join(group)] = state
    return {j: {"JobID": j, "State": listed.get(j, GONE)} for j in job_ids}


class QueueWatcher(SlurmInfoWatcher):
    """submitit's sacct watcher, falling back to squeue for good when the first sacct call fails."""

    def __init__(self, delay_s: int = 60) -> None:
        super().__init__(delay_s)
        self.source: str | None = None  # "sacct" or "squeue", decided by the first poll
        self._warned = False

    def update(self) -> None:
        pending = sorted(self._registered - self._finished)
        if not pending:
            return
        self._num_calls += 1
        info = self._poll(pending)
        if info is not None:
            self._info_dict.update(info)
        self._last_status_check = time.time()
        for job_id in pending:
            if self.is_done(job_id, mode="cache"):
                self._finished.add(job_id)

    def _poll(self, job_ids: Sequence[str]) -> dict[str, dict[str, str]] | None:
        if self.source != "squeue":
            command = self._make_command()
            try:
                out = subprocess.run(command, capture_output=True, check=True, timeout=60).stdout
            except (OSError, subprocess.SubprocessError) as err:
                if self.source == "sacct":  # it worked before: a passing failure
                    self._warn_once(f"sacct failed ({_reason(err)}); job states may lag")
                    return None
                self.source = "squeue"
                log.info("sacct unavailable (%s): job states from squeue", _reason(err))
            else:
                self.source = "sacct"
                return self.read_info(out)
        try:
            proc = subprocess.run(
                squeue_command(job_ids), capture_output=True, text=True, timeout=60
            )
        except (OSError, subprocess.SubprocessError) as err:
            self._warn_once(f"squeue failed ({_reason(err)}); job states may lag")
            return None
        if proc.returncode != 0:
            # one job id that slurmctld no longer holds: squeue says so and lists nothing
            if "Invalid job id" not in proc.stderr:
                self._warn_once(f"squeue failed ({proc.stderr.strip()}); job states may lag")
                return None
            return queue_states("", job_ids)
        return queue_states(proc.stdout, job_ids)

    def _warn_once(self, message: str) -> None:
        if not self._warned:
            self._warned = True
            log.warning(message)


def _reason(err: BaseException) -> str:
    if isinstance(err, subprocess.CalledProcessError):
        text = err.stderr.decode(errors="replace") if isinstance(err.stderr, bytes) else err.stderr
        return (text or "").strip() or f"exit status {err.returncode}"
    return str(err)


class QueueWatch(Callback):
    """The Hydra callback that ``hydra/launcher=slurm`` adds (``hydra.callbacks.slurm_queue_watch``).

    Hydra instantiates launchers only from the ``hydra_plugins`` package, so robustlab cannot
    name a launcher subclass of its own as ``_target_``; this callback instead gives submitit's
    SlurmJob a QueueWatcher while a multirun waits on its jobs (and gives the old watcher back
    after it), in the process that submits them. In a job it says on stdout which run of the
    job this is when SLURM has requeued it."""

    def __init__(self, delay_s: int = 60) -> None:
        self.delay_s = delay_s
        self._saved: SlurmInfoWatcher | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not isinstance(SlurmJob.watcher, QueueWatcher):
            self._saved = SlurmJob.watcher
            SlurmJob.watcher = QueueWatcher(delay_s=self.delay_s)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self._saved is not None:
            SlurmJob.watcher, self._saved = self._saved, None

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        restarts = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
        if restarts:
            print(
                f"robustlab: SLURM job {slurm_job_id()} requeued {restarts} time(s): "
                "running the cell again",
                flush=True,
            )


def slurm_job_id() -> str:
    """The id squeue and scontrol know this job by (``123_4`` for a task of an array)."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID", "?")
