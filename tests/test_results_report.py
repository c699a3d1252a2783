"""The end-of-run table, the flags banner, Wilson intervals, the sweep report, and the report at
the end of a sweep (the Hydra callback)."""

from __future__ import annotations

import csv

import pytest
from hydra import compose, initialize_config_dir
from hypothesis import given
from hypothesis import strategies as st
from omegaconf import OmegaConf
from records_fixture import make_record, sweep

from robustlab.paths import CONF_DIR
from robustlab.results.record import WORST_CASE, wilson_interval
from robustlab.results.report import main
from robustlab.results.store import append_records
from robustlab.results.table import fmt_acc, format_cell_table, format_flags_banner
from robustlab.sweep_callbacks import SweepReport, sweep_logs_to_wandb


@given(st.integers(2, 10_000).flatmap(lambda n: st.tuples(st.integers(1, n - 1), st.just(n))))
def test_wilson_interval_brackets_p(counts):
    k, n = counts
    lo, hi = wilson_interval(k, n)
    assert 0 <= lo <= k / n <= hi <= 1


@pytest.mark.parametrize("k, n", [(0, 205), (4, 4)])
def test_wilson_interval_reaches_boundary(k, n):
    lo, hi = wilson_interval(k, n)
    assert lo <= k / n <= hi


def test_cell_table_lists_attacks_clean_worst_last_and_flags():
    recs = [
        make_record(attack=WORST_CASE, robust_acc=0.1),
        make_record(attack="pgd", robust_acc=0.1),
        make_record(attack="fgsm", robust_acc=0.4, sanity_flags=["robust_above_clean"]),
    ]
    text = format_cell_table(recs)
    assert "pgd" in text and "fgsm" in text
    assert fmt_acc(recs[0], "clean") in text
    assert text.splitlines()[-1].startswith(f">> {WORST_CASE}")
    assert "!! robust_above_clean" in text
    assert "robust_above_clean" in format_flags_banner(recs)
    assert format_flags_banner(recs[:2]) == ""


@pytest.fixture
def swept(tmp_path, capsys):
    groups = sweep()
    for sub, recs in groups.items():
        append_records(tmp_path / sub / "records.jsonl", recs)
    main([str(tmp_path)])
    return tmp_path, [r for recs in groups.values() for r in recs], capsys.readouterr().out


def test_report_markdown(swept):
    root, recs, out = swept
    md = (root / "report.md").read_text()
    stale, *current = recs  # the first erm/pgd record was rerun later
    for rec in current:
        assert fmt_acc(rec) in md
    assert fmt_acc(stale) not in md
    assert "1 duplicate" in md
    assert md.split("\n|---")[0].endswith("| worst case |")
    assert f"⚠ {fmt_acc(recs[8])}" in md and "robust_above_attack_free_noise" in md
    assert "pgd@0.1 (adapt.)" in md and "pgd@0.2 (adapt.)" in md and "pgd@0.3 (obl.)" in md
    assert "| mixup+mi_ol |" in md
    assert "| mixup+mi_ol |" in out and f"wrote {root / 'report.md'}" in out


def test_report_csv_has_one_row_per_unique_record(swept):
    root, recs, _ = swept
    with open(root / "report.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(recs) - 1
    assert rows[0]["clean_ci"].count(";") == 1 and rows[0]["versions.torch"] == "2.13.0"
    assert rows[0]["attack_params"] == "" and rows[0]["sanity_flags"] == ""


def test_report_figures(swept):
    root, _, _ = swept
    assert (root / "heatmap_digits.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (root / "eps_curve_digits.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("sub", ["empty", "missing"])
def test_report_without_records_exits_2(tmp_path, capsys, sub):
    if sub == "empty":
        (tmp_path / sub).mkdir()
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path / sub)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert str(tmp_path / sub) in err and err.count("\n") == 1


def test_report_threat_model_filter_and_out(swept):
    root, _, _ = swept
    main([str(root), "--out", str(root / "obl"), "--threat-model", "oblivious"])
    with open(root / "obl" / "report.csv", newline="") as fh:
        assert [r["inference"] for r in csv.DictReader(fh)] == ["mi_ol"]


def test_worst_case_column_comes_from_the_config_the_row_shows(tmp_path, capsys):
    """A hyperparameter sweep puts two configs in one row: every column shows the latest one."""
    early, late = "2024-01-01T00:01:00", "2024-01-01T00:02:00"
    records = [
        make_record(config_hash=h, attack=attack, robust_acc=acc, finished=t)
        for h, t, pgd in (("h-a", early, 0.05), ("h-b", late, 0.30))
        for attack, acc in (("pgd", pgd), (WORST_CASE, pgd - 0.01))
    ]
    append_records(tmp_path / "run" / "records.jsonl", records)
    main([str(tmp_path)])
    table = (tmp_path / "report.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| erm"))
    assert "| 30.0 " in row and "| 29.0 " in row
    assert "4.0" not in row


def test_randomized_records_show_every_protocol_and_the_raw_adaptive_number():
    protocols = dict(
        score_draws=10,
        protocol="worst_of_k",
        clean_acc_one_draw=0.96,
        clean_acc_majority_of_k=0.955,
        clean_acc_worst_of_k=0.9,
        robust_acc_one_draw=0.2,
        robust_acc_majority_of_k=0.15,
        robust_acc_worst_of_k=0.05,
    )
    rec = make_record(inference="mi_ol", clean_acc=0.9, robust_acc=0.05)
    rec.update(robust_acc_without_transfer=0.3, transfer_share=0.25, **protocols)
    text = format_cell_table([rec])
    assert "worst of 10 draws" in text
    assert "1 draw 96.0, maj 95.5 of 10" in text
    assert "20.0, 15.0" in text and "30.0" in text
    deterministic = format_cell_table([make_record()])
    assert "1 draw" not in deterministic and "w/o transfer" not in deterministic


def test_report_writes_the_page_beside_the_markdown(swept):
    root, _, out = swept
    assert f"wrote {root / 'report.html'}" in out
    assert (root / "report.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def sweep_end_config(sweep_dir, **logger):
    return OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep_dir)}}, "logger": logger})


def test_a_sweep_ends_with_its_report_once(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    for sub, recs in sweep().items():
        append_records(tmp_path / sub / "records.jsonl", recs)
    callback = SweepReport()
    callback.on_multirun_end(sweep_end_config(tmp_path, csv={}))
    out = capsys.readouterr().out
    assert out.count(f"wrote {tmp_path / 'report.md'}") == 1
    assert out.count(f"wrote {tmp_path / 'report.html'}") == 1
    assert "| mixup+mi_ol |" in out and not (tmp_path / "wandb").exists()
    assert not sweep_logs_to_wandb(sweep_end_config(tmp_path, csv={}))
    assert sweep_logs_to_wandb(sweep_end_config(tmp_path, wandb={"mode": "offline"}))
    assert not sweep_logs_to_wandb(sweep_end_config(tmp_path, wandb={"mode": "disabled"}))
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert not sweep_logs_to_wandb(sweep_end_config(tmp_path, wandb={"mode": "offline"}))

    (tmp_path / "report.md").unlink()
    SweepReport(enabled=False).on_multirun_end(sweep_end_config(tmp_path, csv={}))
    assert not (tmp_path / "report.md").exists() and capsys.readouterr().out == ""


def test_a_sweep_without_records_says_so_and_does_not_fail(tmp_path, capsys):
    SweepReport().on_multirun_end(sweep_end_config(tmp_path / "nothing", csv={}))
    err = capsys.readouterr().err
    assert err == f"robustlab: no report: {tmp_path / 'nothing'} is not a directory\n"


def test_the_report_callback_is_in_every_config_beside_the_launchers(compose_cfg):
    def callbacks(*overrides):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
        return {k: v["_target_"] for k, v in cfg.hydra.callbacks.items()}

    report = {"report": "robustlab.sweep_callbacks.SweepReport"}
    assert callbacks() == callbacks("experiment=grid_default") == report
    slurm = callbacks("hydra/launcher=slurm")
    assert slurm == report | {"slurm_queue_watch": "robustlab.launchers.slurm.QueueWatch"}
