"""Versions of the libraries that produced a record, read without importing them."""

from __future__ import annotations

import platform
from importlib import metadata

DISTRIBUTIONS = {
    "torch": "torch",
    "pytorch_lightning": "pytorch-lightning",
    "torchattacks": "torchattacks",
    "hydra": "hydra-core",
    "robustlab": "robustlab",
}


def library_versions() -> dict[str, str]:
    """Installed versions by short name ("absent" when not installed), plus the Python version."""
    out = {}
    for name, dist in DISTRIBUTIONS.items():
        try:
            out[name] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    out["python"] = platform.python_version()
    return out
