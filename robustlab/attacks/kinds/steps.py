"""The PGD-family step size rule shared by PGD and EOT-PGD."""

from __future__ import annotations

from typing import Any

DEFAULT_STEP_FACTOR = 2.5  # step = 2.5 * eps / steps (Madry et al. 2018) without a ratio


def resolve_step_size(p: dict[str, Any]) -> None:
    """``step_size`` null -> ``step_ratio * eps``, or ``2.5 * eps / steps`` without a ratio;
    ``step_ratio`` is then dropped from the effective parameters."""
    ratio = p.pop("step_ratio", None)
    if p["step_size"] is None:
        p["step_size"] = (ratio if ratio else DEFAULT_STEP_FACTOR / max(p["steps"], 1)) * p["eps"]
