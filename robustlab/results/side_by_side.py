"""Two predictors of one net side by side: the bare classifier (inference ``plain``) and a defended
predictor, row by row (clean, benign pass rate, each attack / natural shift), as the translation
defense's report asks (Amich & Eshete 2022)."""

from __future__ import annotations

from typing import Any

from robustlab.results.table import fmt_eps, render


def side_by_side_table(
    records_defended: list[dict[str, Any]],
    records_bare: list[dict[str, Any]],
    benign_pass_rate: float | None = None,
) -> str:
    """One row per defended record (clean first), the bare classifier's matching record beside it
    (same attack, norm and eps; the bare net has one white-box threat model)."""
    bare = {(r["attack"], r["norm"], float(r["eps"])): r for r in records_bare}

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.1f}"

    first_bare = records_bare[0]["clean_acc"] if records_bare else None
    rows = [["clean", "-", "-", pct(first_bare), pct(records_defended[0]["clean_acc"])]]
    if benign_pass_rate is not None:
        rows.append(["benign pass rate", "-", "-", "100.0", pct(benign_pass_rate)])
    for r in records_defended:
        match = bare.get((r["attack"], r["norm"], float(r["eps"])))
        rows.append(
            [
                r["attack"],
                r["threat_model"],
                fmt_eps(r["eps"]),
                pct(match["robust_acc"] if match else None),
                pct(r["robust_acc"]),
            ]
        )
    header = ["row", "threat", "eps/severity", "bare %", "defended %"]
    return render(header, rows)
