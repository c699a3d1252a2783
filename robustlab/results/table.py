"""The plain-text table printed at the end of a run, and the loud sanity-flag banner."""

from __future__ import annotations

from typing import Any

from robustlab.results.record import WORST_CASE, wilson_interval


def fmt_eps(eps: Any) -> str:
    """``8/255`` for multiples of 1/255 that are not short decimals, else the shortest float."""
    eps = float(eps)
    k = eps * 255
    if 0 < eps < 1 and abs(k - round(k)) < 1e-6 and round(eps, 4) != eps:
        return f"{round(k)}/255"
    return f"{eps:g}"


def interval(rec: dict[str, Any], which: str) -> tuple[float, float, float]:
    """(accuracy, lo, hi) for ``which`` in {"clean", "robust"}; Wilson from counts if CI absent."""
    acc = float(rec[f"{which}_acc"])
    ci = rec.get(f"{which}_ci")
    if not ci:
        n = int(rec.get("n_examples", 0))
        ci = wilson_interval(round(acc * n), n)
    return acc, float(ci[0]), float(ci[1])


def fmt_acc(rec: dict[str, Any], which: str = "robust") -> str:
    """Percentage with its 95% interval, e.g. ``87.5 [83.1, 90.9]``."""
    acc, lo, hi = interval(rec, which)
    return f"{100 * acc:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"


def render(header: list[str], rows: list[list[str]]) -> str:
    """Left-aligned plain-text columns separated by two spaces, with a dashed rule."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def fmt_protocols(rec: dict[str, Any], which: str = "robust") -> str:
    """``1 draw 42.0, maj 38.5`` for a record of a randomized predictor (its headline is
    worst-of-k); empty for a deterministic one."""
    if "score_draws" not in rec:
        return ""
    one, maj = rec[f"{which}_acc_one_draw"], rec[f"{which}_acc_majority_of_k"]
    return f"1 draw {100 * one:.1f}, maj {100 * maj:.1f}"


def _flags(rec: dict[str, Any]) -> str:
    return " ".join(f"!! {f}" for f in rec.get("sanity_flags") or [])


def format_cell_table(records: list[dict[str, Any]]) -> str:
    """One row per record, clean accuracy as a header line, worst-case rows last and marked."""
    if not records:
        return "(no records)"
    first = records[0]
    clean = sorted({fmt_acc(r, "clean") for r in records})
    title = (
        f"{first['dataset']} / {first['model']} / {first['defense']} / {first['inference']}"
        f"  (n={first['n_examples']})"
    )
    randomized = "score_draws" in first
    if any(r.get("attack_precision", "fp32") != "fp32" for r in records):
        title += "  attacks crafted in bf16 autocast (verdicts fp32)"
    clean_line = "clean % [95% CI]: " + "; ".join(clean)
    if randomized:
        k = first["score_draws"]
        title += f"  randomized: worst of {k} draws (right on all), beside 1 draw and majority"
        clean_line += f"  ({fmt_protocols(first, 'clean')} of {k})"
    ordered = [r for r in records if r["attack"] != WORST_CASE]
    ordered += [r for r in records if r["attack"] == WORST_CASE]
    header = ["attack", "threat", "norm", "eps", "robust % [95% CI]"]
    header += ["1 draw, maj %"] if randomized else []
    floor = any("robust_acc_without_transfer" in r for r in records)
    header += ["w/o transfer %"] if floor else []
    header += ["fwd/ex", "bwd/ex", "sec", "FLAGS"]
    rows = []
    for r in ordered:
        row = [
            f">> {r['attack']}" if r["attack"] == WORST_CASE else r["attack"],
            r["threat_model"],
            r["norm"],
            fmt_eps(r["eps"]),
            fmt_acc(r),
        ]
        row += [fmt_protocols(r).replace("1 draw ", "").replace("maj ", "")] if randomized else []
        if floor:
            raw = r.get("robust_acc_without_transfer")
            row.append("" if raw is None else f"{100 * raw:.1f}")
        row += [
            f"{float(r['forward_passes']):.1f}",
            f"{float(r['backward_passes']):.1f}",
            f"{float(r['wall_seconds']):.1f}",
            _flags(r),
        ]
        rows.append(row)
    return "\n".join([title, clean_line, render(header, rows)])


def format_flags_banner(records: list[dict[str, Any]]) -> str:
    """A loud multi-line warning naming every flagged record; empty when nothing is flagged."""
    flagged = [r for r in records if r.get("sanity_flags")]
    if not flagged:
        return ""
    bar = "!" * 78
    lines = [
        bar,
        "!! SANITY FLAGS RAISED: these robust accuracies may be overestimated or meaningless",
        bar,
    ]
    for r in flagged:
        where = f"{r['attack']} {r['threat_model']} {r['norm']} eps={fmt_eps(r['eps'])}"
        lines.append(f"!!   {where}: {', '.join(r['sanity_flags'])}")
    lines.append(bar)
    return "\n".join(lines)
