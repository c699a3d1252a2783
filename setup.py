"""Packages: robustlab's own, plus conf/ (the Hydra config tree, kept at the top of the repository)
shipped as the package ``robustlab.conf``, which Hydra finds as ``pkg://robustlab.conf``; so a
non-editable install runs from any folder. Everything else is in pyproject.toml."""

from pathlib import Path

from setuptools import find_packages, setup

CONF = Path(__file__).parent / "conf"
CONF_PACKAGES = [
    "robustlab.conf" + "".join(f".{part}" for part in d.relative_to(CONF).parts)
    for d in sorted([CONF, *(p for p in CONF.rglob("*") if p.is_dir())])
]

setup(
    packages=[*find_packages(include=["robustlab", "robustlab.*"]), *CONF_PACKAGES],
    package_dir={"robustlab.conf": "conf"},
)
