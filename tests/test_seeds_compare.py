"""Seeds as an axis and paired comparisons with a baseline: aggregation on hand-made records, and
an end-to-end digits run with seeds=[0,1] and compare_with=[erm] read back by the report."""

from __future__ import annotations

import numpy as np
import pytest
from records_fixture import make_record

from robustlab.results.compare import fmt_spread, seed_rows
from robustlab.results.outcomes import OUTCOMES_FILE, read_outcomes
from robustlab.results.report import main as report_main
from robustlab.results.report import over_seeds
from robustlab.results.store import scan_records
from robustlab.run import run


def test_records_differing_only_by_seed_aggregate_to_mean_sd_min_max():
    records = [
        make_record(seed=s, robust_acc=acc, seed_group="g", config_hash=f"h{s}", finished=f"t{s}")
        for s, acc in ((0, 0.40), (1, 0.45), (2, 0.50))
    ]
    other = make_record(seed=0, robust_acc=0.9, seed_group="other-budget", config_hash="x")
    rows = seed_rows([*records, other])
    assert sorted(len(r.records) for r in rows) == [1, 3]
    three = next(r for r in rows if len(r.records) == 3)
    stats = three.stats("robust")
    assert stats["mean"] == pytest.approx(0.45) and stats["sd"] == pytest.approx(0.05)
    assert (stats["min"], stats["max"], stats["n"]) == (0.40, 0.50, 3)
    assert fmt_spread(stats) == "45.0 ± 5.0 [40.0, 50.0] x3"
    shown = over_seeds([*records, other])
    assert sorted(r["robust_acc"] for r in shown) == pytest.approx([0.45, 0.9])
    assert next(r for r in shown if "seed_spread" in r)["seed"] == 2  # the latest seed's record


def test_a_rerun_of_one_seed_keeps_only_its_latest_record():
    old = make_record(seed=0, robust_acc=0.1, seed_group="g", finished="2024-01-01")
    new = make_record(seed=0, robust_acc=0.2, seed_group="g", finished="2024-02-01")
    (row,) = seed_rows([old, new])
    assert row.values("robust") == [0.2]


def test_seeds_and_compare_with_print_and_report_paired_rows(compose_cfg, tmp_path, capsys):
    cfg = compose_cfg(
        "defense=pgd_at",
        "seeds=[0,1]",
        "eval.compare_with=[erm]",
        "trainer.max_epochs=3",
        "dataset.train_limit=400",
        "eval.n_examples=60",
        "attack=[fgsm,pgd]",
        "attack.pgd.steps=5",
        f"cache.dir={tmp_path / 'cache'}",
        "logger=none",
        "trainer.enable_progress_bar=false",
        "torch_threads=1",
    )
    records = run(cfg)
    out = capsys.readouterr().out
    assert {r["seed"] for r in records} == {0, 1}
    assert {r["defense"] for r in records} == {"pgd_at", "erm"}
    assert "Over seeds" in out and "vs erm, paired on the same test points" in out
    assert "0,1" in out  # both seeds in the spread rows

    run_dir = tmp_path  # compose_cfg's output_dir
    for seed in (0, 1):
        cell = run_dir / f"seed_{seed}"
        outcomes = read_outcomes(cell / OUTCOMES_FILE)
        for rec in scan_records(cell):
            o = outcomes[rec["outcomes_key"]]
            assert len(o.index) == rec["n_examples"] == 60
            assert int(o.robust.sum()) == rec["n_robust"]
            assert int(o.clean.sum()) == rec["n_clean_correct"]
            assert not np.any(o.robust & ~o.clean)

    from robustlab.results.compare import compare

    comparisons, problems = compare(scan_records(run_dir), "erm")
    assert problems == [] and {c.key["attack"] for c in comparisons} == {
        "fgsm",
        "pgd",
        "worst_case",
    }
    acc = {(r["defense"], r["attack"], r["seed"]): r["robust_acc"] for r in scan_records(run_dir)}
    for c in comparisons:
        for seed, d in c.robust.per_seed.items():  # paired delta = difference of accuracies
            expected = acc[("pgd_at", c.key["attack"], seed)] - acc[("erm", c.key["attack"], seed)]
            assert d.delta == pytest.approx(expected)
        assert c.robust.delta == pytest.approx(np.mean(c.per_seed_deltas()))

    report_main([str(run_dir), "--baseline", "erm", "--out", str(tmp_path / "report")])
    report = (tmp_path / "report" / "report.md").read_text()
    assert "## vs erm" in report and "| pgd_at | plain | pgd | adaptive | 0.2 | 0,1 |" in report
    assert " x2 " in report  # mean ± sd over the two seeds in the main table
    header = (tmp_path / "report" / "report.csv").read_text().splitlines()[0]
    assert "vs_baseline.delta_robust" in header and "seed_spread.robust.mean" in header

    cfg.seeds = [1]
    capsys.readouterr()
    run(cfg)  # complete: skipped; its summary reads only seed 1
    again = capsys.readouterr().out
    assert "vs erm" in again and "0,1" not in again


def test_report_refuses_a_baseline_with_no_records(tmp_path, capsys):
    from records_fixture import sweep

    from robustlab.results.store import append_records

    for sub, recs in sweep().items():
        append_records(tmp_path / sub / "records.jsonl", recs)
    with pytest.raises(SystemExit) as exit_:
        report_main([str(tmp_path), "--baseline", "nope"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--baseline nope has no records" in err[0]


def test_eps_curves_and_heatmap_carry_the_seed_spread(tmp_path):
    from robustlab.results.figures import plot_eps_curves, plot_heatmap
    from robustlab.results.report import curve_point

    records = [
        make_record(seed=s, eps=eps, robust_acc=acc, seed_group="g", config_hash=f"h{s}")
        for s, accs in ((0, (0.5, 0.2)), (1, (0.6, 0.3)))
        for eps, acc in zip((0.1, 0.2), accs)
    ]
    points = sorted(curve_point(r) for r in over_seeds(records))
    assert points[0] == pytest.approx((0.1, 55.0, 50.0, 60.0))
    assert points[1] == pytest.approx((0.2, 25.0, 20.0, 30.0))
    single = curve_point(make_record(eps=0.1, robust_acc=0.4))
    assert single == pytest.approx((0.1, 40.0, 40.0, 40.0))
    assert plot_eps_curves(tmp_path / "c.png", {"erm": points}, "t").stat().st_size > 0
    heat = plot_heatmap(tmp_path / "h.png", ["erm"], ["clean", "pgd"], [[90, 40]], "t", [[1, None]])
    assert heat.stat().st_size > 0


def test_seed_group_ignores_values_interpolated_from_the_seed(compose_cfg, tmp_path):
    from robustlab.config import config_hash, seed_group

    one, two = (compose_cfg("defense=translation", f"seed={s}") for s in (0, 1))
    assert one.defense.seed != two.defense.seed  # translation's defense.seed is ${seed}
    assert config_hash(one) != config_hash(two)
    assert seed_group(one) == seed_group(two)
    assert seed_group(one) != seed_group(compose_cfg("defense=translation", "trainer.max_epochs=7"))


def test_protocol_accuracies_of_a_seed_aggregate_are_means_too():
    records = [
        make_record(seed=s, seed_group="g", config_hash=f"h{s}", finished=f"t{s}")
        | {"score_draws": 10, "robust_acc_one_draw": v, "clean_acc_one_draw": 0.9}
        for s, v in ((0, 0.2), (1, 0.4))
    ]
    (shown,) = over_seeds(records)
    assert shown["robust_acc_one_draw"] == pytest.approx(0.3)


def written(tmp_path, sub, defense, robust, *, config, points="p", seed=0, beside=""):
    """A record of ``defense`` with per-example robust flags, written with its outcomes file."""
    from robustlab.results.outcomes import append_outcomes, attach, split
    from robustlab.results.store import append_records

    flags = np.array(robust, bool)
    rec = make_record(
        defense=defense, seed=seed, config_hash=config, seed_group=config, robust_acc=0.5
    ) | {"test_points": points, "baseline_of": beside}
    attach(rec, np.arange(len(flags)), np.ones(len(flags), bool), flags)
    append_outcomes(tmp_path / sub / OUTCOMES_FILE, split([rec]))
    append_records(tmp_path / sub / "records.jsonl", [rec])


def test_pairing_refuses_other_test_points_and_an_ambiguous_baseline(tmp_path):
    from robustlab.results.compare import compare

    written(tmp_path, "a", "miat", [1, 0, 1, 0], config="m")
    written(tmp_path, "b", "pgd_at", [1, 1, 1, 0], config="short")
    (one,), problems = compare(scan_records(tmp_path), "pgd_at")
    assert problems == [] and one.robust.delta == pytest.approx(-0.25)
    written(tmp_path, "c", "pgd_at", [0, 0, 0, 0], config="long")  # another budget
    comparisons, problems = compare(scan_records(tmp_path), "pgd_at")
    assert comparisons == [] and "configs match" in problems[0]
    written(tmp_path, "a", "pgd_at", [0, 0, 1, 1], config="same-run")  # the cell's own baseline
    (own,), problems = compare(scan_records(tmp_path), "pgd_at")
    assert problems == [] and own.robust.delta == pytest.approx(0.0)

    written(tmp_path / "x", "a", "miat", [1, 1], config="m", points="digits")
    written(tmp_path / "x", "a", "pgd_at", [1, 0], config="p", points="other split")
    comparisons, problems = compare(scan_records(tmp_path / "x"), "pgd_at")
    assert comparisons == [] and "different test points" in problems[0]


def test_another_cells_compare_with_baseline_is_not_every_rows_baseline(tmp_path, capsys):
    """The default grid holds a pgd_at cell and MIAT's same-budget PGD-AT (its compare_with):
    rows of other cells pair with the pgd_at cell, MIAT with its own; the report shows MIAT's
    baseline in a row of its own."""
    from robustlab.results.compare import compare

    written(tmp_path, "erm", "erm", [0, 0, 0, 0], config="e")
    written(tmp_path, "pgd_at", "pgd_at", [1, 1, 0, 0], config="cell")
    written(tmp_path, "miat", "miat", [1, 1, 1, 0], config="m")
    written(tmp_path, "miat", "pgd_at", [1, 1, 1, 1], config="warm", beside="miat")
    comparisons, problems = compare(scan_records(tmp_path), "pgd_at")
    assert problems == []
    deltas = {c.key["defense"]: c.robust.delta for c in comparisons}
    assert deltas == pytest.approx({"erm": -0.5, "miat": -0.25})
    report_main([str(tmp_path)])
    rows = [
        line.split("|")[1].strip()
        for line in (tmp_path / "report.md").read_text().splitlines()
        if line.startswith("| ")
    ]
    assert "pgd_at (beside miat)" in rows and "pgd_at" in rows
