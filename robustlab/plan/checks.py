"""Checks that turn bad input into one line naming the key, the bad value and the valid choices,
while the plan is built: before any data is read or any training starts."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from robustlab.attacks.kinds import AttackSpec
from robustlab.attacks.kinds.base import as_numbers
from robustlab.data.shifts import MAX_SEVERITY
from robustlab.defenses.optim import check_optimizer
from robustlab.evaluation.engine import THREAT_MODELS
from robustlab.inference.build import SUPPLIED, required_parts
from robustlab.plan.errors import ConfigError
from robustlab.precision import (
    ATTACK_PRECISIONS,
    DEFAULTS,
    TRAINER_PRECISIONS,
    valid_channels_last,
)

MODES = ("train", "eval")


def check_int(where: str, value: Any, low: int = 1, allow_none: bool = False) -> int | None:
    """An integer >= ``low`` (``null`` too with ``allow_none``); floats and booleans refused."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        bound = "a positive integer" if low == 1 else f"an integer >= {low}"
        hint = " or null" if allow_none else ""
        raise ConfigError(f"{where}={value!r} must be {bound}{hint}")
    return value


def check_list(where: str, value: Any, example: str) -> list:
    """A list (a bare string is one mistake people make: it is not iterated by character)."""
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ConfigError(f"{where}={value!r} must be a list, e.g. {where}={example}")
    return list(value)


def check_linf_eps(where: str, eps: Any) -> None:
    try:
        values = as_numbers(where, eps)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    for e in values:
        if not 0 < e <= 1:
            raise ConfigError(
                f"{where}={e} is outside (0, 1]: pixels live in [0,1], so an L-inf eps must be "
                "in (0, 1] (e.g. 8/255=0.0314 for CIFAR, 0.3 for MNIST)"
            )


def check_seeds(cfg: DictConfig) -> list[int]:
    """``seeds``: null or a list of distinct non-negative integers."""
    seeds = check_list("seeds", cfg.get("seeds"), "[0,1,2]")
    for s in seeds:
        check_int("seeds[]", s, low=0)
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds={seeds} repeats a seed: each seed runs once")
    return [int(s) for s in seeds]


def check_run(cfg: DictConfig) -> None:
    """mode, ckpt, seed, threads, epochs and warm-up."""
    if cfg.mode not in MODES:
        raise ConfigError(f"mode={cfg.mode!r} is not one of {list(MODES)}")
    if cfg.mode == "eval" and not cfg.get("ckpt"):
        raise ConfigError("mode=eval needs ckpt=PATH (a Lightning checkpoint or a state_dict)")
    if cfg.mode == "train" and cfg.get("ckpt"):
        raise ConfigError(f"ckpt={cfg.ckpt} is only read with mode=eval; add mode=eval or drop it")
    check_int("seed", cfg.seed, low=0)
    check_seeds(cfg)
    check_int("torch_threads", cfg.get("torch_threads"), allow_none=True)
    epochs = check_int("trainer.max_epochs", cfg.trainer.get("max_epochs"))
    warmup = check_int("defense.warmup_epochs", cfg.defense.get("warmup_epochs") or 0, low=0)
    if cfg.mode == "train" and warmup >= epochs:
        raise ConfigError(
            f"defense.warmup_epochs={warmup} >= trainer.max_epochs={epochs}: the {cfg.defense.name} "
            "loss would never be trained; lower the warm-up or raise max_epochs"
        )
    check_linf_eps("dataset.eps", cfg.dataset.eps)
    for key in ("eps", "eps_l2"):
        try:
            as_numbers(f"threat.{key}", cfg.threat[key])
        except ValueError as err:
            raise ConfigError(str(err)) from None


def check_eval(cfg: DictConfig) -> None:
    """The ``eval`` node: sizes, threat models, shifts, baselines."""
    ev = cfg.eval
    check_int("eval.n_examples", ev.get("n_examples"), allow_none=True)
    check_int("eval.batch_size", ev.batch_size)
    check_int("eval.eot_draws", ev.eot_draws)
    check_int("eval.score_draws", ev.score_draws)
    check_int("eval.every_n_val_epochs", ev.every_n_val_epochs, low=0)
    check_int("eval.val_subset", ev.val_subset)
    check_int("eval.grad_check_points", ev.get("grad_check_points"), allow_none=True)
    for key in ("heavy_attacks_on_randomized", "transfer_floor"):
        if not isinstance(ev[key], bool):
            raise ConfigError(f"eval.{key}={ev[key]!r} must be true or false")
    threat_models(ev.threat_models)
    natural_shifts(ev.get("natural_shifts"))
    check_list("eval.compare_with", ev.get("compare_with"), "[pgd_at]")


def check_precision(cfg: DictConfig) -> None:
    """The ``precision`` node (opt-in bf16 attacks, channels_last, compile) and Lightning's
    ``trainer.precision`` (bf16-mixed training)."""
    node = cfg.get("precision")
    if node is not None and not isinstance(node, DictConfig):
        raise ConfigError(
            f"precision={node!r} is a node, not a value: set precision.attack=bf16, "
            "precision.channels_last=true, precision.compile=true, or trainer.precision=bf16-mixed"
        )
    node = node or {}
    unknown = sorted(set(node) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"precision: {unknown} not options; it takes {sorted(DEFAULTS)}")
    attack = node.get("attack", DEFAULTS["attack"])
    if attack not in ATTACK_PRECISIONS:
        raise ConfigError(f"precision.attack={attack!r} is not one of {list(ATTACK_PRECISIONS)}")
    channels_last = node.get("channels_last", DEFAULTS["channels_last"])
    if not valid_channels_last(channels_last):
        raise ConfigError(
            f"precision.channels_last={channels_last!r} is not one of [true, false, auto]"
        )
    if not isinstance(node.get("compile", False), bool):
        raise ConfigError(f"precision.compile={node['compile']!r} must be true or false")
    trained = cfg.trainer.get("precision", "32-true")
    if trained not in TRAINER_PRECISIONS:
        raise ConfigError(f"trainer.precision={trained!r} is not one of {list(TRAINER_PRECISIONS)}")
    if trained == "16-mixed" and str(cfg.trainer.get("accelerator", "cpu")) == "cpu":
        raise ConfigError(
            "trainer.precision='16-mixed' needs a GPU (Lightning would train in bf16 on CPU "
            "instead); use trainer.precision=bf16-mixed or trainer=gpu"
        )


def check_baselines(cfg: DictConfig) -> None:
    """A defense is not its own ``eval.compare_with`` baseline (checked once the defense is)."""
    baselines = list(cfg.eval.get("compare_with") or [])
    if cfg.defense.name in baselines:
        raise ConfigError(
            f"eval.compare_with={baselines} names the cell's own defense {cfg.defense.name}: "
            "a defense is not its own baseline"
        )


def threat_models(setting: Any) -> str | tuple[str, ...]:
    """``auto``, one threat model, or a list of them."""
    if setting in (None, "auto"):
        return "auto"
    chosen = (
        [setting] if isinstance(setting, str) else check_list("eval.threat_models", setting, "")
    )
    bad = [t for t in chosen if t not in THREAT_MODELS]
    if bad or not chosen:
        raise ConfigError(
            f"eval.threat_models={setting!r} is not 'auto' or a list of {list(THREAT_MODELS)}"
        )
    return tuple(chosen)


def natural_shifts(setting: Any) -> tuple[int, ...] | None:
    if setting is None:
        return None
    values = check_list("eval.natural_shifts", setting, "[1,3,5]")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_SEVERITY:
            raise ConfigError(
                f"eval.natural_shifts={values} holds {v!r}: severities are integers 1..{MAX_SEVERITY}"
            )
    return tuple(values) or None


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


def target_class(where: str, node: Any, choose: str) -> type:
    """The class a config's ``_target_`` names; a node without one was never selected."""
    if not isinstance(node, DictConfig) or not node.get("_target_"):
        raise ConfigError(f"{where} has no _target_: {choose}")
    try:
        return get_class(node._target_)
    except Exception as err:  # hydra raises ImportError or ValueError subclasses
        raise ConfigError(
            f"{where}._target_={node._target_!r} cannot be imported ({type(err).__name__}); "
            "is the module on the Python path?"
        ) from None


def check_keys(where: str, cls: type, keys: set[str], supplied: set[str] = frozenset()) -> None:
    """Every config key is a constructor parameter of ``cls``."""
    accepted = accepted_parameters(cls)
    if accepted is None:
        return
    unknown = sorted(keys - accepted - {"_target_"})
    if unknown:
        valid = sorted(accepted - supplied)
        raise ConfigError(f"{where}: {unknown} not parameters of {cls.__name__}; it takes {valid}")


def attack_specs(cfg: DictConfig) -> tuple[AttackSpec, ...]:
    """One typed spec per selected attack; the key under ``attack`` is its name."""
    node = cfg.get("attack")
    if not node:
        raise ConfigError(
            "attack=[] selects no attack: choose at least one, e.g. attack=[fgsm,pgd] "
            "(options: conf/attack)"
        )
    specs = []
    for name, spec_cfg in node.items():
        choose = f"select it with attack=[...,{name}] first, then attack.{name}.KEY=VALUE"
        cls = target_class(f"attack.{name}", spec_cfg, choose)
        if not (isinstance(cls, type) and issubclass(cls, AttackSpec)):
            raise ConfigError(f"attack.{name}._target_ must name an AttackSpec subclass")
        params = {k: v for k, v in _plain(spec_cfg).items() if k != "_target_"}
        try:
            specs.append(cls.from_params({**params, "name": name}))
        except (TypeError, ValueError) as err:
            raise ConfigError(str(err).splitlines()[0]) from None
    return tuple(specs)


def inference_configs(cfg: DictConfig, defense_cls: type | None) -> tuple[dict[str, Any], ...]:
    """One wrapper config per selected inference (its key is its name), checked against its
    class and against the trained parts the defense provides."""
    node = cfg.get("inference")
    if not node:
        raise ConfigError("inference=[] selects no wrapper: e.g. inference=[plain]")
    out = []
    for name, wrapper in node.items():
        choose = f"select it with inference=[...,{name}] first"
        cls = target_class(f"inference.{name}", wrapper, choose)
        params = {**_plain(wrapper), "name": name}
        check_keys(f"inference.{name}", cls, set(params), set(SUPPLIED))
        needed = [p for p in required_parts(cls) if p not in params]
        provided = set(getattr(defense_cls, "parts", ())) if cfg.mode == "train" else set()
        missing = [p for p in needed if p not in provided]
        if missing:
            have = f"defense={cfg.defense.name} provides {sorted(provided) or 'none'}"
            if cfg.mode == "eval":
                have = "mode=eval loads a bare net"
            raise ConfigError(
                f"inference={name} needs the trained {missing} of a defense that provides them "
                f"(e.g. defense=translation); {have}"
            )
        out.append(params)
    return tuple(out)


def defense_class(where: str, defense: DictConfig) -> type:
    return target_class(where, defense, "choose a defense with defense=NAME")


def check_defense(where: str, defense: DictConfig) -> type:
    """Keys against the class, optimizer and schedule, the inner attack's eps."""
    cls = defense_class(where, defense)
    hint = (
        "; a preset made for another defense? A baseline beside it: eval.compare_with=[NAME]"
        if where == "defense"
        else ""
    )
    try:
        check_keys(where, cls, set(defense), {"net"})
    except ConfigError as err:
        raise ConfigError(f"{err}{hint}") from None
    try:
        check_optimizer(where, defense.get("optimizer"), defense.get("scheduler"))
    except ValueError as err:
        raise ConfigError(str(err)) from None
    inner = defense.get("inner")
    if inner is not None and inner.get("norm", "linf") == "linf":
        check_linf_eps(f"{where}.inner.eps", inner.eps)
    return cls


def check_model(cfg: DictConfig) -> None:
    cls = target_class("model", cfg.model, "choose a model with model=NAME")
    check_keys("model", cls, set(cfg.model))


def _plain(node: DictConfig) -> dict[str, Any]:
    try:
        return OmegaConf.to_container(node, resolve=True)
    except Exception as err:  # an interpolation to a missing key, a bad resolver...
        raise ConfigError(f"{type(err).__name__}: {str(err).splitlines()[0]}") from None
