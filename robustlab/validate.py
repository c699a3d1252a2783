"""Checks that turn bad input into a one-line error before anything expensive starts."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig

from robustlab.training import dependency_config, same_budget_spec

MODES = ("train", "eval")


class ConfigError(ValueError):
    """A bad value in the composed config; the message is one line naming it."""


def _check_linf_eps(where: str, eps: Any, allow_zero: bool = False) -> None:
    low_ok = (lambda e: e >= 0) if allow_zero else (lambda e: e > 0)
    values = eps if isinstance(eps, list | tuple) else [eps]
    for e in values:
        try:
            e = float(e)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}={e!r} is not a number") from None
        if not (low_ok(e) and e <= 1):
            interval = "[0, 1]" if allow_zero else "(0, 1]"
            raise ConfigError(
                f"{where}={e} is outside {interval}: pixels live in [0,1], so an L-inf eps must be "
                f"in {interval} (e.g. 8/255=0.0314 for CIFAR, 0.3 for MNIST)"
            )


def _check_l2_eps(where: str, eps: Any) -> None:
    values = eps if isinstance(eps, list | tuple) else [eps]
    for e in values:
        if float(e) < 0:
            raise ConfigError(f"{where}={e} must be >= 0")


def validate_config(cfg: DictConfig) -> None:
    """Raise ConfigError on the first bad value (mode, ckpt, epochs, warm-up, eps, eval sizes)."""
    if cfg.mode not in MODES:
        raise ConfigError(f"mode={cfg.mode!r} is not one of {list(MODES)}")
    if cfg.mode == "eval":
        if not cfg.get("ckpt"):
            raise ConfigError("mode=eval needs ckpt=PATH (a Lightning checkpoint or a state_dict)")
        if not Path(cfg.ckpt).is_file():
            raise ConfigError(f"ckpt={cfg.ckpt} does not exist or is not a file")
    epochs = cfg.trainer.get("max_epochs")
    if cfg.mode == "train" and (epochs is None or int(epochs) <= 0):
        raise ConfigError(f"trainer.max_epochs={epochs} must be a positive integer")
    warmup = cfg.defense.get("warmup_epochs") or 0
    if cfg.mode == "train" and int(warmup) >= int(epochs):
        raise ConfigError(
            f"defense.warmup_epochs={warmup} >= trainer.max_epochs={epochs}: the {cfg.defense.name} "
            "loss would never be trained; lower the warm-up or raise max_epochs"
        )
    _check_linf_eps("dataset.eps", cfg.dataset.eps)
    inner = cfg.defense.get("inner")
    if inner is not None:
        if inner.get("norm", "linf") == "linf":
            _check_linf_eps("defense.inner.eps", inner.eps)
        else:
            _check_l2_eps("defense.inner.eps", inner.eps)
    n = cfg.eval.get("n_examples")
    if n is not None and int(n) <= 0:
        raise ConfigError(
            f"eval.n_examples={n} must be positive (or null for the whole test split)"
        )


def validate_attack_specs(specs: list[dict[str, Any]]) -> None:
    for spec in specs:
        where = f"attack {spec['name']}: eps"
        if spec.get("norm") == "linf":
            _check_linf_eps(where, spec["eps"], allow_zero=True)
        else:
            _check_l2_eps(where, spec["eps"])
        steps = spec.get("steps")
        if steps is not None and int(steps) <= 0:
            raise ConfigError(f"attack {spec['name']}: steps={steps} must be positive")


def accepted_parameters(cls: type) -> set[str] | None:
    """The keyword names ``cls(...)`` accepts along its ``__init__`` chain (each ``**kwargs``
    handed to the next class in the MRO); None when the chain never closes."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        names |= {p.name for p in params if p.kind in kinds and p.name != "self"}
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            return names
    return None


def validate_defenses(cfg: DictConfig) -> None:
    """The cell's defense and each ``eval.compare_with`` baseline pass ``validate_defense``."""
    validate_defense(cfg)
    for name in cfg.eval.get("compare_with") or []:
        validate_defense(
            dependency_config(cfg, same_budget_spec(cfg, name)), f"compare_with {name}"
        )


def validate_defense(cfg: DictConfig, where: str = "defense") -> None:
    """Every key of ``cfg.defense`` is a parameter of its class, and every dependency names a
    defense whose own config passes the same check (an experiment preset made for one defense
    merges keys another defense does not take)."""
    target = cfg.defense.get("_target_")
    accepted = accepted_parameters(get_class(target)) if target else None
    if accepted is not None:
        unknown = sorted(set(cfg.defense) - accepted - {"_target_"})
        if unknown:
            hint = (
                "; a preset made for another defense? A baseline beside it: eval.compare_with=[NAME]"
                if where == "defense"
                else ""
            )
            raise ConfigError(
                f"{where}: {unknown} are not parameters of defense={cfg.defense.get('name')} "
                f"({target}; it takes {sorted(accepted - {'net'})}){hint}"
            )
    for key, spec in (cfg.defense.get("dependencies") or {}).items():
        if not spec or not spec.get("defense"):
            raise ConfigError(f"{where}.dependencies.{key} names no defense (defense: NAME)")
        validate_defense(dependency_config(cfg, spec), f"{where}.dependencies.{key}")
