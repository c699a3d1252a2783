"""Where the project's config tree lives (conf/ beside the package in a checkout)."""

from pathlib import Path

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
