"""Logger construction: CSV always available; W&B offline unless asked online, with all of its
files under the cell's directory.

A cell's W&B run carries the cell's resolved config (resolved_config.yaml, written into the cell
directory before the loggers are built), Lightning's training curves, the evaluation metrics and,
through ``CellWandbLogger.log_records``, the records as a table with their sanity flags."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import OmegaConf

from robustlab.results.flags import flag_meaning

WANDB_MODES = ("offline", "online", "disabled")

# Every folder W&B (0.31) writes to, each read from its variable; unset, they are the home
# directory's ~/.cache/wandb (its service's logs, the artifact cache), ~/.config/wandb (settings),
# ~/.local/share/wandb (data) and ./artifacts. Here: folders of the cell's directory.
WANDB_FOLDERS = {
    "WANDB_DIR": ".",  # the run itself: <cell>/wandb/offline-run-*
    "WANDB_CACHE_DIR": "wandb/cache",
    "WANDB_CONFIG_DIR": "wandb/config",
    "WANDB_DATA_DIR": "wandb/data",
    "WANDB_ARTIFACT_DIR": "wandb/artifacts",
}
# The values this process set (not the user's): the next cell of a sequential sweep moves them.
_SET_HERE: dict[str, str] = {}


def check_wandb_mode(mode: Any) -> None:
    """``logger.wandb.mode`` must be one of WANDB_MODES (ValueError: one line)."""
    if mode not in WANDB_MODES:
        raise ValueError(f"logger.wandb.mode={mode!r} is not one of {list(WANDB_MODES)}")


def check_loggers(logger_cfg: Any) -> None:
    """The checks of the ``logger`` group a plan can run before anything is built."""
    wandb = (logger_cfg or {}).get("wandb")
    if wandb is not None:
        check_wandb_mode(wandb.get("mode", "offline"))


def wandb_mode(mode: str = "offline") -> str:
    """The W&B mode a run gets: disabled if ``logger.wandb.mode`` or WANDB_MODE says disabled,
    online if either says online, offline otherwise. A key (WANDB_API_KEY, ~/.netrc) does not
    switch it online: without a network an online run fails after the evaluation."""
    check_wandb_mode(mode)
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    if "disabled" in (mode, env):
        return "disabled"
    if "online" in (mode, env):
        return "online"
    return "offline"


def keep_wandb_files_under(cell_dir: Path, online: bool = False) -> bool:
    """Point each of W&B's folders the user did not set at a folder of ``cell_dir``, so nothing
    lands in the home directory; True if one of them moved. Online, the settings folder stays
    where W&B keeps it (a self-hosted server's address lives there)."""
    moved = False
    for var, sub in WANDB_FOLDERS.items():
        if online and var == "WANDB_CONFIG_DIR":
            continue
        current = os.environ.get(var)
        if current is None or current == _SET_HERE.get(var):
            folder = str((cell_dir / sub).resolve())
            moved |= current != folder
            os.environ[var] = _SET_HERE[var] = folder
    return moved


SEED_DIR = re.compile(r"seed_\d+")
RESOLVED_CONFIG = "resolved_config.yaml"

# The records table of a cell's run and of the sweep's summary run: one row per record.
RECORD_COLUMNS = [
    "dataset",
    "model",
    "defense",
    "inference",
    "baseline_of",
    "attack",
    "threat_model",
    "norm",
    "eps",
    "seed",
    "n_examples",
    "clean_acc",
    "robust_acc",
    "robust_ci_low",
    "robust_ci_high",
    "sanity_flags",
]


def record_rows(records: list[dict[str, Any]]) -> list[list[Any]]:
    """The rows of the records table (RECORD_COLUMNS); flags joined by ', '."""
    rows = []
    for r in records:
        ci = r.get("robust_ci") or (None, None)
        values = {
            **{k: r.get(k) for k in RECORD_COLUMNS},
            "eps": float(r["eps"]),
            "robust_ci_low": ci[0],
            "robust_ci_high": ci[1],
            "sanity_flags": ", ".join(r.get("sanity_flags") or []),
        }
        rows.append([values[k] for k in RECORD_COLUMNS])
    return rows


def default_group(cell_dir: str | os.PathLike) -> str:
    """The W&B group of a cell whose ``logger.wandb.group`` is null: the name of its sweep
    directory, the folder holding the cell (a per-seed folder ``seed_S`` counts as its cell)."""
    cell = Path(cell_dir).resolve()
    if SEED_DIR.fullmatch(cell.name):
        cell = cell.parent
    return cell.parent.name


def run_config(cell_dir: Path) -> dict[str, Any] | None:
    """The cell's resolved config as the run's W&B config (None where the cell has none yet)."""
    path = cell_dir / RESOLVED_CONFIG
    if not path.is_file():
        return None
    return OmegaConf.to_container(OmegaConf.load(path), resolve=False)


def finish_other_run(run_id: str | None = None) -> None:
    """Finish this process's active W&B run unless it is ``run_id``: Lightning's WandbLogger
    would otherwise log the next cell of a sequential sweep (or of a reused joblib worker) into
    the previous cell's run."""
    import wandb

    if wandb.run is not None and wandb.run.id != run_id:
        wandb.finish()


def wandb_files_under(folder: Path, online: bool = False) -> None:
    """``keep_wandb_files_under(folder)``, and where that moved a folder, the W&B session of this
    process (started with the old folders: W&B reads them only when a session starts) closed, so
    the next run starts one with the new folders."""
    if keep_wandb_files_under(folder, online):
        import wandb

        wandb.teardown()


def log_records(logger, records: list[dict[str, Any]]) -> None:
    """``CellWandbLogger.log_records``: the records table (RECORD_COLUMNS), and the flags raised:
    ``flags_raised`` (names) and ``flagged_records`` (a count) in the run's summary, a
    ``sanity_flags`` table (flag, records, what it means)."""
    logger.log_table("records", columns=RECORD_COLUMNS, data=record_rows(records))
    counts: dict[str, int] = {}
    for r in records:
        for flag in r.get("sanity_flags") or []:
            counts[flag] = counts.get(flag, 0) + 1
    summary = logger.experiment.summary
    summary["flags_raised"] = sorted(counts)
    summary["flagged_records"] = sum(1 for r in records if r.get("sanity_flags"))
    if counts:
        rows = [[f, n, flag_meaning(f)] for f, n in sorted(counts.items())]
        logger.log_table("sanity_flags", columns=["flag", "records", "meaning"], data=rows)


def cell_logger_class() -> type:
    """``CellWandbLogger`` (Lightning's WandbLogger plus ``log_records``), made on first use:
    Lightning is imported only by those who log (the plan's checks, the report and the sweep's
    callbacks import this module without it)."""
    cls = globals().get("CellWandbLogger")
    if cls is None:
        from pytorch_lightning.loggers import WandbLogger
        from pytorch_lightning.utilities import rank_zero_only

        doc = "Lightning's WandbLogger, plus the records of the cell as a table and its flags."
        namespace = {
            "__doc__": doc,
            "__module__": __name__,
            "log_records": rank_zero_only(log_records),
        }
        cls = globals()["CellWandbLogger"] = type("CellWandbLogger", (WandbLogger,), namespace)
    return cls


def __getattr__(name: str):
    if name == "CellWandbLogger":
        return cell_logger_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def wandb_logger(
    project: str,
    save_dir: str,
    name: str,
    group: str | None = None,
    entity: str | None = None,
    run_id: str | None = None,
    mode: str = "offline",
):
    """A CellWandbLogger grouped by sweep (``default_group``), in ``wandb_mode(mode)``, its files
    under ``save_dir``, its config the cell's resolved config. The run id derives from the cell's
    directory unless given, so a resumed cell logs into the same W&B run."""
    resolved = wandb_mode(mode)
    cell_dir = Path(save_dir).resolve()
    if group is None:
        group = default_group(cell_dir)
    if run_id is None:
        run_id = hashlib.sha1(str(cell_dir).encode()).hexdigest()[:16]
    if resolved != "disabled":
        finish_other_run(run_id)
        wandb_files_under(cell_dir, online=resolved == "online")
    else:
        keep_wandb_files_under(cell_dir)
    return cell_logger_class()(
        project=project,
        entity=entity,
        group=group,
        name=name,
        save_dir=save_dir,
        offline=resolved != "online",
        id=run_id,
        resume="allow",
        # explicit, so it wins over WANDB_MODE (which Lightning sets to "dryrun" for an offline
        # logger and leaves set for the next cell of a sweep)
        mode=resolved,
        config=run_config(cell_dir),
    )


def build_loggers(logger_cfg: Any) -> list:
    """Instantiate every logger named in the ``logger`` group (a mapping name -> config)."""
    check_loggers(logger_cfg)
    return [instantiate(node) for node in (logger_cfg or {}).values()]
