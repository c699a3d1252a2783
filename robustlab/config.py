"""Config helpers: the hash that names a cell and the resolved config saved beside its results."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from omegaconf import DictConfig, OmegaConf

# Keys that do not change what a cell computes.
_NON_SEMANTIC = ("output_dir", "hydra", "logger")


def to_container(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)


def config_hash(cfg: DictConfig | dict[str, Any], keys: tuple[str, ...] | None = None) -> str:
    """SHA-256 (first 16 hex) of the resolved config, restricted to ``keys`` when given."""
    data = to_container(cfg) if isinstance(cfg, DictConfig) else dict(cfg)
    if keys is not None:
        data = {k: data.get(k) for k in keys}
    else:
        data = {k: v for k, v in data.items() if k not in _NON_SEMANTIC}
    blob = json.dumps(data, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _when(value: Any, members: Any, then: Any) -> Any:
    """``${rl.when:${defense.name},${grid.mi_defenses},${grid.mi_wrappers}}``: ``then`` if
    ``value`` is one of ``members``, else an empty list (per-cell choices inside one sweep)."""
    return then if value in list(members) else []


if not OmegaConf.has_resolver("rl.when"):
    OmegaConf.register_new_resolver("rl.when", _when)
