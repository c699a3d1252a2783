"""What each sanity flag means, in one place: the report page and the W&B summary explain the
flags they show from here (the wording follows README's "The evaluation"; the checks themselves
live in robustlab/evaluation/sanity.py, robustlab/defenses/overfitting.py and the evaluator)."""

from __future__ import annotations

FLAG_MEANINGS: dict[str, str] = {
    "robust_above_clean": (
        "Accuracy under attack is above the clean accuracy (for a randomized predictor: above the "
        "upper end of the clean 95% interval). An attack cannot help the model; it did not work."
    ),
    "not_decreasing_in_eps": (
        "A larger eps gave a higher robust accuracy (same attack and threat model): a stronger "
        "attacker did worse, a sign of a broken attack or masked gradients."
    ),
    "more_steps_higher_acc": (
        "More steps or restarts of the same attack kind at the same eps gave a higher robust "
        "accuracy: the attack has not converged or the gradients mislead it."
    ),
    "square_beats_whitebox": (
        "The black-box Square attack went below every white-box attack (the kinds marked white-box "
        "in their attack specs), or broke points that survived AutoAttack's white-box parts: the "
        "gradients are masked."
    ),
    "vanishing_gradients": (
        "Input gradients are zero on a share of the examples (5% or more): gradient-based attacks "
        "see nothing there, so their robust accuracy overestimates robustness."
    ),
    "randomized_without_eot": (
        "A randomized predictor was attacked white-box without EOT (Expectation over "
        "Transformation): one random draw's gradient is noise."
    ),
    "oblivious_only": (
        "A randomized or preprocessing predictor was evaluated with no adaptive attack: only "
        "transfer from the bare net, which says little about the predictor itself."
    ),
    "clean_at_chance": (
        "The clean accuracy is no better than always predicting the most frequent test class: a "
        "collapsed net, whose robust accuracy only measures the class balance."
    ),
    "no_gradient_steps": (
        "An attack whose kind takes gradient steps took no backward pass (at eps > 0, with points "
        "left to attack): it did not run."
    ),
    "adaptive_weaker_than_transfer": (
        "An adaptive record is above the oblivious (transfer) one of the same attack and eps "
        "(beyond its 95% interval for a randomized predictor): the adaptive attacker is broken."
    ),
    "inference_expects_other_training": (
        "The inference wrapper expects a net trained another way (e.g. Mixup Inference on a net "
        "not trained with mixup or Interpolated AT): its numbers are not the method's."
    ),
    "catastrophic_overfitting": (
        "Raised while training (Wong et al. 2020): validation PGD accuracy collapsed while FGSM "
        "accuracy held or rose; the net resists the training attack only, not PGD."
    ),
}

UNKNOWN_FLAG = "a flag this version of robustlab does not describe (see the records' source)"

# What any flag means for the numbers beside it.
FLAGS_CAVEAT = "these numbers may overestimate robustness"


def flag_meaning(flag: str) -> str:
    """The explanation of ``flag``; unknown flags (from other versions) say so."""
    return FLAG_MEANINGS.get(flag, UNKNOWN_FLAG)
