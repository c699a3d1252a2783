"""Atomic record storage, reading, scanning, and library versions."""

from __future__ import annotations

import json
import os
from importlib import metadata

import pytest
from records_fixture import make_record

from robustlab.results import store, versions


def test_append_twice_keeps_order(tmp_path):
    path = tmp_path / "records.jsonl"
    store.append_records(path, [make_record(attack="fgsm")])
    store.append_records(path, [make_record(attack="pgd"), make_record(attack="cw")])
    assert [r["attack"] for r in store.read_records(path)] == ["fgsm", "pgd", "cw"]


def test_append_rejects_missing_field(tmp_path):
    rec = make_record()
    del rec["robust_acc"]
    with pytest.raises(ValueError, match="robust_acc"):
        store.append_records(tmp_path / "records.jsonl", [rec])
    assert not (tmp_path / "records.jsonl").exists()


def test_crash_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "records.jsonl"
    store.append_records(path, [make_record()])
    before = path.read_bytes()

    def crash(*_args):
        raise OSError("simulated crash")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated"):
        store.append_records(path, [make_record(attack="fgsm")])
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["records.jsonl", "records.jsonl.lock"]


def test_write_json_atomic_roundtrip(tmp_path):
    path = tmp_path / "deep" / "marker.json"
    store.write_json_atomic(path, {"done": True})
    store.write_json_atomic(path, {"done": False})
    assert json.loads(path.read_text()) == {"done": False}
    assert [p.name for p in path.parent.iterdir()] == ["marker.json"]


def test_read_corrupt_line_names_line(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text(json.dumps(make_record()) + "\n\n{not json\n")
    with pytest.raises(ValueError, match=r"records\.jsonl:3"):
        store.read_records(path)


def test_scan_finds_nested_files(tmp_path):
    store.append_records(tmp_path / "x" / "records.jsonl", [make_record(attack="a")])
    store.append_records(tmp_path / "y" / "z" / "records.jsonl", [make_record(attack="b")])
    (tmp_path / "other.jsonl").write_text("ignored\n")
    found = store.scan_records(tmp_path)
    assert [r["attack"] for r in found] == ["a", "b"]
    assert found[1]["_source"] == str(tmp_path / "y" / "z" / "records.jsonl")


def test_library_versions_reports_absent(monkeypatch):
    def version(name):
        if name == "torchattacks":
            raise metadata.PackageNotFoundError(name)
        return "1.0"

    monkeypatch.setattr(metadata, "version", version)
    got = versions.library_versions()
    assert got["torchattacks"] == "absent" and got["torch"] == "1.0"
    assert set(got) == {
        "torch",
        "pytorch_lightning",
        "torchattacks",
        "hydra",
        "robustlab",
        "python",
    }
