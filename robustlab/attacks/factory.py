"""Run an attack spec (``robustlab.attacks.kinds``) on a model at one eps.

A runner maps pixel-space ``(x, y)`` to ``x_adv`` in the spec's eps ball, clipped to [0, 1]. Each
call runs under ``attack_rng`` (seed derived from cell seed, name, eps and the call's index), with
gradients enabled and the model's parameters frozen (torchattacks' CW and FAB call ``.backward()``,
which would otherwise fill parameter gradients); ``requires_grad`` flags are restored afterwards.
torchattacks' ``forward`` is called directly, bypassing ``Attack.__call__``, which would switch the
model's train/eval mode; the caller owns the mode. The model may return logits or log-probs:
cross-entropy, DLR and margin losses give the same result on both.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from hydra.utils import get_class
from torch import nn

from robustlab.attacks.autoattack import AutoAttack
from robustlab.attacks.crafting import Craft
from robustlab.attacks.kinds.base import AttackSpec, spec_class
from robustlab.attacks.rng import attack_rng, derive_seed


class AttackRunner:
    """``runner(x, y) -> x_adv``; ``name``, ``norm`` and ``params`` (effective values) for records."""

    def __init__(
        self,
        *,
        name: str,
        norm: str,
        params: dict[str, Any],
        model: nn.Module,
        seed: int,
        craft: Craft,
        reject: bool = False,
        composite: AutoAttack | None = None,
    ):
        self.name, self.norm, self.params = name, norm, params
        self.eps = float(params["eps"])
        self.model, self.seed, self._craft = model, seed, craft
        self._reject, self._composite = reject, composite
        self._calls = 0
        # AutoAttack only: per part, which examples of the last call it broke (else empty)
        self.last_component_success: dict[str, torch.Tensor] = {}

    def __call__(self, x: torch.Tensor, y: torch.Tensor, call: int | None = None) -> torch.Tensor:
        """``call``: the index the call's seed derives from (the index of the evaluation's
        unit: a batch, or AutoAttack's ``points_per_call`` points, so its attack is the same
        whichever units ran before it); default: a running count."""
        self.last_component_success = {}
        if self.eps == 0:
            return x
        if call is None:
            call = self._calls
        seed = derive_seed(self.seed, self.name, self.eps, call)
        self._calls = call + 1
        with attack_rng(seed), _frozen(self.model), torch.enable_grad():
            x_adv = self._craft(x.detach(), y, seed).detach()
        if self._composite is not None:
            self.last_component_success = self._composite.last_component_success
        return self._project(x.detach(), x_adv)

    def _project(self, x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
        delta = x_adv - x
        if self.norm == "linf":
            return (x + delta.clamp(-self.eps, self.eps)).clamp(0, 1)
        norms = delta.flatten(1).norm(dim=1).view(-1, *[1] * (x.dim() - 1))
        if self._reject:  # minimum-norm attack: an example outside the ball is not adversarial
            return torch.where(norms <= self.eps, x_adv, x).clamp(0, 1)
        return (x + delta * (self.eps / norms).clamp(max=1)).clamp(0, 1)


@contextmanager
def _frozen(model: nn.Module) -> Iterator[None]:
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def as_spec(spec: AttackSpec | Mapping[str, Any]) -> AttackSpec:
    """A spec object as it is, or a mapping naming its class by ``_target_`` or its ``kind``
    (e.g. a defense's training attacks: ``{kind: pgd, steps: 10}``)."""
    if isinstance(spec, AttackSpec):
        return spec
    params = dict(spec)
    target = params.pop("_target_", None)
    cls = get_class(target) if target else spec_class(params.pop("kind", None))
    params.pop("kind", None)
    params.setdefault("eps", 0.0)  # the caller's eps is passed to build_attack
    return cls.from_params(params)


def build_attack(
    spec: AttackSpec | Mapping[str, Any],
    model: nn.Module,
    *,
    seed: int,
    num_classes: int,
    eps: float,
    batch_size: int | None = None,
) -> AttackRunner:
    """Build the runner for one spec at one ``eps`` (the caller loops over eps lists).

    ``batch_size``: the caller's batch, taken by a spec whose own ``batch_size`` is null
    (AutoAttack's points per pass), so its passes stay bounded by the evaluation's."""
    spec = as_spec(spec)
    p = spec.params(eps)
    if "batch_size" in p and p["batch_size"] is None:
        p["batch_size"] = batch_size
    craft = spec.craft(model, p, num_classes)
    return AttackRunner(
        name=p["name"],
        norm=p["norm"],
        params=p,
        model=model,
        seed=seed,
        craft=craft,
        reject=spec.rejects_outside_ball,
        composite=craft if isinstance(craft, AutoAttack) else None,
    )
