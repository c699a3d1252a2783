"""Seeds and baselines over records read back from disk: the spread of each cell across seeds,
and paired comparisons of each defense against a baseline on the same test points.

Records that differ only by seed share a ``seed_group`` (a hash of their config without the
seed). A comparison pairs a record with the baseline defense's record of the same dataset, model,
wrapper, attack, threat model, norm, eps and seed, through their per-example outcomes
(:mod:`robustlab.results.outcomes`, statistics in :mod:`robustlab.results.paired`).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from statistics import mean, stdev
from typing import Any

from robustlab.results.outcomes import outcomes_of
from robustlab.results.paired import PairedDifference, SeedCombined, combine_seeds, pair
from robustlab.results.record import WORST_CASE
from robustlab.results.table import fmt_eps, render

CELL = ("dataset", "model", "defense", "inference", "attack", "threat_model", "norm", "eps")
MATCH = ("dataset", "model", "inference", "attack", "threat_model", "norm", "eps", "seed")


@dataclass
class SeedRow:
    """One cell's records over seeds."""

    key: dict[str, Any]
    group: str = ""  # seed_group: the config up to the seed
    records: dict[int, dict[str, Any]] = field(default_factory=dict)  # seed -> record

    @property
    def seeds(self) -> list[int]:
        return sorted(self.records)

    def values(self, which: str) -> list[float]:
        return [float(self.records[s][f"{which}_acc"]) for s in self.seeds]

    def spread(self) -> dict[str, dict[str, float]]:
        """``stats`` of clean and robust accuracy."""
        return {which: self.stats(which) for which in ("clean", "robust")}

    def stats(self, which: str) -> dict[str, float]:
        v = self.values(which)
        sd = stdev(v) if len(v) > 1 else 0.0
        return {"mean": mean(v), "sd": sd, "min": min(v), "max": max(v), "n": len(v)}


def seed_rows(records: list[dict[str, Any]]) -> list[SeedRow]:
    """Records grouped by cell and config up to the seed (the latest record per seed)."""
    rows: dict[tuple, SeedRow] = {}
    for r in records:
        group = str(r.get("seed_group") or r["config_hash"])
        row = rows.setdefault(
            (*(str(r[k]) for k in CELL), group), SeedRow({k: r[k] for k in CELL}, group)
        )
        seed = int(r["seed"])
        if seed not in row.records or str(r["finished"]) >= str(row.records[seed]["finished"]):
            row.records[seed] = r
    return list(rows.values())


def fmt_spread(stats: dict[str, float]) -> str:
    """``41.2 ± 1.3 [39.5, 42.5] x3`` (percent: mean ± sd [min, max] x seeds)."""
    m, sd, lo, hi = (100 * stats[k] for k in ("mean", "sd", "min", "max"))
    return f"{m:.1f} ± {sd:.1f} [{lo:.1f}, {hi:.1f}] x{stats['n']}"


def format_seed_table(rows: list[SeedRow]) -> str:
    """Cells run with more than one seed: clean and robust accuracy over the seeds."""
    multi = [r for r in rows if len(r.records) > 1]
    if not multi:
        return ""
    header = ["defense", "inference", "attack", "threat", "eps", "seeds", "clean %", "robust %"]
    body = [
        [
            r.key["defense"],
            r.key["inference"],
            r.key["attack"],
            r.key["threat_model"],
            fmt_eps(r.key["eps"]),
            ",".join(map(str, r.seeds)),
            fmt_spread(r.stats("clean")),
            fmt_spread(r.stats("robust")),
        ]
        for r in sorted(multi, key=_order)
    ]
    title = "Over seeds (percent: mean ± sd [min, max] x seeds):"
    return title + "\n" + render(header, body)


def _order(row) -> tuple:
    k = row.key
    return (
        k["dataset"],
        k["defense"],
        k["inference"],
        k["attack"] == WORST_CASE,
        k["attack"],
        k["threat_model"],
        float(k["eps"]),
    )


@dataclass
class Comparison:
    """``defense`` minus ``baseline`` on one cell, per seed and combined."""

    key: dict[str, Any]
    baseline: str
    clean: SeedCombined
    robust: SeedCombined
    group: str = ""  # the compared row's seed_group

    @property
    def p_values(self) -> list[float]:
        """Robust-accuracy McNemar p-values, by seed."""
        return [self.robust.per_seed[s].p_value for s in sorted(self.robust.per_seed)]

    def per_seed_deltas(self, which: str = "robust") -> list[float]:
        combined = getattr(self, which)
        return [combined.per_seed[s].delta for s in sorted(combined.per_seed)]


def compare(records: list[dict[str, Any]], baseline: str) -> tuple[list[Comparison], list[str]]:
    """Every other row's records paired with ``baseline``'s; also the reasons of the pairs that
    could not be made (one line each): records of different test points (``test_points``
    fingerprints differ), or a baseline that several configs in the directory could be.

    ``baseline`` is a defense (``pgd_at``: pairs each wrapper and threat model with the same one
    of that defense) or a defense and wrapper (``mixup+plain``: pairs every other wrapper with
    that one, on the baseline's own threat model when it has only one, e.g. MI-OL's oblivious and
    adaptive rows both against plain mixup's adaptive row). When a record's own run wrote a
    baseline record (``eval.compare_with``), that one is its counterpart; another cell's
    (``baseline_of``, trained with that cell's budget) is used only where nothing else is.
    """
    defense, _, inference = baseline.partition("+")

    def is_base(r) -> bool:
        return r["defense"] == defense and (not inference or r["inference"] == inference)

    base: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    threats: dict[tuple, set] = defaultdict(set)
    for r in filter(is_base, records):
        where = tuple(str(r[k]) for k in MATCH if k not in ("inference", "threat_model"))
        base[(*where, r["inference"], r["threat_model"])].append(r)
        threats[(*where, r["inference"])].add(r["threat_model"])

    def candidates(rec) -> list[dict[str, Any]]:
        where = tuple(str(rec[k]) for k in MATCH if k not in ("inference", "threat_model"))
        wrapper = inference or rec["inference"]
        found = base.get((*where, wrapper, rec["threat_model"]), [])
        only = threats.get((*where, wrapper), set())
        if not found and inference and len(only) == 1:
            found = base.get((*where, wrapper, next(iter(only))), [])
        return found

    def counterpart(rec) -> dict[str, Any] | None:
        found = candidates(rec)
        same_run = [r for r in found if r.get("_source") == rec.get("_source")]
        if not same_run:  # another cell's compare_with baseline belongs to that cell
            found = [r for r in found if not r.get("baseline_of")] or found
        if same_run or len({r.get("seed_group") or r["config_hash"] for r in found}) <= 1:
            return max(same_run or found, key=lambda r: str(r["finished"]), default=None)
        raise ValueError(
            f"{len(found)} records of {baseline} in {len({r['config_hash'] for r in found})} "
            "configs match; report a directory that holds one baseline config"
        )

    comparisons, problems = [], []
    for row in seed_rows([r for r in records if not is_base(r)]):
        clean: dict[int, PairedDifference] = {}
        robust: dict[int, PairedDifference] = {}
        for seed in row.seeds:
            rec = row.records[seed]
            try:
                other = counterpart(rec)
                if other is None:
                    continue
                if rec.get("test_points") != other.get("test_points"):
                    raise ValueError("cannot pair records of different test points")
                mine, theirs = outcomes_of(rec), outcomes_of(other)
                clean[seed] = pair(mine, theirs, "clean")
                robust[seed] = pair(mine, theirs, "robust")
            except ValueError as err:
                problems.append(f"{rec['defense']} {rec['attack']} seed {seed}: {err}")
        if robust:
            comparisons.append(
                Comparison(
                    row.key, baseline, combine_seeds(clean), combine_seeds(robust), row.group
                )
            )
    return sorted(comparisons, key=_order), problems


def fmt_delta(combined: SeedCombined) -> str:
    """``+30.5 [25.0, 36.0]`` percent points, ``*`` when the interval excludes 0."""
    lo, hi = combined.ci
    mark = " *" if combined.significant else ""
    return f"{100 * combined.delta:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]{mark}"


def fmt_p(p_values: list[float]) -> str:
    return ", ".join("<0.001" if p < 0.001 else f"{p:.3f}" for p in p_values)


def comparison_columns(c: Comparison) -> list[str]:
    return [
        c.key["defense"],
        c.key["inference"],
        c.key["attack"],
        c.key["threat_model"],
        fmt_eps(c.key["eps"]),
        ",".join(map(str, sorted(c.robust.per_seed))),
        fmt_delta(c.clean),
        fmt_delta(c.robust),
        ", ".join(f"{100 * d:+.1f}" for d in c.per_seed_deltas()),
        fmt_p(c.p_values),
    ]


COMPARISON_HEADER = [
    "defense",
    "inference",
    "attack",
    "threat",
    "eps",
    "seeds",
    "clean delta [95% CI]",
    "robust delta [95% CI]",
    "robust delta per seed",
    "p (McNemar, per seed)",
]


def format_comparisons(comparisons: list[Comparison], baseline: str, problems=()) -> str:
    """The plain-text table of :func:`compare`."""
    if not comparisons and not problems:
        return ""
    lines = [
        f"vs {baseline}, paired on the same test points (delta = defense - {baseline}, percent "
        "points; * = 95% interval excludes 0; over several seeds: mean with a t interval)"
    ]
    if comparisons:
        lines.append(render(COMPARISON_HEADER, [comparison_columns(c) for c in comparisons]))
    lines += [f"not paired: {p}" for p in problems]
    return "\n".join(lines)


def summary(records: list[dict[str, Any]], baselines: list[str]) -> str:
    """Seed spread and the comparisons against each baseline, as printed after a run."""
    parts = [format_seed_table(seed_rows(records))]
    for baseline in baselines:
        comparisons, problems = compare(records, baseline)
        parts.append(format_comparisons(comparisons, baseline, problems))
    return "\n\n".join(p for p in parts if p)
