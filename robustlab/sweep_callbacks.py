"""Hydra callbacks of every robustlab run (conf/hydra/callbacks/report.yaml): the report at the
end of a sweep, and each cell's W&B run closed when its job ends.

``python -m robustlab -m ...`` ends with what ``robustlab-report <sweep dir>`` does (report.md,
report.csv, the figures, report.html, the tables printed) and, when the sweep logs to W&B
(``logger=wandb``, not disabled), the summary run of ``robustlab-report <sweep dir> --wandb``. It
runs in the process that launched the sweep, after every cell (of any launcher) has returned; a
sweep that fails stops before it, as before. ``hydra.callbacks.report.enabled=false`` turns the
report off, ``hydra.callbacks.report.wandb=true|false`` forces the summary run on or off."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf


def sweep_logs_to_wandb(config: DictConfig) -> bool:
    """Whether the sweep's cells log to W&B: a ``logger.wandb`` whose mode is not disabled."""
    from robustlab.loggers import wandb_mode

    node = OmegaConf.select(config, "logger.wandb")
    return node is not None and wandb_mode(str(node.get("mode", "offline"))) != "disabled"


class SweepReport(Callback):
    """The report of a sweep at its end; each job's W&B run finished at the job's end."""

    def __init__(self, enabled: bool = True, wandb: bool | None = None) -> None:
        self.enabled = enabled
        self.wandb = wandb  # None: as the sweep's logger

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        """Close the cell's W&B run in the process that ran it (a joblib worker runs the next
        cell, and exits, without closing it otherwise)."""
        wandb = sys.modules.get("wandb")
        if wandb is not None and getattr(wandb, "run", None) is not None:
            wandb.finish()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not self.enabled:
            return
        from robustlab.results.report import ReportError, run_report

        sweep_dir = Path(str(config.hydra.sweep.dir))
        use_wandb = sweep_logs_to_wandb(config) if self.wandb is None else bool(self.wandb)
        print(f"robustlab: the sweep's report (robustlab-report {sweep_dir})")
        try:
            report = run_report(sweep_dir)
        except ReportError as err:
            print(f"robustlab: no report: {err}", file=sys.stderr)
            return
        if use_wandb:
            from robustlab.results.wandb_summary import log_summary

            try:  # the cells and their report are done: a W&B failure does not fail the sweep
                run_dir = log_summary(report, sweep_dir)
            except Exception as err:  # noqa: BLE001
                line = str(err).splitlines()[0] if str(err) else type(err).__name__
                print(f"robustlab: the W&B summary run failed: {line}", file=sys.stderr)
                return
            if run_dir is not None:
                print(f"wrote {run_dir} (W&B summary run; upload it with: wandb sync {run_dir})")
