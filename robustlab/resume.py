"""Cell completion: a cell is done when its records, their outcomes and a DONE marker (written
after them) exist and agree.

A rerun skips complete cells. An unfinished cell keeps what its killed run saved (the training
checkpoints and the finished evaluation units, from which it resumes) and loses only records
that were not marked complete, so a sweep resumed after SIGKILL ends with exactly one set of
records per cell. Completeness is checked against the records themselves: a marker whose record
file is missing lines, cut mid-line or without its outcomes is said in one line and the cell is
redone, never trusted.
"""

from __future__ import annotations

import json
import shutil
import sys
import zipfile
from pathlib import Path

from robustlab.evaluation.units import STATE_DIR
from robustlab.results.outcomes import OUTCOMES_FILE, read_outcomes
from robustlab.results.store import RECORDS_FILE, read_records, write_json_atomic

DONE_FILE = "DONE.json"
CELL_LOCK = ".cell.lock"  # one run at a time per cell directory


def completed_records(out_dir: Path, cell_hash: str) -> list[dict] | None:
    """The records of a finished cell with this config hash, or None if it must (re)run."""
    marker = out_dir / DONE_FILE
    if not marker.is_file():
        return None
    try:
        done = json.loads(marker.read_text())
        if done.get("config_hash") != cell_hash:
            return None
        records = read_records(out_dir / RECORDS_FILE)
        if len(records) != int(done["n_records"]):
            raise ValueError(
                f"{out_dir / RECORDS_FILE} holds {len(records)} of {done['n_records']} records"
            )
        keyed = [r["outcomes_key"] for r in records if r.get("outcomes_key")]
        outcomes = read_outcomes(out_dir / OUTCOMES_FILE) if keyed else {}
        missing = [key for key in keyed if key not in outcomes]
        if missing:
            raise ValueError(f"{out_dir / OUTCOMES_FILE} lacks {len(missing)} records' outcomes")
    except (
        OSError,
        ValueError,
        KeyError,
        TypeError,
        AttributeError,
        EOFError,
        zipfile.BadZipFile,
    ) as err:
        print(f"robustlab: warning: {str(err).splitlines()[0]}; redoing {out_dir}", file=sys.stderr)
        return None
    return records


def discard_partial(out_dir: Path) -> None:
    """Remove records (and a stale marker) of an unfinished or differently configured cell, and
    temp files of atomic writes a kill interrupted; training checkpoints and finished evaluation
    units stay (they are keyed by what they depend on)."""
    for name in (DONE_FILE, RECORDS_FILE, OUTCOMES_FILE):
        (out_dir / name).unlink(missing_ok=True)
    if out_dir.is_dir():
        for tmp in out_dir.rglob(".*.tmp"):
            tmp.unlink(missing_ok=True)


def mark_complete(out_dir: Path, cell_hash: str, n_records: int) -> None:
    """Write the marker, then drop the evaluation units the records now hold."""
    write_json_atomic(out_dir / DONE_FILE, {"config_hash": cell_hash, "n_records": n_records})
    drop_units(out_dir)


def drop_units(out_dir: Path) -> None:
    """Remove a complete cell's evaluation units (also those a kill right after its marker
    left behind)."""
    shutil.rmtree(out_dir / STATE_DIR, ignore_errors=True)
