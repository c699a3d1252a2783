"""One module per attack kind: a frozen spec (its parameters and defaults) that builds the attack.

Attack configs (``conf/attack/<name>.yaml``) name a spec class as ``_target_``; the kinds are read
from these classes (``spec_classes``), so nothing else keeps a table of them.
"""

from robustlab.attacks.kinds.apgd import APGDSpec
from robustlab.attacks.kinds.autoattack import AutoAttackSpec
from robustlab.attacks.kinds.base import (
    AttackSpec,
    gradient_kinds,
    spec_class,
    spec_classes,
    whitebox_kinds,
)
from robustlab.attacks.kinds.cw import CWSpec
from robustlab.attacks.kinds.eot_pgd import EOTPGDSpec
from robustlab.attacks.kinds.fab import FABSpec
from robustlab.attacks.kinds.fgsm import FGSMSpec
from robustlab.attacks.kinds.pgd import PGDSpec
from robustlab.attacks.kinds.square import SquareSpec

__all__ = [
    "APGDSpec",
    "AttackSpec",
    "AutoAttackSpec",
    "CWSpec",
    "EOTPGDSpec",
    "FABSpec",
    "FGSMSpec",
    "PGDSpec",
    "SquareSpec",
    "gradient_kinds",
    "spec_class",
    "spec_classes",
    "whitebox_kinds",
]
