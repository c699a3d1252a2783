"""Gradient-masking sanity flags (Carlini et al. 2019, "On Evaluating Adversarial Robustness";
Croce & Hein 2020). Each check adds a flag name to the records it concerns; nothing is silent.

Flags:
- ``robust_above_clean``: accuracy on adversarial inputs above clean accuracy (for a randomized
  predictor: above the upper end of the clean accuracy's 95% interval, so draw noise is not flagged);
- ``not_decreasing_in_eps``: a larger eps gave higher robust accuracy (same attack, threat model);
- ``more_steps_higher_acc``: more steps or restarts gave higher robust accuracy (same kind, eps);
- ``square_beats_whitebox``: the black-box Square attack found more than every white-box attack
  (the kinds whose spec says ``whitebox``, read from ``robustlab.attacks.kinds``), or broke points
  that survived AutoAttack's white-box components;
- ``vanishing_gradients``: input gradients are zero on a share of examples;
- ``no_gradient_steps``: an attack whose kind takes gradient steps (read from its spec class)
  took none (zero backward passes) at eps > 0 with points left to attack: it did not run;
- ``adaptive_weaker_than_transfer``: an adaptive record (or worst case) above the oblivious one of
  the same attack and eps: above the upper end of the oblivious 95% interval for a randomized
  predictor (draw noise), above the oblivious accuracy itself for a deterministic one (same
  points, same scoring). An adaptive attacker weaker than transfer from the bare net is broken
  (Tramer et al., NeurIPS 2020); the engine's transfer floor keeps it from happening in the
  verdicts, so this fires only when the floor is off or records were made elsewhere;
- ``randomized_without_eot``: a randomized predictor attacked white-box without EOT;
- ``oblivious_only``: a randomized or preprocessing predictor evaluated with no adaptive attack;
- ``clean_at_chance``: clean accuracy not above that of always predicting the most frequent test
  class (``majority_class_acc``; the lower end of the clean 95% interval at or below it): a
  collapsed net, whose robust accuracy measures the class balance, not robustness.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from robustlab.attacks.kinds import gradient_kinds, whitebox_kinds

VANISHING_SHARE = 0.05


def _add(record: dict[str, Any], flag: str) -> None:
    if flag not in record["sanity_flags"]:
        record["sanity_flags"].append(flag)


def apply_sanity_flags(records: list[dict[str, Any]], needs_adaptive: bool) -> None:
    """Add flags in place to the attack records (``kind`` == "attack") of one cell."""
    attacks = [r for r in records if r.get("kind") == "attack"]
    stepping = gradient_kinds()
    for r in attacks:
        kind = r["attack_params"].get("kind")
        if kind in stepping and r["eps"] > 0 and r["clean_acc"] > 0 and r["backward_passes"] == 0:
            _add(r, "no_gradient_steps")
        clean_bound = r["clean_ci"][1] if r["randomized"] else r["clean_acc"]
        if r["adv_acc"] > clean_bound:
            _add(r, "robust_above_clean")
        if r["zero_grad_share"] >= VANISHING_SHARE:
            _add(r, "vanishing_gradients")
        if r["randomized"] and r["threat_model"] == "adaptive" and not r["eot"]:
            _add(r, "randomized_without_eot")
        if needs_adaptive and not any(a["threat_model"] == "adaptive" for a in attacks):
            _add(r, "oblivious_only")
        if r.get("square_broke_whitebox_survivors"):
            _add(r, "square_beats_whitebox")
        majority = r.get("majority_class_acc")
        if majority is not None and r["clean_ci"][0] <= majority:
            _add(r, "clean_at_chance")

    by_curve = defaultdict(list)
    for r in attacks:
        by_curve[(r["attack"], r["threat_model"], r["norm"])].append(r)
    for curve in by_curve.values():
        curve.sort(key=lambda r: r["eps"])
        for prev, cur in zip(curve, curve[1:]):
            if cur["eps"] > prev["eps"] and cur["robust_acc"] > prev["robust_acc"]:
                _add(cur, "not_decreasing_in_eps")

    by_budget = defaultdict(list)
    for r in attacks:
        kind = r["attack_params"].get("kind", r["attack"])
        by_budget[(kind, r["threat_model"], r["norm"], r["eps"])].append(r)
    for group in by_budget.values():
        for a in group:
            for b in group:
                ea, eb = _effort(a), _effort(b)
                more = eb != ea and eb[0] >= ea[0] and eb[1] >= ea[1]
                if more and b["robust_acc"] > a["robust_acc"]:
                    _add(b, "more_steps_higher_acc")

    by_ball = defaultdict(list)
    for r in attacks:
        by_ball[(r["threat_model"], r["norm"], r["eps"])].append(r)
    whitebox = whitebox_kinds()
    for group in by_ball.values():
        white = [r["robust_acc"] for r in group if r["attack_params"].get("kind") in whitebox]
        for r in group:
            if (
                r["attack_params"].get("kind") == "square"
                and white
                and r["robust_acc"] < min(white)
            ):
                _add(r, "square_beats_whitebox")


def _effort(record: dict[str, Any]) -> tuple[int, int]:
    params = record["attack_params"]
    return (int(params.get("steps") or 0), int(params.get("restarts") or 1))


def flag_adaptive_weaker_than_transfer(records: list[dict[str, Any]]) -> None:
    """Flag adaptive records (attacks and worst cases) above their oblivious counterpart."""
    oblivious = {
        (r["attack"], r["norm"], r["eps"]): r for r in records if r["threat_model"] == "oblivious"
    }
    for r in records:
        other = oblivious.get((r["attack"], r["norm"], r["eps"]))
        if r["threat_model"] != "adaptive" or other is None:
            continue
        bound = other["robust_ci"][1] if r.get("randomized") else other["robust_acc"]
        if r["robust_acc"] > bound:
            _add(r, "adaptive_weaker_than_transfer")
