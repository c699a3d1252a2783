"""Logger construction: CSV always available, W&B offline unless a key or WANDB_MODE says otherwise."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from hydra.utils import instantiate


def wandb_offline() -> bool:
    """Offline unless WANDB_MODE=online, or an API key is configured (env or ~/.netrc)."""
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in ("offline", "disabled", "dryrun"):
        return True
    if mode == "online" or os.environ.get("WANDB_API_KEY"):
        return False
    netrc = Path.home() / ".netrc"
    return not (netrc.exists() and "api.wandb.ai" in netrc.read_text(errors="ignore"))


def wandb_logger(
    project: str,
    save_dir: str,
    name: str,
    group: str | None = None,
    entity: str | None = None,
    run_id: str | None = None,
):
    """A WandbLogger grouped by sweep (the sweep directory's name). The run id derives from the
    cell's directory unless given, so a resumed cell logs into the same W&B run."""
    from pytorch_lightning.loggers import WandbLogger

    cell_dir = Path(save_dir).resolve()
    if group is None:
        group = cell_dir.parent.name
    if run_id is None:
        run_id = hashlib.sha1(str(cell_dir).encode()).hexdigest()[:16]
    return WandbLogger(
        project=project,
        entity=entity,
        group=group,
        name=name,
        save_dir=save_dir,
        offline=wandb_offline(),
        id=run_id,
        resume="allow",
    )


def build_loggers(logger_cfg: Any) -> list:
    """Instantiate every logger named in the ``logger`` group (a mapping name -> config)."""
    return [instantiate(node) for node in (logger_cfg or {}).values()]
