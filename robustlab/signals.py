"""Termination signals end a run at once, with a non-zero status, and lose nothing saved.

SLURM sends SIGTERM on preemption, ``scontrol requeue``, ``scancel`` and at a time limit; a user
sends SIGINT with Ctrl-C. A run's state is on disk as it goes (every epoch's
``checkpoints/last.ckpt``, every finished evaluation unit, records and markers written
atomically), so the handler only says so in one line and exits with 128 + the signal number; the
rerun (or the job SLURM requeues) resumes.

In a SLURM batch job that SIGTERM ends because of its time limit (``scontrol`` says
``Reason=TimeLimit``), the handler also requeues the job, at most ``ROBUSTLAB_SLURM_REQUEUES``
times (default 3; ``SLURM_RESTART_COUNT`` counts them), so ``sbatch --wrap 'robustlab ...'``
resumes by itself. Preemption and ``scontrol requeue`` are requeued by SLURM, ``scancel`` is
not requeued. Under hydra/launcher=slurm, submitit owns the time limit: its SIGUSR2 arrives
``signal_delay_s`` before, requeues up to ``max_num_timeout`` times, and is left to it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading

HANDLED = (signal.SIGTERM, signal.SIGINT)


def _exit_on_signal(signum: int, _frame) -> None:
    name = signal.Signals(signum).name
    print(
        f"robustlab: {name} received: stopping; finished epochs and evaluation units are saved, "
        "rerun the same command to resume",
        file=sys.stderr,
        flush=True,
    )
    if signum == signal.SIGTERM:
        requeue_at_time_limit()
    raise SystemExit(128 + signum)


def requeue_at_time_limit() -> None:
    """In a plain SLURM batch job ended by its time limit, ``scontrol requeue`` it (see above)."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job or os.environ.get("SUBMITIT_EXECUTOR") or int(os.environ.get("SLURM_PROCID", 0)):
        return
    restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
    allowed = int(os.environ.get("ROBUSTLAB_SLURM_REQUEUES", "3"))
    try:
        shown = subprocess.run(
            ["scontrol", "show", "job", job], capture_output=True, text=True, timeout=20
        ).stdout
        if not re.search(r"\bReason=TimeLimit\b", shown):
            return
        if restarts >= allowed:
            print(
                f"robustlab: SLURM job {job} hit its time limit after {restarts} requeue(s) "
                f"(ROBUSTLAB_SLURM_REQUEUES={allowed}); not requeued",
                file=sys.stderr,
            )
            return
        done = subprocess.run(["scontrol", "requeue", job], capture_output=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as err:
        print(f"robustlab: SLURM job {job}: could not requeue ({err})", file=sys.stderr)
        return
    if done.returncode == 0:
        print(f"robustlab: SLURM job {job} hit its time limit: requeued", file=sys.stderr)


def exit_on_termination() -> None:
    """Install the handler for SIGTERM and SIGINT (main thread only, as Python requires)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in HANDLED:
        signal.signal(signum, _exit_on_signal)
