"""Resolve ``attacks=[...]`` names and ``attack.<key>`` overrides into concrete attack specs.

``attack.eps`` (L-inf attacks) and ``attack.eps_l2`` (L2 attacks) override the eps of every attack
of that norm; any other ``attack.<key>`` overrides that key in every attack that has it;
``attack.<name>.<key>`` overrides one attack. eps may be a list: one run yields a curve.
A spec may name ``base: OTHER`` to start from another attack's spec (e.g. targeted PGD).
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from robustlab.paths import CONF_DIR


def available_attacks() -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / "attack").glob("*.yaml"))


def _load_spec(name: str, valid: list[str]) -> DictConfig:
    raw = OmegaConf.load(CONF_DIR / "attack" / f"{name}.yaml")
    base = raw.pop("base", None)
    if base is None:
        return raw
    if base not in valid or base == name:
        raise ValueError(f"attack {name}: base={base!r} is not another attack of {valid}")
    return OmegaConf.merge(_load_spec(base, valid), raw)


def _as_list(eps: Any) -> list[float]:
    values = list(eps) if isinstance(eps, list | tuple) else [eps]
    return [float(v) for v in values]


def resolve_attack_specs(cfg: DictConfig) -> list[dict[str, Any]]:
    """One spec dict per attack name, eps always a list of floats; unknown names fail early."""
    names = list(cfg.attacks) if isinstance(cfg.attacks, list | tuple) else cfg.attacks
    if isinstance(names, str) or not hasattr(names, "__iter__"):
        names = [names]
    valid = available_attacks()
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise ValueError(f"attacks={unknown} not found; valid attacks: {valid}")
    node = cfg.get("attack")
    overrides = OmegaConf.to_container(node, resolve=True) if node is not None else {}
    per_attack = {k: v for k, v in overrides.items() if k in valid and isinstance(v, dict)}
    shared = {k: v for k, v in overrides.items() if k not in per_attack and v is not None}
    specs = []
    for name in names:
        raw = _load_spec(name, valid)
        merged = OmegaConf.merge({"dataset": cfg.dataset}, {"spec": raw})
        spec = OmegaConf.to_container(merged.spec, resolve=True)
        for key, value in shared.items():
            if key == "eps_l2":
                if spec.get("norm") == "l2":
                    spec["eps"] = value
            elif key == "eps":
                if spec.get("norm") == "linf":
                    spec["eps"] = value
            elif key in spec:
                spec[key] = value
        spec.update(per_attack.get(name, {}))
        spec["eps"] = _as_list(spec["eps"])
        specs.append(spec)
    return specs
