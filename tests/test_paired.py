"""Paired statistics (McNemar, Newcombe's interval, seeds) and the per-example outcomes file."""

from __future__ import annotations

from math import comb

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robustlab.results.outcomes import (
    Outcomes,
    append_outcomes,
    attach,
    outcomes_of,
    read_outcomes,
    split,
)
from robustlab.results.paired import (
    combine_seeds,
    mcnemar_exact,
    newcombe_interval,
    pair,
    paired_difference,
)


def binomial_two_sided(b: int, c: int) -> float:
    """Direct computation: 2 * P[X <= min(b, c)], X ~ Binomial(b + c, 1/2), capped at 1."""
    m = b + c
    tail = sum(comb(m, i) for i in range(min(b, c) + 1)) / 2**m
    return min(1.0, 2 * tail)


@given(st.integers(0, 60), st.integers(0, 60))
def test_mcnemar_exact_is_the_binomial_tail(b, c):
    expected = binomial_two_sided(b, c) if b + c else 1.0
    assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert mcnemar_exact(b, c) == mcnemar_exact(c, b)


@given(st.integers(0, 50), st.integers(0, 50), st.integers(0, 50), st.integers(0, 50))
def test_newcombe_interval_contains_the_estimate_and_stays_in_range(a, b, c, d):
    n = a + b + c + d
    lo, hi = newcombe_interval(a, b, c, d)
    assert -1.0 <= lo <= hi <= 1.0
    if n:
        assert lo <= (b - c) / n + 1e-12 and (b - c) / n - 1e-12 <= hi


@pytest.mark.parametrize(
    "p_first, p_second, rho, n",
    [(0.9, 0.85, 0.5, 200), (0.3, 0.3, 0.2, 100), (0.5, 0.4, 0.8, 360), (0.95, 0.9, 0.0, 50)],
)
def test_paired_interval_covers_the_true_difference_95_percent_of_the_time(
    p_first, p_second, rho, n
):
    """Seeded Monte Carlo on correlated Bernoulli pairs with a known difference."""
    rng = np.random.default_rng(0)
    cov = rho * np.sqrt(p_first * (1 - p_first) * p_second * (1 - p_second))
    both = p_first * p_second + cov  # P(first right and second right)
    probs = [both, p_first - both, p_second - both, 1 - p_first - p_second + both]
    trials, hits = 2000, 0
    for counts in rng.multinomial(n, probs, size=trials):
        lo, hi = newcombe_interval(*map(int, counts))
        hits += lo <= p_first - p_second <= hi
    assert 0.93 <= hits / trials <= 0.985


def test_paired_difference_counts_and_sign():
    first = np.array([1, 1, 1, 0, 0, 1], bool)
    second = np.array([1, 0, 0, 0, 1, 1], bool)
    d = paired_difference(first, second)
    assert (d.both, d.only_first, d.only_second, d.n) == (2, 2, 1, 6)
    assert d.delta == pytest.approx(1 / 6)
    assert d.p_value == pytest.approx(binomial_two_sided(2, 1))
    assert not d.significant


def test_a_large_consistent_gain_is_significant():
    first = np.ones(200, bool)
    second = np.r_[np.ones(150, bool), np.zeros(50, bool)]
    d = paired_difference(first, second)
    assert d.significant and d.p_value < 1e-10 and d.ci[0] > 0.15


def test_records_of_different_points_refuse_to_pair():
    a = Outcomes(np.arange(10), np.ones(10, bool), np.ones(10, bool))
    b = Outcomes(np.arange(1, 11), np.ones(10, bool), np.zeros(10, bool))
    with pytest.raises(ValueError, match="cannot pair records of different test points") as err:
        pair(a, b)
    assert "\n" not in str(err.value)
    assert pair(a, a).delta == 0


def test_seeds_combine_to_a_t_interval_and_one_seed_keeps_its_own():
    def diff(delta):
        return paired_difference(
            np.ones(100, bool), np.r_[np.ones(100 - delta, bool), np.zeros(delta, bool)]
        )

    one = combine_seeds({0: diff(10)})
    assert one.delta == pytest.approx(0.1) and one.ci == diff(10).ci
    three = combine_seeds({0: diff(8), 1: diff(10), 2: diff(12)})
    assert three.delta == pytest.approx(0.1)
    # t(0.975, 2) = 4.303, sd 0.02, sqrt(3): half width 0.0497, added in quadrature to the mean
    # per-seed paired half-widths (the seeds share their test points)
    per_seed = [diff(k) for k in (8, 10, 12)]
    below = sum(d.delta - d.ci[0] for d in per_seed) / 3
    above = sum(d.ci[1] - d.delta for d in per_seed) / 3
    t_half = 4.3027 * 0.02 / 3**0.5
    expected = (0.1 - (t_half**2 + below**2) ** 0.5, 0.1 + (t_half**2 + above**2) ** 0.5)
    assert three.ci == pytest.approx(expected, abs=1e-4)
    assert three.significant
    assert not combine_seeds({0: diff(0), 1: diff(10)}).significant
    same = combine_seeds({0: diff(0), 1: diff(0), 2: diff(0)})  # identical seeds: sd 0
    assert same.ci == pytest.approx(diff(0).ci)  # sd 0: one seed's own interval


@settings(max_examples=25, deadline=None)
@given(flags=st.lists(st.booleans(), min_size=1, max_size=40), shift=st.integers(0, 1000))
def test_outcomes_round_trip_through_the_file(flags, shift, tmp_path_factory):
    path = tmp_path_factory.mktemp("o") / "outcomes.npz"
    n = len(flags)
    index = np.arange(n)[::-1] + shift  # unsorted: stored sorted by index
    rec = attach({"defense": "erm", "attack": "pgd", "eps": 0.1}, index, np.ones(n, bool), flags)
    append_outcomes(path, split([rec]))
    assert "_per_example" not in rec
    back = read_outcomes(path)[rec["outcomes_key"]]
    assert back.index.tolist() == sorted(index.tolist())
    assert back.robust.tolist() == list(reversed(flags))
    other = attach({"defense": "pgd_at", "attack": "pgd", "eps": 0.1}, index, flags, flags)
    append_outcomes(path, split([other]))
    assert set(read_outcomes(path)) == {rec["outcomes_key"], other["outcomes_key"]}


def test_a_record_without_outcomes_says_so_in_one_line():
    with pytest.raises(ValueError, match="no per-example outcomes"):
        outcomes_of({"defense": "erm", "attack": "pgd"})
