"""Termination signals end a run at once, with a non-zero status, and lose nothing saved.

SLURM sends SIGTERM on preemption, ``scontrol requeue``, ``scancel`` and at a time limit; a user
sends SIGINT with Ctrl-C. A run's state is on disk as it goes (every epoch's
``checkpoints/last.ckpt``, every finished evaluation unit, records and markers written
atomically), so the handler only says so in one line and exits with 128 + the signal number; the
rerun (or the job SLURM requeues) resumes. SIGUSR2, submitit's checkpoint-and-requeue signal
before a time limit, is left to submitit.
"""

from __future__ import annotations

import signal
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
    raise SystemExit(128 + signum)


def exit_on_termination() -> None:
    """Install the handler for SIGTERM and SIGINT (main thread only, as Python requires)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in HANDLED:
        signal.signal(signum, _exit_on_signal)
