"""Config helpers: the hash that names a cell and the resolved config saved beside its results."""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from robustlab.precision import hashed_node

# Keys that do not change what a cell computes.
_NON_SEMANTIC = ("output_dir", "hydra", "logger", "seeds")
# Blanked rather than dropped (as ``seed_group`` always did, so its values stay what records
# already hold): where trained weights are kept (``cache.dir``), and whether they are reused
# (``cache.enabled``; the cache key covers everything that changes the weights, so a reused
# checkpoint is the one training would produce). A finished sweep rerun with another cache dir,
# or the cache off, finds its cells complete.
_BLANKED = ("cache",)
# Options added after records existed, hashed as ``node -> what is hashed`` (None: dropped): a
# cell that does not use them keeps the hash its records carry; one that does
# (precision.attack=bf16, ...) hashes them, so it never reuses another's records.
# eval.grad_check_points sizes a diagnostic (the gradient check's sample) and changes no verdict.
_HASHED_AS = {
    "precision": hashed_node,
    "eval": lambda node: (
        {k: v for k, v in node.items() if k != "grad_check_points"}
        if isinstance(node, dict)
        else node
    ),
}


def to_container(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)


def config_hash(cfg: DictConfig | dict[str, Any], keys: tuple[str, ...] | None = None) -> str:
    """SHA-256 (first 16 hex) of the resolved config, restricted to ``keys`` when given."""
    data = to_container(cfg) if isinstance(cfg, DictConfig) else dict(cfg)
    if keys is not None:
        data = {k: data.get(k) for k in keys}
    else:
        data = {k: v for k, v in data.items() if k not in _NON_SEMANTIC}
        data.update({k: None for k in _BLANKED if k in data})
        for k, hashed in _HASHED_AS.items():
            if k in data:
                data[k] = hashed(data[k])
                if data[k] is None:
                    del data[k]
    blob = json.dumps(data, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def seed_group(cfg: DictConfig) -> str:
    """The hash cells differing only by seed share: the config hashed with ``seed`` set to 0
    before resolution, so values interpolated from it (``defense.seed: ${seed}``) match too."""
    same = copy.deepcopy(cfg)
    with open_dict(same):
        same.seed = 0
        same.cache = None  # blanked by config_hash too; kept so the hash is the same either way
    return config_hash(same)
