"""Per-example outcomes beside ``records.jsonl``: which test points each record counted clean and
robust, so any two records on the same points can be paired later without re-running anything.

``outcomes.npz`` holds, per record, three arrays named ``<key>.index`` (test indices, int64),
``<key>.clean`` and ``<key>.robust`` (bool; for a randomized predictor the headline protocol,
worst of k). ``key`` is the record's ``outcomes_key``: a hash of what identifies the record.
The file is rewritten atomically under the records' lock; it is read with ``allow_pickle=False``
(numpy arrays only: reading it runs no code).
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from filelock import FileLock

from robustlab.results.store import write_bytes_atomic

OUTCOMES_FILE = "outcomes.npz"
PER_EXAMPLE = "_per_example"  # the in-memory key a fresh record carries its arrays under
IDENTITY = ("config_hash", "defense", "inference", "attack", "threat_model", "norm", "eps", "seed")


@dataclass(frozen=True)
class Outcomes:
    """One record's per-example verdicts, sorted by test index."""

    index: np.ndarray
    clean: np.ndarray
    robust: np.ndarray


def outcomes_key(record: dict[str, Any]) -> str:
    """A stable key of the record's identity (config hash, defense, wrapper, attack, eps...)."""
    ident = json.dumps([record.get(k) for k in IDENTITY], sort_keys=True, default=str)
    return hashlib.sha256(ident.encode()).hexdigest()[:20]


def attach(record: dict[str, Any], index, clean, robust) -> dict[str, Any]:
    """Give a fresh record its per-example arrays (kept in memory until :func:`split`)."""
    record[PER_EXAMPLE] = Outcomes(*(np.asarray(_cpu(t)) for t in (index, clean, robust)))
    record["outcomes_key"] = outcomes_key(record)
    return record


def _cpu(t):
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else t


def split(records: list[dict[str, Any]]) -> dict[str, Outcomes]:
    """Remove the in-memory arrays from ``records``; return them by ``outcomes_key``."""
    return {r["outcomes_key"]: r.pop(PER_EXAMPLE) for r in records if PER_EXAMPLE in r}


def append_outcomes(path: str | Path, outcomes: dict[str, Outcomes]) -> None:
    """Add ``outcomes`` to the file at ``path`` (a later key replaces an earlier one), atomically
    and under the records' lock."""
    if not outcomes:
        return
    path = Path(path)
    with FileLock(str(path.with_name("records.jsonl")) + ".lock"):
        arrays = _load_arrays(path) if path.exists() else {}
        for key, o in outcomes.items():
            order = np.argsort(o.index, kind="stable")
            arrays[f"{key}.index"] = o.index[order].astype(np.int64)
            arrays[f"{key}.clean"] = o.clean[order].astype(bool)
            arrays[f"{key}.robust"] = o.robust[order].astype(bool)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        write_bytes_atomic(path, buffer.getvalue())


def _load_arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


def read_outcomes(path: str | Path) -> dict[str, Outcomes]:
    """Every record's outcomes in the file, by ``outcomes_key`` (cached while the file is
    unchanged: a report pairs many records of one file)."""
    path = Path(path)
    return _read(str(path), path.stat().st_mtime_ns)


@lru_cache(maxsize=64)
def _read(path: str, _mtime_ns: int) -> dict[str, Outcomes]:
    arrays = _load_arrays(Path(path))
    keys = {name.rsplit(".", 1)[0] for name in arrays}
    return {
        k: Outcomes(arrays[f"{k}.index"], arrays[f"{k}.clean"], arrays[f"{k}.robust"]) for k in keys
    }


def outcomes_of(record: dict[str, Any]) -> Outcomes:
    """The per-example outcomes of a record read by ``scan_records`` (its ``_source`` names the
    records file; ``outcomes.npz`` sits beside it). One-line errors when they are missing."""
    key, source = record.get("outcomes_key"), record.get("_source")
    if not key or not source:
        raise ValueError(
            f"record {record.get('defense')}/{record.get('attack')} has no per-example outcomes "
            "(written before they were kept): rerun its cell to pair it"
        )
    path = Path(source).with_name(OUTCOMES_FILE)
    if not path.exists():
        raise ValueError(f"{path} is missing: the per-example outcomes of {source} are gone")
    found = read_outcomes(path).get(key)
    if found is None:
        raise ValueError(f"{path} has no outcomes for record key {key}")
    return found
