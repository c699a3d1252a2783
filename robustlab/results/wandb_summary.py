"""The sweep's W&B summary run: one run in the cells' group that holds the report (each dataset's
grid as a W&B Table, the heatmap and eps-curve images, the flagged cells with what each flag
means, the records, the paired comparisons, and report.html itself).

It goes where the cells' runs went: project, entity, group and mode are read from the cells'
``logger.wandb`` (their resolved_config.yaml); offline unless that or WANDB_MODE says online, its
files under the report directory (``<out>/wandb/offline-run-*``, for ``wandb sync``). No key is
read or written here: W&B finds one itself (WANDB_API_KEY, ~/.netrc) when it goes online."""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from robustlab.loggers import (
    RECORD_COLUMNS,
    default_group,
    finish_other_run,
    record_rows,
    run_config,
    wandb_files_under,
    wandb_mode,
)
from robustlab.paths import CONF_DIR
from robustlab.results.compare import COMPARISON_HEADER, comparison_columns
from robustlab.results.flags import flag_meaning
from robustlab.results.report import Report, comparisons_by_dataset, flagged_cells, grid_table

FLAGGED_COLUMNS = ["dataset", "row", "column", "flag", "meaning"]


@dataclass(frozen=True)
class SummaryTarget:
    """Where the summary run goes."""

    project: str
    entity: str | None
    group: str
    mode: str  # offline | online | disabled, after wandb_mode


def summary_target(report: Report) -> SummaryTarget:
    """The most common (project, entity, group, mode) of the cells' ``logger.wandb`` (a null group
    is the cell's sweep directory, as for the cells' runs); cells run without W&B: the defaults of
    conf/logger/wandb.yaml, grouped under the report directory's name."""
    seen: Counter = Counter()
    for cell in sorted({Path(r["_source"]).parent for r in report.records if "_source" in r}):
        node = ((run_config(cell) or {}).get("logger") or {}).get("wandb")
        if node:
            group = node.get("group") or default_group(cell)
            seen[(node.get("project"), node.get("entity"), group, node.get("mode", "offline"))] += 1
    if seen:
        project, entity, group, mode = seen.most_common(1)[0][0]
    else:
        defaults = OmegaConf.load(CONF_DIR / "logger" / "wandb.yaml").wandb
        project, entity, mode = defaults.project, defaults.entity, defaults.mode
        group = report.source.resolve().name
    return SummaryTarget(str(project), entity, str(group), wandb_mode(str(mode)))


def summary_run_id(out: Path) -> str:
    """Stable per report directory: reporting the same sweep again logs into the same run."""
    return "report-" + hashlib.sha1(str(out.resolve()).encode()).hexdigest()[:12]


def summary_data(report: Report, out: Path) -> dict:
    """What the summary run logs (W&B objects by key); the figures must have been written."""
    import wandb

    data: dict = {}
    for grid in report.grids:
        header, rows = grid_table(grid)
        data[f"report/{grid.dataset}"] = wandb.Table(columns=header, data=rows)
        for path in report.figures.get(grid.dataset, []):
            kind = "eps_curve" if path.name.startswith("eps_curve") else "heatmap"
            data[f"{kind}/{grid.dataset}"] = wandb.Image(str(path), caption=path.name)
    flagged = [
        [grid.dataset, row, col, flag, flag_meaning(flag)]
        for grid in report.grids
        for row, col, flags in flagged_cells(grid)
        for flag in flags
    ]
    data["flagged_cells"] = wandb.Table(columns=FLAGGED_COLUMNS, data=flagged)
    data["records"] = wandb.Table(columns=RECORD_COLUMNS, data=record_rows(report.records))
    if report.baseline:
        for dataset, comparisons in comparisons_by_dataset(report.comparisons).items():
            rows = [comparison_columns(c) for c in comparisons]
            key = f"vs_{report.baseline}/{dataset}"
            data[key] = wandb.Table(columns=COMPARISON_HEADER, data=rows)
    page = out / "report.html"
    if page.is_file():
        data["report_page"] = wandb.Html(page.read_text(encoding="utf-8"), inject=False)
    return data


def log_summary(report: Report, out: Path, target: SummaryTarget | None = None) -> Path | None:
    """Log ``report`` (written under ``out``) as the summary run; return the run's folder, or
    None where W&B is disabled."""
    target = target or summary_target(report)
    if target.mode == "disabled":
        print("robustlab-report: W&B is disabled (logger.wandb.mode or WANDB_MODE): no summary run")
        return None
    import wandb

    out = out.resolve()
    finish_other_run()  # e.g. the last cell's run, in a sweep's own process
    wandb_files_under(out, online=target.mode == "online")
    run = wandb.init(
        project=target.project,
        entity=target.entity,
        group=target.group,
        name=f"report {target.group}",
        job_type="report",
        tags=["report"],
        id=summary_run_id(out),
        resume="allow",
        mode=target.mode,
        dir=str(out),
        config={
            "report_dir": str(report.source),
            "baseline": report.baseline,
            "records": len(report.records),
            "cells": report.n_cells,
        },
        settings=wandb.Settings(console="off", silent=True),
    )
    try:
        run.log(summary_data(report, out))
        flagged = [c for g in report.grids for c in flagged_cells(g)]
        run.summary.update(
            {
                "flagged_cells": len(flagged),
                "flags_raised": sorted({f for _, _, flags in flagged for f in flags}),
            }
        )
        run_dir = Path(run.dir).parent
    finally:
        run.finish()
    return run_dir
