"""Cell completion: a cell is done when its records and a DONE marker (written after them) exist.

A rerun skips complete cells; a cell killed before its marker is redone from a clean slate, so a
sweep resumed after SIGKILL ends with exactly one set of records per cell.
"""

from __future__ import annotations

import json
from pathlib import Path

from robustlab.results.outcomes import OUTCOMES_FILE
from robustlab.results.store import RECORDS_FILE, read_records, write_json_atomic

DONE_FILE = "DONE.json"


def completed_records(out_dir: Path, cell_hash: str) -> list[dict] | None:
    """The records of a finished cell with this config hash, or None if it must (re)run."""
    marker = out_dir / DONE_FILE
    if not marker.is_file():
        return None
    done = json.loads(marker.read_text())
    if done.get("config_hash") != cell_hash:
        return None
    return read_records(out_dir / RECORDS_FILE)


def discard_partial(out_dir: Path) -> None:
    """Remove records (and a stale marker) of an unfinished or differently configured cell."""
    for name in (DONE_FILE, RECORDS_FILE, OUTCOMES_FILE):
        (out_dir / name).unlink(missing_ok=True)


def mark_complete(out_dir: Path, cell_hash: str, n_records: int) -> None:
    write_json_atomic(out_dir / DONE_FILE, {"config_hash": cell_hash, "n_records": n_records})
