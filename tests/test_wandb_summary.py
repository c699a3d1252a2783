"""The sweep in W&B: the summary run of ``robustlab-report DIR --wandb`` (and of a sweep's end)
holds the report's tables and images, read back from the offline run file with wandb's own
protobuf records; no key is written anywhere."""

from __future__ import annotations

import hashlib
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import yaml
from records_fixture import sweep

from robustlab.loggers import WANDB_FOLDERS
from robustlab.results.flags import flag_meaning
from robustlab.results.report import build_report, grid_table, main
from robustlab.results.store import append_records
from robustlab.results.wandb_summary import log_summary, summary_target

wandb = pytest.importorskip("wandb")

FAKE_KEY = "0123456789abcdef0123456789abcdef0fa4e3e1"

# The .wandb file: W&B's leveldb-style log (a 7-byte header ":W&B", 0xBEE1, version; then 32 KiB
# blocks of chunks, each with a CRC-32, a length and a type: full, first, middle, last), each
# record a wandb.proto.wandb_internal_pb2.Record.
BLOCK, CHUNK_HEADER = 32768, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def wandb_records(path: Path):
    """Every protobuf Record of an offline run file, checksums checked."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    ident, magic, _version = struct.unpack("<4sHB", data[:7])
    assert (ident, magic) == (b":W&B", 0xBEE1)
    pos, pending = 7, b""
    while pos + CHUNK_HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < CHUNK_HEADER:  # a block's tail too short for a header is padding
            pos += left
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos : pos + CHUNK_HEADER])
        if kind == 0 and length == 0:
            pos += left
            continue
        chunk = data[pos + CHUNK_HEADER : pos + CHUNK_HEADER + length]
        pos += CHUNK_HEADER + length
        assert zlib.crc32(chunk, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF == crc
        pending = chunk if kind in (FULL, FIRST) else pending + chunk
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def read_run(run_dir: Path) -> dict:
    """An offline run's run record, config, history rows and summary (keys -> values), and the
    files it logged, from its ``run-<id>.wandb``."""
    (path,) = run_dir.glob("run-*.wandb")
    out: dict = {"config": {}, "history": [], "summary": {}, "exit": False}

    def put(target: dict, item) -> None:
        keys = list(item.nested_key) or [item.key]
        for key in keys[:-1]:
            target = target.setdefault(key, {})
        target[keys[-1]] = json.loads(item.value_json)

    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out["run"] = record.run
            for item in record.run.config.update:
                put(out["config"], item)
        elif kind == "config":
            for item in record.config.update:
                put(out["config"], item)
        elif kind == "history":
            row: dict = {}
            for item in record.history.item:
                put(row, item)
            out["history"].append(row)
        elif kind == "summary":
            for item in record.summary.update:
                put(out["summary"], item)
        elif kind == "exit":
            out["exit"] = True
    return out


def logged(run: dict, key: str) -> dict:
    (value,) = [row[key] for row in run["history"] if key in row]
    return value


def table(run_dir: Path, run: dict, key: str) -> dict:
    """The columns and rows of a logged W&B Table, from its file under the run's files/."""
    ref = logged(run, key)
    assert ref["_type"] == "table-file"
    return json.loads((run_dir / "files" / ref["path"]).read_text())


def no_key_under(*folders: Path) -> list[Path]:
    files = [p for folder in folders for p in folder.rglob("*") if p.is_file()]
    return [p for p in files if FAKE_KEY.encode() in p.read_bytes()]


@pytest.fixture
def keyed_home(monkeypatch, tmp_path):
    """A fake key in the environment and in ~/.netrc of an empty HOME; no W&B variables."""
    for var in ("WANDB_MODE", *WANDB_FOLDERS):
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    (home / ".netrc").write_text(f"machine api.wandb.ai\n  login user\n  password {FAKE_KEY}\n")
    return home


def test_the_summary_run_holds_the_grid_tables_images_and_flagged_cells(keyed_home, tmp_path):
    root = tmp_path / "sweep_x"
    for sub, recs in sweep().items():
        append_records(root / sub / "records.jsonl", recs)
    try:
        main([str(root), "--wandb"])
    finally:
        wandb.teardown()
    (run_dir,) = (root / "wandb").glob("offline-run-*")
    run = read_run(run_dir)
    assert run["exit"] and run["run"].run_group == "sweep_x"  # no cell config: the dir's name
    assert run["run"].project == "robustlab" and run["run"].job_type == "report"
    assert run["config"]["records"] == 11

    report = build_report(root)
    header, rows = grid_table(report.grids[0])
    grid = table(run_dir, run, "report/digits")
    assert grid["columns"] == header and grid["data"] == rows
    for key, png in (
        ("heatmap/digits", "heatmap_digits.png"),
        ("eps_curve/digits", "eps_curve_digits.png"),
    ):
        image = logged(run, key)
        assert image["_type"] == "image-file" and image["format"] == "png"
        sent = (run_dir / "files" / image["path"]).read_bytes()
        assert sent == (root / png).read_bytes()
        assert image["sha256"] == hashlib.sha256(sent).hexdigest()
    flagged = table(run_dir, run, "flagged_cells")
    flag = "robust_above_attack_free_noise"
    assert flagged["data"] == [
        ["digits", "mixup+mi_ol", "pgd@0.3 (obl.)", flag, flag_meaning(flag)]
    ]
    assert run["summary"]["flagged_cells"] == 1 and run["summary"]["flags_raised"] == [flag]
    records = table(run_dir, run, "records")
    assert len(records["data"]) == 11 and "sanity_flags" in records["columns"]
    assert logged(run, "report_page")["_type"] == "html-file"

    assert no_key_under(root) == []  # the report, its figures, page and W&B run
    assert no_key_under(tmp_path) == [keyed_home / ".netrc"]
    home = sorted(p.relative_to(keyed_home).as_posix() for p in keyed_home.rglob("*"))
    assert not [p for p in home if "wandb" in p]


def cell_config(cell: Path, **wandb_node) -> None:
    node = {"project": "robustlab", "entity": None, "group": None, "mode": "offline"} | wandb_node
    (cell / "resolved_config.yaml").write_text(yaml.safe_dump({"logger": {"wandb": node}}))


def test_the_summary_goes_where_the_cells_runs_went(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    root = tmp_path / "sweeps" / "grid"
    for sub, recs in sweep().items():
        append_records(root / sub / "records.jsonl", recs)
    report = build_report(root)
    target = summary_target(report)  # no cell configs: the defaults, the dir's name as group
    assert (target.project, target.entity, target.group, target.mode) == (
        "robustlab",
        None,
        "grid",
        "offline",
    )
    cell_config(root / "b" / "nested", project="mine")
    target = summary_target(build_report(root))
    assert (target.project, target.group) == ("mine", "b")  # a null group: the cell's parent
    cell_config(root / "a", project="mine", group="g1", mode="online")
    cell_config(root / "b" / "nested", project="mine", group="g1", mode="online")
    assert summary_target(build_report(root)).mode == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    disabled = summary_target(build_report(root))
    assert disabled.mode == "disabled" and disabled.group == "g1"
    assert log_summary(build_report(root), root, disabled) is None
    assert not (root / "wandb").exists()


@pytest.mark.slow
def test_a_two_cell_sweep_with_wandb_ends_with_one_report_and_a_summary_run(tmp_path):
    """The whole path: a tiny sweep with logger=wandb, a fake key and an empty HOME. Each cell's
    run carries its resolved config, training curves, metrics and records; the sweep's end writes
    the report once and the summary run in the cells' group; no key in any file."""
    home = tmp_path / "home"
    home.mkdir()
    sweep_dir = tmp_path / "sweep"
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "WANDB_API_KEY": FAKE_KEY,
        "ROBUSTLAB_CACHE": str(tmp_path / "cache"),
    }
    cmd = [sys.executable, "-m", "robustlab", "-m", "defense=erm,pgd_at"]
    cmd += ["dataset.train_limit=128", "eval.n_examples=40", "trainer.max_epochs=1"]
    cmd += ["trainer.enable_progress_bar=false", "attack=[fgsm]", "torch_threads=1"]
    cmd += ["logger=wandb", f"hydra.sweep.dir={sweep_dir}"]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count(f"wrote {sweep_dir / 'report.md'}") == 1
    assert (sweep_dir / "report.html").is_file()

    cells = sorted(p for p in sweep_dir.iterdir() if p.name[0].isdigit())
    assert [c.name for c in cells] == ["0_digits_erm", "1_digits_pgd_at"]
    for cell in cells:
        (run_dir,) = (cell / "wandb").glob("offline-run-*")
        run = read_run(run_dir)
        assert run["exit"] and run["run"].run_group == "sweep"
        assert run["config"]["defense"]["name"] == cell.name.split("_", 2)[2]
        assert run["config"]["logger"]["wandb"]["mode"] == "offline"
        keys = {k for row in run["history"] for k in row}
        assert {"val/clean_acc", "train/loss", "test/clean_acc", "records"} <= keys

    (summary_dir,) = (sweep_dir / "wandb").glob("offline-run-*")
    summary = read_run(summary_dir)
    assert summary["run"].run_group == "sweep" and summary["exit"]
    grid = table(summary_dir, summary, "report/digits")
    assert [row[0] for row in grid["data"]] == ["erm", "pgd_at"]
    assert logged(summary, "heatmap/digits")["_type"] == "image-file"
    assert no_key_under(tmp_path) == []
