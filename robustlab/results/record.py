"""The record contract: one JSON object per (attack, eps, threat model) of a cell, plus worst cases.

Every field listed in ``REQUIRED_FIELDS`` is present in every record (see ../shared/DESIGN.md).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from typing import Any

REQUIRED_FIELDS = (
    "run_id",
    "config_hash",
    "dataset",
    "model",
    "defense",
    "inference",
    "attack",
    "threat_model",
    "norm",
    "eps",
    "n_examples",
    "clean_acc",
    "robust_acc",
    "seed",
    "sanity_flags",
    "forward_passes",
    "backward_passes",
    "wall_seconds",
    "versions",
    "started",
    "finished",
)

WORST_CASE = "worst_case"


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval for a binomial proportion (Wilson 1927)."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half)))


@dataclass
class Record:
    """One evaluated (attack, eps, threat model) of one cell."""

    run_id: str
    config_hash: str
    dataset: str
    model: str
    defense: str
    inference: str
    attack: str
    threat_model: str
    norm: str
    eps: float
    n_examples: int
    clean_acc: float
    robust_acc: float
    seed: int
    n_clean_correct: int = 0
    n_robust: int = 0
    clean_ci: tuple[float, float] = (0.0, 1.0)
    robust_ci: tuple[float, float] = (0.0, 1.0)
    sanity_flags: list[str] = field(default_factory=list)
    forward_passes: float = 0.0
    backward_passes: float = 0.0
    wall_seconds: float = 0.0
    attack_params: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    started: str = ""
    finished: str = ""
    seed_group: str = ""  # hash of the config without the seed: records that differ only by seed
    test_points: str = ""  # fingerprint of the evaluated inputs and labels (pairing needs equal)
    baseline_of: str = ""  # an eval.compare_with baseline: the defense of the cell it was beside
    attack_precision: str = "fp32"  # bf16: crafted under bf16 autocast (precision.attack=bf16)
    memory_format: str = "contiguous"  # the net's, in the evaluation (precision.channels_last)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["clean_ci"] = list(self.clean_ci)
        out["robust_ci"] = list(self.robust_ci)
        return out


def validate_record(obj: dict[str, Any]) -> None:
    """Raise ValueError naming the first missing contract field."""
    missing = [k for k in REQUIRED_FIELDS if k not in obj]
    if missing:
        raise ValueError(f"record is missing contract fields {missing}")


META_KEYS = ("run_id", "config_hash", "dataset", "model", "defense", "inference", "seed")
_RECORD_FIELDS = {f.name for f in fields(Record)}


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def record_from_counts(
    meta: dict[str, Any],
    *,
    attack: str,
    threat_model: str,
    norm: str,
    eps: float,
    n: int,
    n_clean: int,
    n_robust: int,
    **extra: Any,
) -> dict[str, Any]:
    """A contract record from counts: accuracies and their Wilson intervals derived here.
    ``meta`` holds META_KEYS (+ versions, started); ``extra`` fills other Record fields (costs,
    attack_params, sanity_flags, finished) and any further keys, which are kept as they are."""
    own = {k: extra.pop(k) for k in list(extra) if k in _RECORD_FIELDS}
    rec = Record(
        **{k: meta[k] for k in META_KEYS},
        versions=meta.get("versions", {}),
        started=meta.get("started", ""),
        seed_group=meta.get("seed_group", ""),
        test_points=meta.get("test_points", ""),
        baseline_of=meta.get("baseline_of", ""),
        attack=attack,
        threat_model=threat_model,
        norm=norm,
        eps=float(eps),
        n_examples=n,
        clean_acc=n_clean / n,
        robust_acc=n_robust / n,
        n_clean_correct=n_clean,
        n_robust=n_robust,
        clean_ci=wilson_interval(n_clean, n),
        robust_ci=wilson_interval(n_robust, n),
        **{"finished": now_iso(), **own},
    ).to_dict()
    rec.update(extra)
    return rec
