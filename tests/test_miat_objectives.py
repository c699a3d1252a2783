"""MIAT's stage-1 objectives (paper Eq. 5, and the official code's cosine objective) against
direct computations on hand-made estimates, and a bad objective name."""

from __future__ import annotations

import math

import pytest
import torch

from robustlab.defenses.miat.objectives import Estimates, official_loss, paper_loss
from robustlab.defenses.miat.stage1 import MIATEstimators

# five examples: 0, 1 flipped (right clean, wrong attacked), 2, 3 kept (right both), 4 wrong clean
CORRECT_CLEAN = torch.tensor([True, True, True, True, False])
WRONG_ADV = torch.tensor([True, True, False, False, True])
EST = Estimates(
    n_clean=torch.tensor([3.0, 2.0, 1.0, 4.0, 9.0]),
    n_adv=torch.tensor([-1.0, 2.0, 1.5, 3.0, 9.0]),
    a_adv=torch.tensor([0.5, 1.5, -0.5, 0.2, 9.0]),
    a_clean=torch.tensor([1.0, -0.3, -0.4, 0.1, 9.0]),
)


def _cos(a, b):
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(
        sum(x * x for x in a) * sum(y * y for y in b)
    )


def _pick(values, idx):
    return [float(values[i]) for i in idx]


def test_paper_loss_is_minus_the_mean_gaps_on_flipped_examples():
    flipped = [0, 1]
    gap_n = [EST.n_clean[i] - max(EST.n_adv[i], 0) for i in flipped]
    gap_a = [EST.a_adv[i] - max(EST.a_clean[i], 0) for i in flipped]
    expected = -(sum(gap_n) / 2 + sum(gap_a) / 2)
    assert float(paper_loss(EST, CORRECT_CLEAN, WRONG_ADV)) == pytest.approx(float(expected))


def _official_expected(flipped, kept, n_right):
    """The official objective written out with plain floats (no masks, no torch)."""
    total = 0.0
    if flipped:
        n_c, n_a = _pick(EST.n_clean, flipped), _pick(EST.n_adv, flipped)
        a_a, a_c = _pick(EST.a_adv, flipped), _pick(EST.a_clean, flipped)
        total += 5 * abs(_cos(n_c, n_a)) - sum(n_c) / n_right
        total += 5 * abs(_cos(a_a, a_c)) - sum(a_a) / len(a_a)
    if kept:
        n_c, n_a = _pick(EST.n_clean, kept), _pick(EST.n_adv, kept)
        a_a, a_c = _pick(EST.a_adv, kept), _pick(EST.a_clean, kept)
        total += 0.5 * (5 * abs(1 - _cos(n_c, n_a)) - sum(n_c) / n_right)
        total += 0.5 * (8 * abs(1 - _cos(a_c, a_a)) + 0.1 * sum(a_a) / len(a_a))
    return total


def test_official_loss_matches_a_direct_computation():
    expected = _official_expected(flipped=[0, 1], kept=[2, 3], n_right=4)
    assert float(official_loss(EST, CORRECT_CLEAN, WRONG_ADV)) == pytest.approx(expected)


def test_official_loss_with_no_flipped_example_uses_only_the_kept_terms():
    loss = official_loss(EST, CORRECT_CLEAN, torch.zeros(5, dtype=torch.bool))
    assert float(loss) == pytest.approx(
        _official_expected(flipped=[], kept=[0, 1, 2, 3], n_right=4)
    )


def test_official_loss_without_correct_examples_maximizes_both_estimates():
    nobody = torch.zeros(5, dtype=torch.bool)
    expected = -(EST.n_clean.mean() + EST.a_adv.mean())
    assert torch.equal(official_loss(EST, nobody, WRONG_ADV), expected)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"objective": "cosine"}, r"objective='cosine' is not one of \['paper', 'official'\]"),
        ({"warmup_epochs": 1}, r"warmup_epochs=1 must be 0: the classifier is frozen"),
    ],
)
def test_bad_stage1_setting_is_a_one_line_error(bad, message):
    with pytest.raises(ValueError, match=message):
        MIATEstimators(
            torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3)),
            name="t",
            num_classes=3,
            optimizer={"name": "adam", "lr": 0.01},
            inner={"eps": 0.1, "steps": 1},
            dependencies={"classifier": "unused.pt"},
            input_shape=(1, 8, 8),
            estimator={"hidden": 4, "width": 2},
            **bad,
        )
