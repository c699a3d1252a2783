"""Crash-safe storage of records (JSON lines) and small files: temp file, fsync, os.replace."""

from __future__ import annotations

import json
import os
import secrets
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from filelock import FileLock

from robustlab.results.record import validate_record

RECORDS_FILE = "records.jsonl"


def _create_temp(path: Path) -> tuple[int, Path]:
    """A new temp file ``.NAME.XXXXXXXX.tmp`` beside ``path``, opened for writing. Created with
    mode 0666 less the umask, as ``open`` would create ``path`` itself (``tempfile.mkstemp``'s
    0600 would make records, markers and checkpoints unreadable to the group)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"{path.parent}: no free temp file name for {path.name}")


@contextmanager
def atomic_writer(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary file handle whose content replaces ``path`` only when the block completes: a temp
    file beside it (the process's normal permissions), fsync, ``os.replace``. A crash leaves the
    old file or the new, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Atomically replace ``path`` with ``data``."""
    with atomic_writer(path) as fh:
        fh.write(data)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def append_records(path: str | os.PathLike, records: list[dict[str, Any]]) -> None:
    """Validate ``records`` and append them as JSON lines, atomically and under a file lock."""
    for rec in records:
        validate_record(rec)
    lines = "".join(json.dumps(rec, sort_keys=True) + "\n" for rec in records)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        old = path.read_bytes() if path.exists() else b""
        if old and not old.endswith(b"\n"):
            old += b"\n"
        write_bytes_atomic(path, old + lines.encode())


def read_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a JSON-lines file; blank lines are skipped, a corrupt line (not UTF-8, not JSON, not
    a JSON object) raises ValueError naming file:line."""
    out = []
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
                if not line.strip():
                    continue
                rec = json.loads(line)
            except UnicodeDecodeError as err:
                raise ValueError(f"{path}:{lineno}: corrupt record line ({err.reason})") from None
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{lineno}: corrupt record line ({err.msg})") from None
            if not isinstance(rec, dict):
                raise ValueError(f"{path}:{lineno}: corrupt record line (not a JSON object)")
            out.append(rec)
    return out


def scan_records(root: str | os.PathLike, skip_corrupt: bool = False) -> list[dict[str, Any]]:
    """Every record of every ``records.jsonl`` under ``root``, each tagged with ``_source``. A
    corrupt file raises ValueError naming file:line; with ``skip_corrupt`` none of its records
    are kept (a file cut mid-line is a killed cell's, not to be trusted) and one line on stderr
    names it instead, so the intact cells can still be read."""
    out = []
    for path in sorted(Path(root).rglob(RECORDS_FILE)):
        try:
            records = read_records(path)
        except ValueError as err:
            if not skip_corrupt:
                raise
            print(
                f"robustlab: skipping {err}; its cell is redone on the next run of its sweep",
                file=sys.stderr,
            )
            continue
        for rec in records:
            rec["_source"] = str(path)
            out.append(rec)
    return out
