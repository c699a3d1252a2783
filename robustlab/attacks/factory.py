"""Build an attack runner from a plain spec (``conf/attack/<name>.yaml``) over torchattacks.

A runner maps pixel-space ``(x, y)`` to ``x_adv`` in the spec's eps ball, clipped to [0, 1]. Each
call runs under ``attack_rng`` (seed derived from cell seed, name, eps and a call counter), with
gradients enabled and the model's parameters frozen (torchattacks' CW and FAB call ``.backward()``,
which would otherwise fill parameter gradients); ``requires_grad`` flags are restored afterwards.
torchattacks' ``forward`` is called directly, bypassing ``Attack.__call__``, which would switch the
model's train/eval mode; the caller owns the mode. The model may return logits or log-probs:
cross-entropy, DLR and margin losses give the same result on both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torchattacks import APGD, APGDT, CW, EOTPGD, FAB, FGSM, PGD, PGDL2, Square
from torchattacks.attack import Attack

from robustlab.attacks.autoattack import TORCHATTACKS_NORM, AutoAttack
from robustlab.attacks.rng import attack_rng, derive_seed, random_targets

Craft = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]

# `heavy` is evaluation policy (skip on randomized predictors if asked), not an attack parameter.
COMMON = {
    "name": None,
    "kind": None,
    "norm": "linf",
    "eps": None,
    "restarts": 1,
    "targeted": False,
    "heavy": False,
}
DEFAULTS: dict[str, dict[str, Any]] = {
    "fgsm": {},
    "pgd": {"steps": 20, "step_size": None, "step_ratio": None, "random_start": True},
    "eot_pgd": {
        "steps": 20,
        "step_size": None,
        "step_ratio": None,
        "random_start": True,
        "eot_iter": 20,
    },
    "cw": {"steps": 100, "c": 1.0, "kappa": 0.0, "lr": 0.01},
    "apgd": {"steps": 100, "loss": "ce", "rho": 0.75, "eot_iter": 1, "n_target_classes": 9},
    "fab": {"steps": 100, "n_target_classes": 9, "alpha_max": 0.1, "eta": 1.05, "beta": 0.9},
    "square": {"queries": 5000, "p_init": 0.8},
    "autoattack": {
        "version": "standard",
        "steps": 100,
        "queries": 5000,
        "n_target_classes": 9,
        "eot_iter": 20,
    },
}
NORMS = {"fgsm": ("linf",), "eot_pgd": ("linf",), "cw": ("l2",)}


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

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.last_component_success = {}
        if self.eps == 0:
            return x
        seed = derive_seed(self.seed, self.name, self.eps, self._calls)
        self._calls += 1
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


def build_attack(
    spec: Mapping[str, Any], model: nn.Module, *, seed: int, num_classes: int, eps: float
) -> AttackRunner:
    """Build the runner for one spec at one ``eps`` (the caller loops over eps lists)."""
    spec = {k: v for k, v in spec.items() if k != "eps"}  # eps may be a list: the caller's
    kind = spec.get("kind")
    if kind not in DEFAULTS:
        raise ValueError(f"unknown attack kind {kind!r}; valid kinds: {', '.join(DEFAULTS)}")
    unknown = set(spec) - set(COMMON) - set(DEFAULTS[kind])
    if unknown:
        raise ValueError(f"attack kind {kind!r} has no parameter(s) {sorted(unknown)}")
    p = {**COMMON, **DEFAULTS[kind], **spec, "eps": float(eps)}
    p["name"] = p["name"] or kind
    norms = NORMS.get(kind, tuple(TORCHATTACKS_NORM))
    if p["norm"] not in norms:
        raise ValueError(f"attack kind {kind!r} supports norms {norms}, got {p['norm']!r}")
    if "step_size" in p and p["step_size"] is None:
        ratio = p.pop("step_ratio", None)
        p["step_size"] = (ratio if ratio else 2.5 / max(p["steps"], 1)) * p["eps"]
    p.pop("step_ratio", None)
    composite = None
    if kind == "autoattack":
        composite = _autoattack(model, p, num_classes)
        craft = composite
    else:
        craft = BUILDERS[kind](model, p, num_classes)
    return AttackRunner(
        name=p["name"],
        norm=p["norm"],
        params=p,
        model=model,
        seed=seed,
        craft=craft,
        reject=kind == "cw",
        composite=composite,
    )


def _plain(atk: Attack, targets: bool, num_classes: int) -> Craft:
    """Call ``atk.forward`` on ``y``, or on a random wrong class per example when ``targets``."""
    if targets:
        atk.set_mode_targeted_by_label(quiet=True)

    def craft(x: torch.Tensor, y: torch.Tensor, seed: int) -> torch.Tensor:
        atk.device = x.device
        if hasattr(atk, "seed"):
            atk.seed = seed
        return atk.forward(x, random_targets(y, num_classes) if targets else y)

    return craft


def _restarted(craft: Craft, model: nn.Module, restarts: int) -> Craft:
    """Rerun ``craft`` on the points still robust, keeping each point's first success."""
    if restarts == 1:
        return craft

    def broken(x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(x_adv).argmax(1) != y

    def run(x: torch.Tensor, y: torch.Tensor, seed: int) -> torch.Tensor:
        x_adv = craft(x, y, seed)
        robust = ~broken(x_adv, y)
        for _ in range(restarts - 1):
            idx = robust.nonzero().flatten()
            if idx.numel() == 0:
                break
            cand = craft(x[idx], y[idx], seed)
            hit = broken(cand, y[idx])
            x_adv[idx[hit]] = cand[hit]
            robust[idx[hit]] = False
        return x_adv

    return run


def _fgsm(model: nn.Module, p: dict, num_classes: int) -> Craft:
    atk = FGSM(model, eps=p["eps"])
    return _restarted(_plain(atk, p["targeted"], num_classes), model, p["restarts"])


def _pgd(model: nn.Module, p: dict, num_classes: int) -> Craft:
    cls = PGD if p["norm"] == "linf" else PGDL2
    atk = cls(
        model, eps=p["eps"], alpha=p["step_size"], steps=p["steps"], random_start=p["random_start"]
    )
    return _restarted(_plain(atk, p["targeted"], num_classes), model, p["restarts"])


def _eot_pgd(model: nn.Module, p: dict, num_classes: int) -> Craft:
    atk = EOTPGD(
        model,
        eps=p["eps"],
        alpha=p["step_size"],
        steps=p["steps"],
        eot_iter=p["eot_iter"],
        random_start=p["random_start"],
    )
    return _restarted(_plain(atk, p["targeted"], num_classes), model, p["restarts"])


def _cw(model: nn.Module, p: dict, num_classes: int) -> Craft:
    """Carlini-Wagner L2 (2017), fixed c (torchattacks has no binary search); rejected beyond eps."""
    atk = CW(model, c=p["c"], kappa=p["kappa"], steps=p["steps"], lr=p["lr"])
    return _restarted(_plain(atk, p["targeted"], num_classes), model, p["restarts"])


def _apgd(model: nn.Module, p: dict, num_classes: int) -> Craft:
    """APGD (Croce & Hein 2020); targeted means APGD-T on the targeted DLR loss."""
    norm = TORCHATTACKS_NORM[p["norm"]]
    common = {"norm": norm, "eps": p["eps"], "steps": p["steps"], "n_restarts": p["restarts"]}
    common.update(eot_iter=p["eot_iter"], rho=p["rho"])
    if not p["targeted"]:
        if p["loss"] == "dlr" and num_classes < 3:
            raise ValueError(f"APGD-DLR needs >= 3 classes, got {num_classes}")
        del p["n_target_classes"]
        return _plain(APGD(model, loss=p["loss"], **common), False, num_classes)
    if p["loss"] != "dlr" or num_classes < 4:
        raise ValueError("targeted APGD (APGD-T) needs loss 'dlr' and >= 4 classes")
    atk = APGDT(model, n_classes=num_classes, **common)
    atk.n_target_classes = p["n_target_classes"] = min(p["n_target_classes"], num_classes - 1)
    return _plain(atk, False, num_classes)


def _fab(model: nn.Module, p: dict, num_classes: int) -> Craft:
    """FAB (Croce & Hein 2020); targeted means FAB-T over the top ``n_target_classes`` classes."""
    atk = FAB(
        model,
        norm=TORCHATTACKS_NORM[p["norm"]],
        eps=p["eps"],
        steps=p["steps"],
        n_restarts=p["restarts"],
        alpha_max=p["alpha_max"],
        eta=p["eta"],
        beta=p["beta"],
        multi_targeted=p["targeted"],
        n_classes=num_classes,
    )
    atk.n_target_classes = p["n_target_classes"] = min(p["n_target_classes"], num_classes - 1)
    return _plain(atk, False, num_classes)


def _square(model: nn.Module, p: dict, num_classes: int) -> Craft:
    """Square Attack (Andriushchenko et al. 2020), margin loss, AutoAttack's fixed p schedule."""
    atk = Square(
        model,
        norm=TORCHATTACKS_NORM[p["norm"]],
        eps=p["eps"],
        n_queries=p["queries"],
        n_restarts=p["restarts"],
        p_init=p["p_init"],
        loss="margin",
        resc_schedule=False,
    )
    return _plain(atk, p["targeted"], num_classes)


def _autoattack(model: nn.Module, p: dict, num_classes: int) -> AutoAttack:
    if p["targeted"]:
        raise ValueError("AutoAttack has no targeted mode (APGD-T and FAB-T are inside it)")
    aa = AutoAttack(
        model,
        norm=p["norm"],
        eps=p["eps"],
        num_classes=num_classes,
        version=p["version"],
        steps=p["steps"],
        queries=p["queries"],
        n_target_classes=p["n_target_classes"],
        restarts=p["restarts"],
        eot_iter=p["eot_iter"],
    )
    for key in ("queries", "n_target_classes", "eot_iter"):
        p.pop(key)
    p.update(aa.params)
    return aa


BUILDERS: dict[str, Callable[[nn.Module, dict, int], Craft]] = {
    "fgsm": _fgsm,
    "pgd": _pgd,
    "eot_pgd": _eot_pgd,
    "cw": _cw,
    "apgd": _apgd,
    "fab": _fab,
    "square": _square,
}
