"""A researcher's own defenses, attacks, datasets, models and wrappers, kept outside robustlab.

A plugin folder holds Python modules and a ``conf/`` tree laid out like robustlab's
(``conf/defense/my_defense.yaml`` with ``_target_: my_module.MyDefense``). It is added either with
Hydra's own ``hydra.searchpath=[file://FOLDER/conf]`` (the modules then importable from the working
folder or PYTHONPATH), or with ``ROBUSTLAB_PLUGINS=FOLDER[:FOLDER...]``, which does both.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ENV = "ROBUSTLAB_PLUGINS"


def add_plugins_from_environment(args: list[str]) -> list[str]:
    """Put the working folder and each ``ROBUSTLAB_PLUGINS`` folder on ``sys.path`` (as
    ``python -m`` does for the working folder) and return ``args`` with their config trees on
    Hydra's search path (unless ``args`` sets ``hydra.searchpath`` itself)."""
    folders = [Path(p).resolve() for p in os.environ.get(ENV, "").split(os.pathsep) if p]
    for folder in [Path.cwd(), *folders]:
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    if not folders or any(a.lstrip("+").startswith("hydra.searchpath=") for a in args):
        return args
    trees = [f / "conf" if (f / "conf").is_dir() else f for f in folders]
    return [*args, "hydra.searchpath=[" + ",".join(f"'file://{t}'" for t in trees) + "]"]
