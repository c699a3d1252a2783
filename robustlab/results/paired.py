"""Paired comparisons of two records on the same test points, and their combination over seeds.

Two defenses evaluated on the same points give, per point, a pair of verdicts; their accuracies
differ by (b - c) / n, where b counts points only the first got right and c points only the second
got right. The statistics use that pairing:

- exact McNemar test (McNemar 1947): under "no difference" the b discordant points of the b + c
  are Binomial(b + c, 1/2); two-sided p = min(1, 2 P[X <= min(b, c)]);
- 95% interval of the paired difference of proportions: Newcombe's hybrid score interval
  (Newcombe 1998, "Improved confidence intervals for the difference between binomial proportions
  based on paired data", method 10), built from the Wilson intervals of both accuracies and the
  phi correlation of the pairs; it stays inside [-1, 1] and keeps its coverage for small n;
- over seeds: the mean of the per-seed differences with a Student-t 95% interval on the seeds
  (n_seeds - 1 degrees of freedom), which carries the training-to-training spread that a single
  pairing cannot see. The seeds share their test points, so the sampling error of those points
  does not average out over seeds and is absent from their spread: each side of the interval is
  the t half-width and the mean per-seed paired half-width added in quadrature (conservative:
  the first already holds part of the second); with one seed, that seed's paired interval.

A difference is significant when its interval excludes 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import mean, stdev

import numpy as np
from scipy import stats

from robustlab.results.outcomes import Outcomes
from robustlab.results.record import wilson_interval


@dataclass(frozen=True)
class PairedDifference:
    """``first`` minus ``second`` accuracy on ``n`` shared points."""

    n: int
    both: int  # a: right in both
    only_first: int  # b
    only_second: int  # c
    delta: float
    ci: tuple[float, float]
    p_value: float

    @property
    def significant(self) -> bool:
        return not self.ci[0] <= 0.0 <= self.ci[1]


def mcnemar_exact(only_first: int, only_second: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts."""
    m = only_first + only_second
    if m == 0:
        return 1.0
    return min(1.0, 2.0 * float(stats.binom.cdf(min(only_first, only_second), m, 0.5)))


def newcombe_interval(a: int, b: int, c: int, d: int) -> tuple[float, float]:
    """95% interval of p1 - p2 for paired counts (a both, b first only, c second only, d neither),
    Newcombe's method 10."""
    n = a + b + c + d
    if n == 0:
        return (-1.0, 1.0)
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = wilson_interval(a + b, n)
    l2, u2 = wilson_interval(a + c, n)
    denom = (a + b) * (c + d) * (a + c) * (b + d)
    phi = (a * d - b * c) / math.sqrt(denom) if denom > 0 else 0.0
    low = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    high = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    delta = p1 - p2
    return (max(-1.0, delta - low), min(1.0, delta + high))


def paired_difference(first: np.ndarray, second: np.ndarray) -> PairedDifference:
    """First minus second accuracy from per-point verdicts (bool arrays of one length)."""
    first, second = np.asarray(first, bool), np.asarray(second, bool)
    a = int((first & second).sum())
    b = int((first & ~second).sum())
    c = int((~first & second).sum())
    d = int((~first & ~second).sum())
    n = a + b + c + d
    delta = (b - c) / n if n else 0.0
    return PairedDifference(n, a, b, c, delta, newcombe_interval(a, b, c, d), mcnemar_exact(b, c))


def pair(first: Outcomes, second: Outcomes, which: str = "robust") -> PairedDifference:
    """Pair two records' outcomes (``which``: "clean" or "robust"); records of different test
    points are refused with a one-line ValueError."""
    if not np.array_equal(first.index, second.index):
        raise ValueError(
            f"cannot pair records of different test points ({len(first.index)} vs "
            f"{len(second.index)} points, or other indices): evaluate both on the same split and "
            "eval.n_examples"
        )
    return paired_difference(getattr(first, which), getattr(second, which))


@dataclass(frozen=True)
class SeedCombined:
    """Per-seed paired differences and their combination."""

    per_seed: dict[int, PairedDifference]
    delta: float
    ci: tuple[float, float]

    @property
    def significant(self) -> bool:
        return not self.ci[0] <= 0.0 <= self.ci[1]


def combine_seeds(per_seed: dict[int, PairedDifference]) -> SeedCombined:
    """Mean difference over seeds with a Student-t 95% interval (one seed: its own interval)."""
    if not per_seed:
        raise ValueError("no seeds to combine")
    deltas = [d.delta for d in per_seed.values()]
    if len(deltas) == 1:
        (only,) = per_seed.values()
        return SeedCombined(dict(per_seed), only.delta, only.ci)
    centre, spread = mean(deltas), stdev(deltas)
    half = float(stats.t.ppf(0.975, len(deltas) - 1)) * spread / math.sqrt(len(deltas))
    below = mean(d.delta - d.ci[0] for d in per_seed.values())
    above = mean(d.ci[1] - d.delta for d in per_seed.values())
    low, high = math.hypot(half, below), math.hypot(half, above)
    ci = (max(-1.0, centre - low), min(1.0, centre + high))
    return SeedCombined(dict(per_seed), centre, ci)
