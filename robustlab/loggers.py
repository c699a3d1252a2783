"""Logger construction: CSV always available; W&B offline unless asked online, with all of its
files under the cell's directory."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from hydra.utils import instantiate

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
    """``logger.wandb.mode`` must be one of WANDB_MODES (ConfigError: one line)."""
    if mode not in WANDB_MODES:
        from robustlab.plan.errors import ConfigError  # here: the plan may import this module

        raise ConfigError(f"logger.wandb.mode={mode!r} is not one of {list(WANDB_MODES)}")


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


def keep_wandb_files_under(cell_dir: Path) -> None:
    """Point each of W&B's folders the user did not set at a folder of ``cell_dir``, so nothing
    lands in the home directory."""
    for var, sub in WANDB_FOLDERS.items():
        current = os.environ.get(var)
        if current is None or current == _SET_HERE.get(var):
            folder = str((cell_dir / sub).resolve())
            os.environ[var] = _SET_HERE[var] = folder


def wandb_logger(
    project: str,
    save_dir: str,
    name: str,
    group: str | None = None,
    entity: str | None = None,
    run_id: str | None = None,
    mode: str = "offline",
):
    """A WandbLogger grouped by sweep (the sweep directory's name), in ``wandb_mode(mode)``, its
    files under ``save_dir``. The run id derives from the cell's directory unless given, so a
    resumed cell logs into the same W&B run."""
    from pytorch_lightning.loggers import WandbLogger

    resolved = wandb_mode(mode)
    cell_dir = Path(save_dir).resolve()
    if group is None:
        group = cell_dir.parent.name
    if run_id is None:
        run_id = hashlib.sha1(str(cell_dir).encode()).hexdigest()[:16]
    keep_wandb_files_under(cell_dir)
    return WandbLogger(
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
    )


def build_loggers(logger_cfg: Any) -> list:
    """Instantiate every logger named in the ``logger`` group (a mapping name -> config)."""
    check_loggers(logger_cfg)
    return [instantiate(node) for node in (logger_cfg or {}).values()]
