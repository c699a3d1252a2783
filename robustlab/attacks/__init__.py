"""Attacks: a factory over torchattacks, reference-faithful AutoAttack, EOT/BPDA, RNG hygiene."""

from robustlab.attacks.adaptive import EOT, adaptive_model
from robustlab.attacks.autoattack import AutoAttack
from robustlab.attacks.costs import PassCounter, count_passes
from robustlab.attacks.factory import AttackRunner, build_attack
from robustlab.attacks.rng import attack_rng, derive_seed

__all__ = [
    "EOT",
    "AttackRunner",
    "AutoAttack",
    "PassCounter",
    "adaptive_model",
    "attack_rng",
    "build_attack",
    "count_passes",
    "derive_seed",
]
