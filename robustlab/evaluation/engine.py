"""Per-sample robust evaluation of a predictor: every attack x eps x threat model on one shard.

Threat models (see ../shared/DESIGN.md):
- ``oblivious``: craft on the bare net (``predictor.net``), score the predictor;
- ``adaptive``: craft on the predictor itself, through EOT when it is randomized and BPDA when
  part of it is not differentiable; score the predictor's real forward.

An example is robust to an attack only if it is correct when clean AND on its adversarial example
(the AutoAttack convention). Everything runs inside a forked RNG seeded from the cell's seed, so
the caller's global generator is left as it was and reruns give identical flags.

Scoring a randomized predictor: every input (clean or adversarial) is scored on ``score_draws``
fresh draws, kept per example as a (n, k) matrix from which the records derive one-draw,
worst-of-k and majority-of-k accuracies; a deterministic predictor is scored once (k = 1).

The transfer floor: when a predictor is evaluated under both threat models, the adaptive verdict
of an example keeps the oblivious (transfer) adversarial example as a candidate. Per example the
candidate right on fewer of the k draws wins, on the very draws that scored the oblivious record,
so an adaptive record can never count a point robust that transfer broke: an adaptive attacker
weaker than transfer is a broken attacker (Tramer, Carlini, Brendel, Madry, "On Adaptive Attacks
to Adversarial Example Defenses", NeurIPS 2020), and its raw number is still recorded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from robustlab.attacks.adaptive import EOT, adaptive_model
from robustlab.attacks.costs import count_passes
from robustlab.attacks.factory import as_spec, build_attack
from robustlab.attacks.kinds import AttackSpec
from robustlab.evaluation.units import UnitStore, fingerprint, weights_fingerprint
from robustlab.inference.base import Predictor
from robustlab.modes import eval_mode
from robustlab.precision import ATTACK_PRECISIONS, attack_autocast

THREAT_MODELS = ("oblivious", "adaptive")
VANISHING_GRAD_NORM = 1e-12


@dataclass
class AttackOutcome:
    """Per-example result of one (attack, eps, threat model) on a shard."""

    attack: str
    threat_model: str
    norm: str
    eps: float
    spec: AttackSpec
    params: dict[str, Any]
    adv_correct: torch.Tensor  # (n, k): right on each scoring draw (the verdict, floor applied)
    own_correct: torch.Tensor | None = None  # adaptive with a floor: its own candidates' draws
    from_transfer: torch.Tensor | None = None  # adaptive with a floor: the transfer candidate won
    forward_rows: int = 0
    backward_rows: int = 0
    wall_seconds: float = 0.0
    eot: bool = False
    bpda: bool = False
    component_broken: dict[str, torch.Tensor] = field(default_factory=dict)
    precision: str = "fp32"  # what the attack crafted in (bf16: under autocast); verdicts are fp32


@dataclass
class ShardResult:
    """Everything the records need from one shard of the test split."""

    indices: torch.Tensor
    clean_correct: torch.Tensor  # (n, k): right on each scoring draw of the clean input
    outcomes: list[AttackOutcome]
    zero_grad: dict[str, torch.Tensor]


def threat_models_for(predictor: Predictor, setting: Any) -> list[str]:
    """``auto``: both threat models for randomized/preprocessing predictors, else adaptive only."""
    if setting in (None, "auto"):
        return list(THREAT_MODELS) if predictor.needs_adaptive_tools() else ["adaptive"]
    chosen = [setting] if isinstance(setting, str) else list(setting)
    bad = [t for t in chosen if t not in THREAT_MODELS]
    if bad:
        raise ValueError(f"eval.threat_models={bad} not in {list(THREAT_MODELS)} or 'auto'")
    return chosen


def crafting_model(
    predictor: Predictor, threat_model: str, eot_draws: int, spec: AttackSpec
) -> tuple[nn.Module, Callable[[], AbstractContextManager], bool, bool]:
    """(model to craft on, context factory, uses EOT, uses BPDA) for a threat model."""
    if threat_model == "oblivious":
        return predictor.net, nullcontext, False, False
    model, ctx = adaptive_model(predictor, eot_draws, spec.native_eot)
    eot = isinstance(model, EOT) or (predictor.randomized and spec.native_eot)
    return model, ctx, eot, not predictor.differentiable


def _batches(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


@torch.no_grad()
def score(predictor: Predictor, x: torch.Tensor, y: torch.Tensor, draws: int, batch_size: int):
    """(n, k) bool: right on each of k fresh draws (k = ``draws`` if randomized, else 1)."""
    k = draws if getattr(predictor, "randomized", False) else 1
    return torch.cat(
        [
            torch.stack([predictor(x[s]).argmax(1) == y[s] for _ in range(k)], dim=1)
            for s in _batches(len(x), batch_size)
        ]
    )


def transfer_floor(own: torch.Tensor, transfer: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per example the candidate right on fewer draws (ties: the adaptive one); returns the
    verdict's draws and where the transfer candidate won."""
    from_transfer = transfer.sum(1) < own.sum(1)
    return torch.where(from_transfer[:, None], transfer, own), from_transfer


def zero_gradient_mask(
    model: nn.Module, ctx: Callable[[], AbstractContextManager], x, y, batch_size: int
) -> torch.Tensor:
    """True where the input gradient of the CE loss vanishes (a gradient-masking symptom)."""
    masks = []
    for s in _batches(len(x), batch_size):
        xb = x[s].clone().requires_grad_(True)
        with torch.enable_grad(), ctx():
            loss = F.nll_loss(F.log_softmax(model(xb), dim=1), y[s], reduction="sum")
            (grad,) = torch.autograd.grad(loss, xb)
        masks.append(grad.flatten(1).norm(dim=1) <= VANISHING_GRAD_NORM)
    return torch.cat(masks)


def evaluate_shard(
    predictor: Predictor,
    x: torch.Tensor,
    y: torch.Tensor,
    indices: torch.Tensor,
    specs: list[AttackSpec | dict[str, Any]],
    *,
    num_classes: int,
    seed: int,
    threat_models: Any = "auto",
    eot_draws: int = 20,
    batch_size: int = 256,
    progress: bool = True,
    heavy_on_randomized: bool = True,
    score_draws: int = 10,
    keep_transfer: bool = True,
    state_dir: Path | None = None,
    attack_precision: str = "fp32",
    grad_check_points: int | None = None,
) -> ShardResult:
    """Run every attack of ``specs`` on (x, y) under each threat model; flags per example.

    ``score_draws``: k of the randomized-predictor protocol; ``keep_transfer``: the transfer
    floor of the adaptive verdicts (module docstring); off, adaptive records are the adaptive
    attack alone (to diagnose an attacker; ``adaptive_weaker_than_transfer`` then can fire).

    The work is done in units (one call of an attack, eps and threat model: a batch, or more
    points for an attack that pools them, as AutoAttack does; the clean scoring and gradient
    check of one batch), each in a generator seeded from ``seed`` and its
    name (``robustlab.evaluation.units``); with ``state_dir`` finished units are kept there and
    a rerun computes only the missing ones.

    ``heavy_on_randomized=False`` skips attacks whose spec says ``heavy: true`` (AutoAttack) on a
    randomized predictor, where EOT multiplies their cost; the skip is printed, and the missing
    records show as empty cells in the report rather than as numbers.

    ``attack_precision="bf16"`` crafts every attack under bf16 autocast (``robustlab.precision``);
    clean scoring, the gradient check and the verdicts on the adversarial examples stay fp32.

    ``grad_check_points``: the gradient check (a diagnostic share, ``zero_grad_share`` in the
    records) runs on the first that many points of the shard (None: on every point); its masks
    hold those points only.
    """
    if attack_precision not in ATTACK_PRECISIONS:
        raise ValueError(
            f"attack_precision={attack_precision!r} is not one of {list(ATTACK_PRECISIONS)}"
        )
    if grad_check_points is not None and grad_check_points < 1:
        raise ValueError(f"grad_check_points={grad_check_points} must be >= 1 or None")
    specs = [as_spec(s) for s in specs]
    chosen = sorted(threat_models_for(predictor, threat_models), key=THREAT_MODELS.index)
    if predictor.randomized and not heavy_on_randomized:
        skipped = [s.name for s in specs if s.heavy]
        if skipped:
            print(f"robustlab: not running {skipped} on randomized {predictor.name} (heavy)")
        specs = [s for s in specs if not s.heavy]
    jobs = [(tm, spec, eps) for tm in chosen for spec in specs for eps in spec.eps]
    batches = list(_batches(len(x), batch_size))
    grad_checked = chosen if jobs else []
    scope = fingerprint(
        weights_fingerprint(predictor),
        predictor.name,
        x,
        y,
        indices,
        seed,
        eot_draws,
        score_draws,
        batch_size,
        *(() if attack_precision == "fp32" else (attack_precision,)),
    )
    units = UnitStore(None if state_dir is None else state_dir / scope, seed)
    checked = _checked_rows(batches, len(x) if grad_check_points is None else grad_check_points)
    total = (
        len(batches)
        + sum(len(_calls(spec, len(x), batch_size)) for _, spec, _ in jobs)
        + len(checked) * len(grad_checked)
    )
    done = units.stored()
    if done and progress:
        print(f"robustlab: evaluation of {predictor.name} resumes: {done} of {total} units done")
    bar = tqdm(total=total, desc="robust eval", disable=not progress, leave=False)
    outcomes, transfer = [], {}
    with eval_mode(predictor):

        def clean(s: slice) -> dict[str, Any]:
            return {"correct": score(predictor, x[s], y[s], score_draws, batch_size).cpu()}

        clean_correct = torch.cat(
            [
                _unit(units, bar, ("clean", b), partial(clean, s))["correct"]
                for b, s in enumerate(batches)
            ]
        )
        # the gradient check crafts like the threat model's first attack (specs[0]'s EOT choice)
        zero_grad = {
            tm: torch.cat(
                [
                    _unit(
                        units,
                        bar,
                        ("zero_grad", tm, b, *(() if s == batches[b] else (s.stop - s.start,))),
                        partial(_zero_grad_unit, predictor, tm, eot_draws, specs[0], x[s], y[s]),
                    )["mask"]
                    for b, s in checked
                ]
            )
            for tm in grad_checked
        }
        for tm, spec, eps in jobs:
            bar.set_postfix_str(f"{spec.name} {tm} eps={eps:g}")
            model, ctx, eot, bpda = crafting_model(predictor, tm, eot_draws, spec)
            runner = build_attack(
                spec, model, seed=seed, num_classes=num_classes, eps=eps, batch_size=batch_size
            )
            parts = [
                _unit(
                    units,
                    bar,
                    _attack_unit_name(tm, runner, b),
                    partial(
                        _attack_unit,
                        predictor,
                        runner,
                        ctx,
                        x[s],
                        y[s],
                        b,
                        score_draws,
                        batch_size,
                        attack_precision,
                    ),
                )
                for b, s in enumerate(_calls(spec, len(x), batch_size))
            ]
            adv_correct = own = torch.cat([p["correct"] for p in parts])
            from_transfer = None
            if tm == "oblivious":
                transfer[(spec.name, eps)] = adv_correct
            elif keep_transfer and (spec.name, eps) in transfer:
                adv_correct, from_transfer = transfer_floor(own, transfer[(spec.name, eps)])
            broken: dict[str, list[torch.Tensor]] = {}
            for p in parts:
                for comp, mask in p["broken"].items():
                    broken.setdefault(comp, []).append(mask)
            outcomes.append(
                AttackOutcome(
                    attack=spec.name,
                    threat_model=tm,
                    norm=spec.norm,
                    eps=float(eps),
                    spec=spec,
                    params={
                        **getattr(runner, "params", {}),
                        **({"eot_draws": eot_draws} if eot and not spec.native_eot else {}),
                    },
                    adv_correct=adv_correct,
                    own_correct=None if from_transfer is None else own,
                    from_transfer=from_transfer,
                    forward_rows=sum(int(p["forward_rows"]) for p in parts),
                    backward_rows=sum(int(p["backward_rows"]) for p in parts),
                    wall_seconds=sum(float(p["seconds"]) for p in parts),
                    eot=eot,
                    bpda=bpda,
                    component_broken={k: torch.cat(v) for k, v in broken.items()},
                    precision=attack_precision,
                )
            )
    bar.close()
    return ShardResult(indices.cpu(), clean_correct, outcomes, zero_grad)


def _calls(spec: AttackSpec, n: int, batch_size: int) -> list[slice]:
    """The points of each call of an attack (its units): a batch, or more for one that pools."""
    return list(_batches(n, spec.call_points(batch_size, n)))


def _checked_rows(batches: list[slice], points: int) -> list[tuple[int, slice]]:
    """(batch index, rows) of the gradient check: the first ``points`` rows of the shard."""
    return [
        (b, slice(s.start, min(s.stop, points))) for b, s in enumerate(batches) if s.start < points
    ]


def _unit(units: UnitStore, bar, name: tuple, compute) -> dict[str, Any]:
    result = units.run(name, compute)
    bar.update(1)
    return result


def _attack_unit_name(tm: str, runner, b: int) -> tuple:
    return ("attack", tm, runner.name, runner.eps, fingerprint(runner.params), b)


def _zero_grad_unit(predictor, tm: str, eot_draws: int, spec, x, y) -> dict[str, Any]:
    model, ctx, _, _ = crafting_model(predictor, tm, eot_draws, spec)
    return {"mask": zero_gradient_mask(model, ctx, x, y, len(x)).cpu()}


def _attack_unit(
    predictor,
    runner,
    ctx,
    x,
    y,
    b: int,
    score_draws: int,
    batch_size: int,
    precision: str = "fp32",
) -> dict[str, Any]:
    """One call of an attack (a batch, or more points: ``AttackSpec.call_points``): craft
    (seeded by the call's index) in ``precision``, score on k draws in fp32."""
    start = time.perf_counter()
    with count_passes(predictor.net) as counter:
        with ctx(), attack_autocast(runner.model, precision, x.device.type):
            adv = runner(x, y, call=b).detach()
        broken = {
            comp: mask.to(torch.bool).cpu()
            for comp, mask in getattr(runner, "last_component_success", {}).items()
        }
    correct = score(predictor, adv, y, score_draws, batch_size).cpu()
    return {
        "correct": correct,
        "forward_rows": counter.forward_rows,
        "backward_rows": counter.backward_rows,
        "seconds": time.perf_counter() - start,
        "broken": broken,
    }
