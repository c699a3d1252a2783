"""Old command-line spellings, refused in one line that names the new one (before Hydra runs,
whose own message for them would be a many-line "not in struct" error)."""

from __future__ import annotations

import dataclasses
import re

from robustlab.attacks.kinds import spec_classes
from robustlab.paths import CONF_DIR
from robustlab.plan.errors import ConfigError

RENAMED = {
    "attacks": "attack=[fgsm,pgd] (attacks are a multi-select config group)",
    "eval.inferences": "inference=[plain,mi_ol] (wrappers are a multi-select config group)",
    "attack.eps": "threat.eps=V (the threat model every L-inf attack interpolates)",
    "attack.eps_l2": "threat.eps_l2=V (the threat model every L2 attack interpolates)",
}
WRAPPER_KEYS = (
    "lam_pl",
    "lam_ol",
    "n_pl",
    "n_ol",
    "threshold",
    "pool",
    "pool_size",
    "pool_seed",
    "chunk_size",
    "pool_dataset",
    "mode",
    "bpda_temperature",
)
OVERRIDE = re.compile(r"^(?P<plus>\+{0,2})(?P<key>[\w.]+)=")


def _attack_fields() -> set[str]:
    return {f.name for cls in spec_classes().values() for f in dataclasses.fields(cls)}


def check_spellings(args: list[str]) -> None:
    """ConfigError for the first override in ``args`` written the way robustlab used to take it."""
    for arg in args:
        match = OVERRIDE.match(arg)
        if not match:
            continue
        key, plus = match["key"], match["plus"]
        parts = key.split(".")
        if key in RENAMED:
            raise ConfigError(f"{arg!r}: {key} is gone; use {RENAMED[key]}")
        if parts[0] == "attack" and len(parts) == 2 and parts[1] in _attack_fields():
            raise ConfigError(
                f"{arg!r}: attack.{parts[1]} no longer sets every attack; set one attack with "
                f"attack.NAME.{parts[1]}=V (e.g. attack.pgd.{parts[1]})"
            )
        if parts[0] == "attack" and len(parts) == 3 and plus == "+" and _has_key(*parts[1:]):
            raise ConfigError(
                f"{arg!r}: the selected attack {parts[1]} has {parts[2]} already; "
                f"use {arg.lstrip('+')}"
            )
        if parts[0] == "inference" and len(parts) == 2 and parts[1] in WRAPPER_KEYS:
            raise ConfigError(
                f"{arg!r}: each wrapper sits under its own key; use inference.NAME.{parts[1]}=V "
                f"(e.g. inference.mi_ol.{parts[1]})"
            )


def _has_key(attack: str, key: str) -> bool:
    """True when the built-in attack config ``attack`` states ``key``."""
    path = CONF_DIR / "attack" / f"{attack}.yaml"
    return path.is_file() and re.search(rf"^{re.escape(key)}:", path.read_text(), re.M) is not None
