"""Sanity flags on fabricated records of one cell."""

from __future__ import annotations

from robustlab.evaluation.sanity import apply_sanity_flags


def rec(attack, acc, eps=0.1, kind=None, steps=10, restarts=1, tm="adaptive", **kw):
    base = {
        "kind": "attack",
        "attack": attack,
        "threat_model": tm,
        "norm": "linf",
        "eps": eps,
        "clean_acc": 0.9,
        "clean_ci": [0.85, 0.94],
        "adv_acc": acc,
        "robust_acc": acc,
        "zero_grad_share": 0.0,
        "backward_passes": 10.0,
        "randomized": False,
        "eot": False,
        "attack_params": {"kind": kind or attack, "steps": steps, "restarts": restarts},
        "sanity_flags": [],
    }
    base.update(kw)
    return base


def flags(records):
    apply_sanity_flags(records, needs_adaptive=False)
    return [r["sanity_flags"] for r in records]


def test_clean_records_raise_nothing():
    records = [rec("pgd", 0.5, eps=0.1), rec("pgd", 0.3, eps=0.2), rec("square", 0.6, eps=0.1)]
    assert flags(records) == [[], [], []]


def test_each_flag_fires_on_its_symptom():
    assert "robust_above_clean" in flags([rec("fgsm", 0.95)])[0]
    assert "not_decreasing_in_eps" in flags([rec("pgd", 0.3, eps=0.1), rec("pgd", 0.4, eps=0.2)])[1]
    more = flags([rec("pgd", 0.3, steps=10), rec("pgd100", 0.35, kind="pgd", steps=100)])
    assert "more_steps_higher_acc" in more[1]
    square = flags([rec("pgd", 0.5), rec("square", 0.4)])
    assert "square_beats_whitebox" in square[1]
    assert "vanishing_gradients" in flags([rec("pgd", 0.5, zero_grad_share=0.5)])[0]
    randomized = [rec("pgd", 0.5, randomized=True, eot=False)]
    assert "randomized_without_eot" in flags(randomized)[0]
    records = [rec("pgd", 0.5, tm="oblivious")]
    apply_sanity_flags(records, needs_adaptive=True)
    assert "oblivious_only" in records[0]["sanity_flags"]


def test_randomized_predictor_tolerates_draw_noise_above_clean():
    noisy = rec("pgd", 0.91, randomized=True, eot=True)
    assert flags([noisy]) == [[]]
    assert "robust_above_clean" in flags([rec("pgd", 0.97, randomized=True, eot=True)])[0]


def test_clean_at_chance_flags_a_net_no_better_than_the_majority_class():
    collapsed = rec(
        "pgd", 0.126, clean_acc=0.126, clean_ci=[0.107, 0.148], majority_class_acc=0.126
    )
    barely = rec("pgd", 0.126, clean_acc=0.147, clean_ci=[0.126, 0.170], majority_class_acc=0.126)
    learned = rec("pgd", 0.5, majority_class_acc=0.126)  # clean 0.9, interval [0.85, 0.94]
    assert [("clean_at_chance" in f) for f in flags([collapsed, barely, learned])] == [
        True,
        True,
        False,
    ]
    assert flags([rec("pgd", 0.5)]) == [[]]  # records without the field raise nothing
