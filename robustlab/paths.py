"""Where the config tree lives: conf/ at the top of the repository, installed as the package
``robustlab.conf`` (editable or not), so Hydra finds it as ``pkg://robustlab.conf``."""

from importlib.resources import files
from pathlib import Path

CONF_PACKAGE = "robustlab.conf"
CONF_SEARCH_PATH = f"pkg://{CONF_PACKAGE}"
CONF_DIR = Path(str(files(CONF_PACKAGE)))
