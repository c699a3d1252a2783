"""Run robustlab in this process, instrumented to die by SIGKILL at a chosen moment.

    python tests/kill_driver.py KILL [robustlab arguments...]

KILL is ``0`` (never), an integer K (the K-th event of this process) or ``KIND@CELL#N`` (the N-th
event of kind KIND in the cell whose directory is named CELL). Events, in the order a cell meets
them:

- ``cell_start``: a cell begins (under its lock, before its completeness is checked);
- ``epoch_start``: a training epoch starts (after the resume state is restored);
- ``write_<what>_before`` / ``write_<what>_after``: an atomic write (``atomic_writer``) has its temp
  file complete, just before / after its ``os.replace``; ``<what>`` is ``ckpt_last``,
  ``ckpt_best``, ``cache``, ``unit``, ``records``, ``outcomes``, ``done`` or ``other``. Killed
  before, the temp file ``.NAME.XXXX.tmp`` is left behind;
- ``unit_start`` / ``unit_computed``: an evaluation unit not stored yet starts / has its result,
  before its file is written;
- ``table``: a cell's result table is printed (records and outcomes are written, the marker not);
- ``sweep_end``: ``robustlab.run.main()`` returned.

With ``KILL_JOURNAL=PATH`` every event is appended to PATH as ``event <n> <kind> <cell> <detail>``,
and so is the work done: ``epoch_start <cell> <epoch>`` and ``unit_start <cell> <unit>`` (one line
per epoch or evaluation unit begun, so a test can count recomputation), ``killed <n>`` just before
dying and ``events_total <n>`` at a normal end.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytorch_lightning as pl

import robustlab.evaluation.evaluator as evaluator_module
import robustlab.results.store as store
import robustlab.run as run_module
import robustlab.training as training_module
from robustlab.evaluation.units import STATE_DIR, UnitStore, fingerprint


class Killer:
    """Counts events, journals them, and kills this process at the chosen one."""

    def __init__(self, spec: str, journal: str | None):
        self.count = 0
        self.per_kind: dict[tuple[str, str], int] = {}
        self.cell = "-"
        self.journal_path = journal
        self.kill_at: int | None = None
        self.kill_kind: tuple[str, str, int] | None = None
        if "@" in spec:
            kind, rest = spec.split("@", 1)
            cell, n = rest.rsplit("#", 1)
            self.kill_kind = (kind, cell, int(n))
        elif int(spec) > 0:
            self.kill_at = int(spec)

    def journal(self, line: str) -> None:
        if self.journal_path:
            with open(self.journal_path, "a") as fh:
                fh.write(line + "\n")

    def event(self, kind: str, detail: str = "") -> None:
        self.count += 1
        key = (kind, self.cell)
        self.per_kind[key] = self.per_kind.get(key, 0) + 1
        self.journal(f"event {self.count} {kind} {self.cell} {detail or '-'}")
        due = self.count == self.kill_at or (
            self.kill_kind is not None and self.kill_kind == (*key, self.per_kind[key])
        )
        if due:
            self.journal(f"killed {self.count}")
            sys.stdout.flush()
            sys.stderr.flush()
            os.kill(os.getpid(), signal.SIGKILL)


KILLER = Killer(sys.argv[1] if len(sys.argv) > 1 else "0", os.environ.get("KILL_JOURNAL"))


# --- cells -------------------------------------------------------------------------------------
_execute_unlocked = run_module.execute_unlocked


def execute_unlocked(plan):
    KILLER.cell = Path(plan.output_dir).name
    KILLER.event("cell_start")
    return _execute_unlocked(plan)


run_module.execute_unlocked = execute_unlocked


# --- training epochs ---------------------------------------------------------------------------
class EpochProbe(pl.Callback):
    def on_train_epoch_start(self, trainer, pl_module) -> None:
        KILLER.journal(f"epoch_start {KILLER.cell} {trainer.current_epoch}")
        KILLER.event("epoch_start", str(trainer.current_epoch))


_checkpoint_callbacks = training_module.checkpoint_callbacks


def checkpoint_callbacks(dirpath, monitor):
    return [*_checkpoint_callbacks(dirpath, monitor), EpochProbe()]


training_module.checkpoint_callbacks = checkpoint_callbacks


# --- evaluation units --------------------------------------------------------------------------
_unit_run = UnitStore.run


def unit_run(self, unit, compute):
    if self.directory is None:  # a validation subset: nothing kept, nothing to resume
        return _unit_run(self, unit, compute)
    name = f"{self.directory.parent.name[:8]}/{self.directory.name[:8]}/" + fingerprint(
        list(map(str, unit))
    )

    def probed():
        KILLER.journal(f"unit_start {KILLER.cell} {name}")
        KILLER.event("unit_start", name)
        result = compute()
        KILLER.event("unit_computed", name)
        return result

    return _unit_run(self, unit, probed)


UnitStore.run = unit_run


# --- atomic writes -----------------------------------------------------------------------------
_WRITER_CODE = store.atomic_writer.__wrapped__.__code__
_replace = os.replace


def what(dst: Path) -> str:
    if dst.name == "last.ckpt":
        return "ckpt_last"
    if dst.name == "best.ckpt":
        return "ckpt_best"
    if dst.name == store.RECORDS_FILE:
        return "records"
    if dst.name == "outcomes.npz":
        return "outcomes"
    if dst.name == "DONE.json":
        return "done"
    if STATE_DIR in dst.parts:
        return "unit"
    if dst.suffix == ".pt":
        return "cache"
    return "other"


def replace(src, dst, *args, **kwargs):
    if sys._getframe(1).f_code is not _WRITER_CODE:
        return _replace(src, dst, *args, **kwargs)
    dst_path = Path(dst)
    kind = what(dst_path)
    detail = dst_path.name
    if kind == "unit":  # named as unit_start names it: scope dirs, then the unit's hash
        scopes = f"{dst_path.parent.parent.name[:8]}/{dst_path.parent.name[:8]}"
        detail = f"{scopes}/{dst_path.stem}"
    KILLER.event(f"write_{kind}_before", detail)
    _replace(src, dst, *args, **kwargs)
    KILLER.event(f"write_{kind}_after", detail)
    return None


os.replace = replace


# --- the cell's table (records and outcomes written, marker not yet) ---------------------------
_format_cell_table = evaluator_module.format_cell_table


def format_cell_table(*args, **kwargs):
    KILLER.event("table")
    return _format_cell_table(*args, **kwargs)


evaluator_module.format_cell_table = format_cell_table


def main() -> None:
    sys.argv = [sys.argv[0], *sys.argv[2:]]
    try:
        run_module.main()
    except SystemExit as err:
        if err.code not in (0, None):
            raise
    KILLER.cell = "-"
    KILLER.event("sweep_end")
    KILLER.journal(f"events_total {KILLER.count}")


if __name__ == "__main__":
    main()
