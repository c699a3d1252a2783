"""Hostile or damaged files on disk (issue #16): a CIFAR pickle that would run code, output files'
permissions, and a record file cut mid-line in the report."""

from __future__ import annotations

import os
import pickle
import shlex
import stat

import numpy as np
import pytest
import torch
from data_fixtures import Hostile, write_cifar
from records_fixture import make_record

from robustlab.checkpointing import save_atomic
from robustlab.data.cifar import read_cifar_batch, read_cifar_batches
from robustlab.results.report import main as report_main
from robustlab.results.store import (
    RECORDS_FILE,
    append_records,
    read_records,
    scan_records,
    write_json_atomic,
)

# ---- a. the CIFAR reader unpickles only plain data ------------------------------------------------


@pytest.mark.parametrize("payload", ["os.system", "open"])
def test_cifar_reader_refuses_a_hostile_pickle_without_running_it(tmp_path, payload):
    marker = tmp_path / "pwned"
    hostile = (
        Hostile(os.system, f"touch {shlex.quote(str(marker))}")
        if payload == "os.system"
        else Hostile(open, str(marker), "w")
    )
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": hostile, b"labels": [0]}))
    with pytest.raises(ValueError) as err:
        read_cifar_batch(path, b"labels")
    message = str(err.value)
    assert "\n" not in message and str(path) in message and "refused global" in message
    assert ("system" if payload == "os.system" else "open") in message
    assert not marker.exists()


def test_cifar_reader_reads_real_format_batches(tmp_path):
    root = write_cifar(tmp_path, n_per_batch=3)
    folder = root / "cifar-10-batches-py"
    x, y = read_cifar_batches([folder / f"data_batch_{i}" for i in (1, 2)], b"labels")
    assert x.shape == (6, 3, 32, 32) and x.dtype == torch.uint8
    assert y.tolist() == [0, 1, 2, 3, 4, 5]


def test_cifar_reader_reads_python2_protocol2_pickles(tmp_path):
    """The official files are python 2 pickles (protocol 2, numpy.core module names, str keys
    read back as bytes): the restricted unpickler still reads them."""
    data = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072) % 251
    blob = pickle.dumps({b"batch_label": b"x", b"data": data, b"labels": [3, 7]}, protocol=2)
    path = tmp_path / "test_batch"
    path.write_bytes(blob.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    x, y = read_cifar_batch(path, b"labels")
    assert y.tolist() == [3, 7] and torch.equal(x.reshape(2, -1), torch.from_numpy(data))


# ---- c. output files get the process's normal permissions --------------------------------------


@pytest.fixture
def umask():
    """Set the process umask for one test, restoring it after."""
    old = os.umask(0o022)
    try:
        yield os.umask
    finally:
        os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize(
    "mask, expected", [(0o022, 0o644), (0o027, 0o640)], ids=["umask022", "umask027"]
)
def test_records_markers_and_checkpoints_follow_the_umask(tmp_path, umask, mask, expected):
    umask(mask)
    records = tmp_path / RECORDS_FILE
    append_records(records, [make_record()])
    append_records(records, [make_record(attack="fgsm")])  # rewritten: still the normal mode
    write_json_atomic(tmp_path / "DONE.json", {"records": 2})
    save_atomic({"w": torch.zeros(2)}, tmp_path / "checkpoints" / "best.ckpt")
    for path in (records, tmp_path / "DONE.json", tmp_path / "checkpoints" / "best.ckpt"):
        assert mode(path) == expected, f"{path.name}: {oct(mode(path))}"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []


# ---- d. a record file cut mid-line ---------------------------------------------------------------


def cut_mid_line(path) -> int:
    """Cut ``path`` in the middle of its last line; the number of that line."""
    data = path.read_bytes()
    last = data.rstrip(b"\n").rfind(b"\n") + 1
    path.write_bytes(data[: last + (len(data) - last) // 2])
    return data[:last].count(b"\n") + 1


def two_cells(tmp_path):
    """Cell ``a`` intact (erm), cell ``b`` (pgd_at) with its records file cut mid-line."""
    good = tmp_path / "a" / RECORDS_FILE
    bad = tmp_path / "b" / RECORDS_FILE
    append_records(good, [make_record(attack="pgd", robust_acc=0.125)])
    append_records(
        bad,
        [
            make_record(config_hash="h-at", defense="pgd_at", attack="pgd", robust_acc=0.5),
            make_record(config_hash="h-at", defense="pgd_at", attack="fgsm", robust_acc=0.625),
        ],
    )
    return good, bad, cut_mid_line(bad)


def test_scan_skips_a_corrupt_file_in_one_line_when_asked(tmp_path, capsys):
    good, bad, line = two_cells(tmp_path)
    with pytest.raises(ValueError, match=rf"{bad}:{line}"):
        scan_records(tmp_path)  # strict by default
    with pytest.raises(ValueError, match=rf"{bad}:{line}"):
        read_records(bad)  # and read_records stays strict
    found = scan_records(tmp_path, skip_corrupt=True)
    assert [(r["defense"], r["_source"]) for r in found] == [("erm", str(good))]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{bad}:{line}" in err and "redone" in err


@pytest.mark.parametrize(
    "tail", [b"\xff\xfe\x00garbage\n", b"\x00\x00\x00\x00\n", b"[1, 2]\n", b"12\n"]
)
def test_any_damaged_line_names_file_and_line(tmp_path, capsys, tail):
    """Garbage bytes (not UTF-8), NULs (a filesystem's unwritten blocks after a crash) and JSON
    that is not an object are each one corrupt line, never a traceback elsewhere."""
    path = tmp_path / "c" / RECORDS_FILE
    append_records(path, [make_record()])
    path.write_bytes(path.read_bytes() + tail)
    with pytest.raises(ValueError, match=rf"{path}:2: corrupt record line"):
        read_records(path)
    assert scan_records(tmp_path, skip_corrupt=True) == []
    assert f"{path}:2" in capsys.readouterr().err


def test_report_shows_intact_cells_and_names_the_corrupt_file(tmp_path, capsys):
    good, bad, line = two_cells(tmp_path)
    report_main([str(tmp_path)])
    captured = capsys.readouterr()
    assert "12.5" in captured.out and "erm" in captured.out
    assert "pgd_at" not in captured.out  # a cut file's cell is not trusted, not even its first line
    corrupt = [line_ for line_ in captured.err.splitlines() if str(bad) in line_]
    assert len(corrupt) == 1 and f"{bad}:{line}" in corrupt[0] and "redone" in corrupt[0]
    assert "12.5" in (tmp_path / "report.md").read_text()


def test_report_with_only_a_corrupt_file_exits_2(tmp_path, capsys):
    bad = tmp_path / "b" / RECORDS_FILE
    append_records(bad, [make_record(), make_record(attack="fgsm")])
    line = cut_mid_line(bad)
    with pytest.raises(SystemExit) as exc:
        report_main([str(tmp_path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"{bad}:{line}" in err and "no records found" in err
