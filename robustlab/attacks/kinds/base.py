"""``AttackSpec``: the typed, validated parameters of one attack and the recipe that builds it.

A subclass per attack kind declares ``kind``, whether it is white-box, the norms it supports, its
own parameters as dataclass fields with their defaults, and ``craft`` (the attack on a model at
one eps). Every check of bad values runs in ``__post_init__``, so a bad config fails when the plan
is built, before any data is read. ``eps`` is always a tuple: a list yields a robustness curve.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from robustlab.attacks.crafting import Craft

NORMS = ("linf", "l2")


def as_numbers(where: str, value: Any) -> tuple[float, ...]:
    """A number or a list of numbers as a tuple of floats; a string is an error, not characters."""
    values = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value]
    out = []
    for v in values:
        if isinstance(v, bool) or v is None:
            raise ValueError(f"{where}={value!r} is not a number or a list of numbers")
        try:
            out.append(float(v))
        except (TypeError, ValueError):
            raise ValueError(f"{where}={v!r} is not a number") from None
    if not out:
        raise ValueError(f"{where}=[] is empty: give at least one eps (e.g. {where}=0.1)")
    return tuple(out)


@dataclass(frozen=True)
class AttackSpec:
    """Parameters every attack has; ``heavy`` is evaluation policy (skippable on randomized
    predictors), not an attack parameter."""

    kind: ClassVar[str] = ""
    whitebox: ClassVar[bool] = True
    gradient_steps: ClassVar[bool | None] = None  # takes input-gradient steps; None: = whitebox
    norms: ClassVar[tuple[str, ...]] = NORMS
    rejects_outside_ball: ClassVar[bool] = False  # minimum-norm attacks (CW): no projection

    eps: Any
    name: str | None = None
    norm: str = "linf"
    restarts: int = 1
    targeted: bool = False
    heavy: bool = False

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "name", self.name or self.kind)
        if self.norm not in self.norms:
            raise ValueError(
                f"attack.{self.name}.norm={self.norm!r} is not one of {list(self.norms)} "
                f"(attack kind {self.kind})"
            )
        eps = as_numbers(f"attack.{self.name}.eps", self.eps)
        for e in eps:
            if self.norm == "linf" and not 0 <= e <= 1:
                raise ValueError(
                    f"attack.{self.name}.eps={e} is outside [0, 1]: pixels live in [0,1], so an "
                    "L-inf eps must be in [0, 1] (e.g. 8/255=0.0314 for CIFAR, 0.3 for MNIST)"
                )
            if e < 0:
                raise ValueError(f"attack.{self.name}.eps={e} must be >= 0")
        set_(self, "eps", eps)
        self.check_positive("restarts")

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> AttackSpec:
        """The spec of these config values; a key the kind lacks is a one-line ValueError."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(params) - fields)
        if unknown:
            name = params.get("name") or cls.kind
            raise ValueError(
                f"attack.{name}: {unknown} not parameters of attack kind {cls.kind}; "
                f"it takes {sorted(fields - {'name'})}"
            )
        return cls(**params)

    def check_positive(self, *keys: str) -> None:
        """Each of ``keys`` must be a positive integer (steps, restarts, queries...)."""
        for key in keys:
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"attack.{self.name}.{key}={value!r} must be a positive integer")

    @property
    def native_eot(self) -> bool:
        """True when the attack averages over randomness itself (no EOT wrapper needed)."""
        return False

    def call_points(self, batch_size: int, points: int) -> int:
        """How many of an evaluation's ``points`` one call of the attack takes (one resumable
        unit): a batch, unless the attack gains from seeing more points at once."""
        return batch_size

    def params(self, eps: float) -> dict[str, Any]:
        """The effective parameters at one eps (what the records store), before ``craft``."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {**fields, "kind": self.kind, "eps": float(eps)}

    def craft(self, model: nn.Module, p: dict[str, Any], num_classes: int) -> Craft:
        """The attack on ``model`` with parameters ``p`` (may add the values it resolves)."""
        raise NotImplementedError


def spec_classes() -> dict[str, type[AttackSpec]]:
    """Every attack kind known to this process (built-in and imported plugins), by kind."""
    found: dict[str, type[AttackSpec]] = {}
    stack = list(AttackSpec.__subclasses__())
    while stack:
        cls = stack.pop()
        if cls.kind:
            found.setdefault(cls.kind, cls)
        stack.extend(cls.__subclasses__())
    return found


def spec_class(kind: str) -> type[AttackSpec]:
    classes = spec_classes()
    if kind not in classes:
        raise ValueError(f"unknown attack kind {kind!r}; valid kinds: {sorted(classes)}")
    return classes[kind]


def whitebox_kinds() -> set[str]:
    """The white-box kinds (for the ``square_beats_whitebox`` sanity check)."""
    return {kind for kind, cls in spec_classes().items() if cls.whitebox}


def gradient_kinds() -> set[str]:
    """The kinds that take gradient steps (for the ``no_gradient_steps`` sanity check)."""
    return {
        kind
        for kind, cls in spec_classes().items()
        if (cls.whitebox if cls.gradient_steps is None else cls.gradient_steps)
    }
