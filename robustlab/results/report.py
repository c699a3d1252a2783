"""``robustlab-report DIR``: aggregate every record under DIR into markdown, CSV, figures and a
self-contained HTML page (optionally a W&B summary run)."""

from __future__ import annotations

import argparse
import csv
import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from robustlab.results.compare import (
    CELL,
    COMPARISON_HEADER,
    Comparison,
    compare,
    comparison_columns,
    fmt_spread,
    seed_rows,
)
from robustlab.results.flags import FLAGS_CAVEAT
from robustlab.results.record import REQUIRED_FIELDS, WORST_CASE
from robustlab.results.store import scan_records
from robustlab.results.table import fmt_acc, fmt_eps, fmt_protocols, format_flags_banner, interval

THREAT_SUFFIX = {"oblivious": " (obl.)", "adaptive": " (adapt.)"}
WORST_COLUMN = "worst case"
WARN = "⚠"


def dedupe(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """Keep the latest record (by ``finished``) of each evaluation; return it and the drop count."""
    keys = ("config_hash", "dataset", "model", "defense", "inference")
    keys += ("attack", "threat_model", "norm", "eps")
    latest: dict[tuple, dict[str, Any]] = {}
    for rec in records:
        key = tuple(str(rec[k]) for k in keys)
        if key not in latest or str(rec["finished"]) >= str(latest[key]["finished"]):
            latest[key] = rec
    return list(latest.values()), len(records) - len(latest)


def flatten(rec: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """One level of text per value: dicts become ``key.sub`` columns, lists join with ';'."""
    out: dict[str, str] = {}
    for key, value in rec.items():
        name = prefix + key
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        elif isinstance(value, dict):
            out[name] = ""
        elif isinstance(value, (list, tuple)):
            out[name] = ";".join(str(v) for v in value)
        else:
            out[name] = "" if value is None else str(value)
    return out


def write_csv(path: Path, records: list[dict[str, Any]]) -> None:
    """Long format: one row per record, contract fields first."""
    rows = [flatten(r) for r in records]
    order = {k: i for i, k in enumerate(REQUIRED_FIELDS)}
    names = {k for row in rows for k in row}
    fields = sorted(names, key=lambda k: (order.get(k.split(".")[0], len(order)), k))
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


@dataclass
class Grid:
    """One dataset's defense x attack table: labels, the record behind each cell, eps curves."""

    dataset: str
    rows: list[str] = field(default_factory=list)
    cols: list[str] = field(default_factory=list)
    cells: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    clean: dict[str, dict[str, Any]] = field(default_factory=dict)
    curves: dict[str, list[tuple[float, float, float, float]]] = field(default_factory=dict)
    shadowed: int = 0

    def put(self, row: str, col: str, rec: dict[str, Any]) -> None:
        """Place ``rec``; a cell already filled keeps the later record and counts the other."""
        old = self.cells.get((row, col))
        if old is not None:
            self.shadowed += 1
            if str(old["finished"]) > str(rec["finished"]):
                return
        self.cells[(row, col)] = rec


def _distinct(records: list[dict[str, Any]], key: str) -> dict[str, set]:
    out: dict[str, set] = defaultdict(set)
    for r in records:
        out[r["attack"]].add(str(r[key]))
    return out


def build_grid(dataset: str, records: list[dict[str, Any]]) -> Grid:
    """Lay out one dataset's records; column labels carry norm, eps, threat only where ambiguous."""
    multi_model = len({r["model"] for r in records}) > 1

    def row_of(r: dict[str, Any]) -> str:
        label = r["defense"] + ("" if r["inference"] == "plain" else f"+{r['inference']}")
        if r.get("baseline_of"):  # a compare_with baseline, trained with its cell's budget
            label += f" (beside {r['baseline_of']})"
        if r.get("attack_precision", "fp32") != "fp32":  # precision.attack=bf16
            label += f" [{r['attack_precision']} attacks]"
        return f"{label} ({r['model']})" if multi_model else label

    attacks = [r for r in records if r["attack"] != WORST_CASE]
    norms, epss = _distinct(attacks, "norm"), _distinct(attacks, "eps")
    threats: dict[tuple[str, str], set] = defaultdict(set)
    for r in attacks:
        threats[(row_of(r), r["attack"])].add(r["threat_model"])
    both = {a for (_, a), t in threats.items() if len(t) > 1}

    def col_of(r: dict[str, Any]) -> str:
        a = r["attack"]
        label = a + (f" {r['norm']}" if len(norms[a]) > 1 else "")
        label += f"@{fmt_eps(r['eps'])}" if len(epss[a]) > 1 else ""
        return label + (THREAT_SUFFIX.get(r["threat_model"], "") if a in both else "")

    grid = Grid(dataset)
    order: dict[str, tuple] = {}
    for r in records:
        row = row_of(r)
        if row not in grid.clean or str(r["finished"]) > str(grid.clean[row]["finished"]):
            grid.clean[row] = r
        curve = f"{row}: {r['attack']} {r['norm']} {r['threat_model']}"
        grid.curves.setdefault(curve, []).append(curve_point(r))
        if r["attack"] != WORST_CASE:
            col = col_of(r)
            order[col] = (r["attack"], r["norm"], float(r["eps"]), r["threat_model"] != "oblivious")
            grid.put(row, col, r)
    grid.rows = sorted(grid.clean)
    grid.cols = sorted(order, key=order.__getitem__)
    _place_worst(grid, [r for r in records if r["attack"] == WORST_CASE], row_of)
    grid.curves = {k: v for k, v in grid.curves.items() if len({p[0] for p in v}) > 1}
    return grid


def curve_point(r: dict[str, Any]) -> tuple[float, float, float, float]:
    """(eps, robust %, low, high): low and high are the min and max over seeds (else the value)."""
    spread = r.get("seed_spread", {}).get("robust")
    value = 100 * float(r["robust_acc"])
    if spread is None:
        return (float(r["eps"]), value, value, value)
    return (float(r["eps"]), value, 100 * spread["min"], 100 * spread["max"])


def _place_worst(grid: Grid, worst: list[dict[str, Any]], row_of) -> None:
    """Per row, the lowest worst-case accuracy at the row's largest eps, among the records of the
    config the row shows (that of its latest record); those of other configs count as shadowed."""
    by_row: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in worst:
        by_row[row_of(r)].append(r)
    if by_row:
        grid.cols.append(WORST_COLUMN)
    for row, recs in by_row.items():
        shown = grid.clean[row].get("config_hash")
        same_config = [r for r in recs if r.get("config_hash") == shown] or recs
        grid.shadowed += len(recs) - len(same_config)
        recs = same_config
        top = max(float(r["eps"]) for r in recs)
        at_top = [r for r in recs if float(r["eps"]) == top]
        grid.cells[(row, WORST_COLUMN)] = min(at_top, key=lambda r: float(r["robust_acc"]))


def cell_text(grid: Grid, row: str, col: str) -> str:
    """Robust accuracy with interval; worst-case cells also name eps and threat model."""
    rec = grid.cells.get((row, col))
    if rec is None:
        return ""
    text = fmt_spread(rec["seed_spread"]["robust"]) if "seed_spread" in rec else fmt_acc(rec)
    if col == WORST_COLUMN:
        text += f" @{fmt_eps(rec['eps'])} {rec['threat_model']}"
    if "score_draws" in rec:
        text += f" ({fmt_protocols(rec)})"
    return f"{WARN} {text}" if rec.get("sanity_flags") else text


def grid_table(grid: Grid) -> tuple[list[str], list[list[str]]]:
    """The dataset's table as text cells (header, rows): what report.md, report.html and the W&B
    summary show."""
    header = ["defense", "clean", *grid.cols]
    rows = []
    for row in grid.rows:
        clean = grid.clean[row]
        protocols = f" ({fmt_protocols(clean, 'clean')})" if "score_draws" in clean else ""
        spread = clean.get("seed_spread")
        shown = fmt_spread(spread["clean"]) if spread else fmt_acc(clean, "clean")
        rows.append([row, shown + protocols, *(cell_text(grid, row, c) for c in grid.cols)])
    return header, rows


def flagged_cells(grid: Grid) -> list[tuple[str, str, list[str]]]:
    """(row, column, flags) of every cell whose record carries sanity flags."""
    return [
        (row, col, list(r["sanity_flags"]))
        for (row, col), r in grid.cells.items()
        if r.get("sanity_flags")
    ]


SHADOWED_NOTE = (
    "Note: {n} record(s) share a cell with a later one of another config (e.g. seed); only "
    "report.csv lists them."
)


def markdown(grid: Grid) -> str:
    """The dataset's table, then the flagged cells and any shadowed records."""
    header, rows = grid_table(grid)
    lines = [f"## {grid.dataset}", "", "| " + " | ".join(header) + " |"]
    lines.append("|" + "---|" * len(header))
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    flagged = flagged_cells(grid)
    if flagged:
        lines += ["", f"Sanity flags ({FLAGS_CAVEAT}):"]
        for row, col, flags in flagged:
            lines.append(f"- {WARN} {row} / {col}: {', '.join(flags)}")
    if grid.shadowed:
        lines += ["", SHADOWED_NOTE.format(n=grid.shadowed)]
    return "\n".join(lines)


def over_seeds(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per cell: a cell run with several seeds becomes its latest record carrying the
    mean accuracies (every protocol's) and ``seed_spread`` (mean, sd, min, max, n of clean and
    robust)."""
    out = []
    for row in seed_rows(records):
        latest = max(row.records.values(), key=lambda r: str(r["finished"]))
        if len(row.records) == 1:
            out.append(latest)
            continue
        spread = row.spread()
        protocols = {  # one-draw and majority-of-k accuracies of randomized predictors: means too
            k: sum(float(r[k]) for r in row.records.values()) / len(row.records)
            for k in latest
            if k.startswith(("clean_acc_", "robust_acc_"))
            and all(k in r for r in row.records.values())
        }
        out.append(
            {
                **latest,
                **protocols,
                "clean_acc": spread["clean"]["mean"],
                "robust_acc": spread["robust"]["mean"],
                "seed_spread": spread,
            }
        )
    return out


def annotate(records: list[dict[str, Any]], comparisons: list[Comparison]) -> None:
    """Give each record its cell's seed spread and its comparison with the baseline (for
    report.csv: ``seed_spread.*`` and ``vs_baseline.*`` columns)."""
    for row in seed_rows(records):
        if len(row.records) > 1:
            for r in row.records.values():
                r["seed_spread"] = row.spread()
    by_cell = {(*(str(c.key[k]) for k in CELL), c.group): c for c in comparisons}
    for r in records:
        group = str(r.get("seed_group") or r["config_hash"])
        c = by_cell.get((*(str(r[k]) for k in CELL), group))
        if c is None:
            continue
        r["vs_baseline"] = {
            "baseline": c.baseline,
            "seeds": len(c.robust.per_seed),
            "delta_clean": c.clean.delta,
            "delta_clean_ci": list(c.clean.ci),
            "delta_robust": c.robust.delta,
            "delta_robust_ci": list(c.robust.ci),
            "significant": c.robust.significant,
            "delta_robust_per_seed": c.per_seed_deltas(),
            "p_mcnemar_per_seed": c.p_values,
        }


def comparison_intro(baseline: str) -> str:
    """What the "vs baseline" tables show."""
    return (
        f"Paired on the same test points: delta = defense - {baseline} in percent points with its "
        "95% interval (Newcombe's paired interval for one seed; over several seeds the mean with "
        "a t interval on the seeds); * = the interval excludes 0; p = exact McNemar per seed."
    )


def comparisons_by_dataset(comparisons: list[Comparison]) -> dict[str, list[Comparison]]:
    by_dataset: dict[str, list[Comparison]] = defaultdict(list)
    for c in comparisons:
        by_dataset[c.key["dataset"]].append(c)
    return dict(sorted(by_dataset.items()))


def no_pairs_note(baseline: str) -> str:
    return f"No record pairs with {baseline} (same dataset, model, attack and seed)."


def comparison_markdown(comparisons: list[Comparison], baseline: str, problems) -> str:
    """The "vs baseline" table of every dataset."""
    lines = [f"## vs {baseline}", "", comparison_intro(baseline)]
    for dataset, rows in comparisons_by_dataset(comparisons).items():
        lines += ["", f"### {dataset}", "", "| " + " | ".join(COMPARISON_HEADER) + " |"]
        lines.append("|" + "---|" * len(COMPARISON_HEADER))
        lines += ["| " + " | ".join(comparison_columns(c)) + " |" for c in rows]
    if not comparisons:
        lines += ["", no_pairs_note(baseline)]
    lines += [f"- not paired: {p}" for p in problems]
    return "\n".join(lines)


def _figures(grid: Grid, out: Path) -> list[Path]:
    """The heatmap of ``grid`` and, where eps lists were run, its eps curves (PNG files)."""
    from robustlab.results.figures import plot_eps_curves, plot_heatmap

    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", grid.dataset)
    cols = ["clean", *grid.cols]
    values = [
        [100 * interval(grid.clean[row], "clean")[0]]
        + [
            100 * float(grid.cells[(row, c)]["robust_acc"])
            if (row, c) in grid.cells
            else float("nan")
            for c in grid.cols
        ]
        for row in grid.rows
    ]

    def sd(rec: dict[str, Any] | None, which: str) -> float | None:
        spread = (rec or {}).get("seed_spread")
        return None if spread is None else 100 * spread[which]["sd"]

    spreads = [
        [sd(grid.clean[row], "clean")] + [sd(grid.cells.get((row, c)), "robust") for c in grid.cols]
        for row in grid.rows
    ]
    title = f"{grid.dataset}: accuracy (%), mean ± sd over seeds where several"
    heatmap = plot_heatmap(out / f"heatmap_{stem}.png", grid.rows, cols, values, title, spreads)
    paths = [heatmap]
    if grid.curves:
        title = f"{grid.dataset}: robust accuracy against eps"
        paths.append(plot_eps_curves(out / f"eps_curve_{stem}.png", grid.curves, title))
    return paths


class ReportError(Exception):
    """No report can be made (no records, an unknown baseline): one line, exit status 2."""


@dataclass
class Report:
    """Everything a report shows, computed once from the records under ``source``; report.md,
    report.html and the W&B summary are views of it."""

    source: Path
    records: list[dict[str, Any]]  # deduplicated, annotated: the rows of report.csv
    grids: list[Grid]
    dropped: int = 0
    baseline: str | None = None
    comparisons: list[Comparison] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    generated: str = ""
    figures: dict[str, list[Path]] = field(default_factory=dict)  # dataset -> PNGs, once written

    @property
    def n_cells(self) -> int:
        return len({(r["config_hash"], r["inference"]) for r in self.records})

    @property
    def title(self) -> str:
        return f"Robustness report: {self.source}"

    def preamble(self) -> list[str]:
        """The sentences under the title."""
        lines = [f"{len(self.records)} records, {self.n_cells} cells, generated {self.generated}."]
        if self.dropped:
            lines.append(
                f"{self.dropped} duplicate record(s) from reruns dropped (latest `finished` kept)."
            )
        lines.append(
            "Accuracies in percent with 95% Wilson intervals; a cell run with several seeds shows "
            "mean ± sd [min, max] x seeds."
        )
        return lines

    def markdown(self) -> str:
        sections = [markdown(g) for g in self.grids]
        if self.baseline:
            sections.append(comparison_markdown(self.comparisons, self.baseline, self.problems))
        head = "\n".join([f"# {self.title}", "", *self.preamble()])
        return "\n\n".join([head, *sections]) + "\n"


def build_report(
    root: Path, threat_model: str | None = None, baseline: str | None = None
) -> Report:
    """Read every record under ``root`` and lay out the report (ReportError: nothing to report)."""
    if not root.is_dir():
        raise ReportError(f"{root} is not a directory")
    records = scan_records(root, skip_corrupt=True)
    if threat_model:
        records = [r for r in records if r["threat_model"] == threat_model]
    if not records:
        raise ReportError(f"no records found under {root}")
    records, dropped = dedupe(records)
    base_defense, _, base_inference = (baseline or "").partition("+")
    if baseline and not any(
        r["defense"] == base_defense and base_inference in ("", r["inference"]) for r in records
    ):
        defenses = sorted({r["defense"] for r in records})
        raise ReportError(f"--baseline {baseline} has no records; defenses here: {defenses}")
    comparisons, problems = compare(records, baseline) if baseline else ([], [])
    annotate(records, comparisons)
    by_dataset: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in over_seeds(records):
        by_dataset[r["dataset"]].append(r)
    return Report(
        source=root,
        records=records,
        grids=[build_grid(d, recs) for d, recs in sorted(by_dataset.items())],
        dropped=dropped,
        baseline=baseline,
        comparisons=comparisons,
        problems=problems,
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    )


def write_report(report: Report, out: Path) -> list[Path]:
    """report.md, report.csv, the figures and report.html (which embeds them) under ``out``."""
    from robustlab.results.html import render_html

    out.mkdir(parents=True, exist_ok=True)
    written = [out / "report.md", out / "report.csv"]
    written[0].write_text(report.markdown(), encoding="utf-8")
    write_csv(written[1], report.records)
    for grid in report.grids:
        report.figures[grid.dataset] = _figures(grid, out)
        written += report.figures[grid.dataset]
    html = out / "report.html"
    html.write_text(render_html(report), encoding="utf-8")
    return [*written, html]


def run_report(
    root: Path,
    out: Path | None = None,
    threat_model: str | None = None,
    baseline: str | None = None,
    wandb: bool = False,
) -> Report:
    """Build, write and print the report of ``root`` (into ``out``, default ``root``); with
    ``wandb``, also log it as the summary run of the sweep's W&B group."""
    report = build_report(root, threat_model, baseline)
    written = write_report(report, out or root)
    print(report.markdown())
    banner = format_flags_banner(report.records)
    if banner:
        print(banner)
    for path in written:
        print(f"wrote {path}")
    if wandb:
        from robustlab.results.wandb_summary import log_summary

        run_dir = log_summary(report, out or root)
        if run_dir is not None:
            print(f"wrote {run_dir} (W&B summary run; upload it with: wandb sync {run_dir})")
    return report


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``robustlab-report``."""
    parser = argparse.ArgumentParser(prog="robustlab-report", description=__doc__)
    parser.add_argument("dir", type=Path, help="directory searched recursively for records.jsonl")
    parser.add_argument("--out", type=Path, help="where to write the report (default: DIR)")
    parser.add_argument("--threat-model", help="keep only records of this threat model")
    parser.add_argument(
        "--baseline",
        help="pair every other row with this defense (pgd_at) or defense+wrapper (mixup+plain), "
        "on the same test points",
    )
    parser.add_argument(
        "--wandb",
        action="store_true",
        help="also log the report as one W&B summary run in the sweep's group (project, entity, "
        "group and mode as the cells' logger.wandb; offline unless that or WANDB_MODE says online)",
    )
    args = parser.parse_args(argv)
    try:
        run_report(args.dir, args.out, args.threat_model, args.baseline, args.wandb)
    except ReportError as err:
        parser.exit(2, f"robustlab-report: {err}\n")


if __name__ == "__main__":
    main(sys.argv[1:])
