"""Turn per-example flags into records: one per (attack, eps, threat model), plus worst cases.

The worst case of a group (same norm and eps; per threat model, and across threat models when
there are several) counts an example as robust only if every attack of the group failed on it.

A randomized predictor is scored on k draws per input (``eval.score_draws``); its records carry
three protocols, each for clean and robust accuracy:

- ``one_draw``: the first draw, what a single evaluation reports;
- ``majority_of_k``: right on more than k/2 draws (a tie is wrong);
- ``worst_of_k``: right on all k draws. This is the headline (``clean_acc``, ``robust_acc``,
  intervals, flags and worst cases): a point is robust only if no draw lets the attack through.

A deterministic predictor is scored once: the three coincide and only the headline is written.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch

from robustlab.evaluation.engine import ShardResult
from robustlab.evaluation.sanity import apply_sanity_flags, flag_adaptive_weaker_than_transfer
from robustlab.results.outcomes import attach
from robustlab.results.record import WORST_CASE, now_iso, record_from_counts

ALL_THREAT_MODELS = "all"
PROTOCOLS = ("one_draw", "majority_of_k", "worst_of_k")
HEADLINE = "worst_of_k"


def as_draws(flags: torch.Tensor) -> torch.Tensor:
    """(n, k) per-draw flags; a 1-D tensor is one draw per example."""
    return flags if flags.dim() == 2 else flags[:, None]


def protocol_fields(
    clean: dict[str, torch.Tensor], robust: dict[str, torch.Tensor], k: int
) -> dict[str, Any]:
    """The record fields of the three protocols (none for a deterministic predictor, k = 1)."""
    if k == 1:
        return {}
    n = len(clean[HEADLINE])
    out: dict[str, Any] = {"score_draws": k, "protocol": HEADLINE}
    for name in PROTOCOLS:
        out[f"clean_acc_{name}"] = int(clean[name].sum()) / n
        out[f"robust_acc_{name}"] = int(robust[name].sum()) / n
    return out


def by_protocol(draws: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-example verdicts under each protocol from (n, k) per-draw flags."""
    draws = as_draws(draws)
    k = draws.shape[1]
    return {
        "one_draw": draws[:, 0],
        "majority_of_k": draws.sum(1) * 2 > k,
        "worst_of_k": draws.all(1),
    }


def first_of_each(indices: torch.Tensor) -> torch.Tensor:
    """Positions that keep each index once (its first occurrence), sorted by index."""
    order = torch.argsort(indices, stable=True)
    keep = torch.ones_like(order, dtype=torch.bool)
    sorted_idx = indices[order]
    keep[1:] = sorted_idx[1:] != sorted_idx[:-1]
    return order[keep]


def merge_shards(shards: list[ShardResult]) -> ShardResult:
    """Concatenate shards from all ranks, keep each test index once, sort by index. The gradient
    check's masks cover the first points of each shard only: they are merged over those."""
    indices = torch.cat([s.indices for s in shards])
    pick = first_of_each(indices)

    def cat(tensors):
        return torch.cat(tensors)[pick]

    base = shards[0]
    outcomes = []
    for i, outcome in enumerate(base.outcomes):
        parts = [s.outcomes[i] for s in shards]
        comps = {k: cat([p.component_broken[k] for p in parts]) for k in outcome.component_broken}
        optional = {
            key: cat([getattr(p, key) for p in parts])
            for key in ("own_correct", "from_transfer")
            if getattr(outcome, key) is not None
        }
        outcomes.append(
            type(outcome)(
                **{
                    **outcome.__dict__,
                    "adv_correct": cat([p.adv_correct for p in parts]),
                    "forward_rows": sum(p.forward_rows for p in parts),
                    "backward_rows": sum(p.backward_rows for p in parts),
                    "wall_seconds": max(p.wall_seconds for p in parts),
                    "component_broken": comps,
                    **optional,
                }
            )
        )
    zero_grad = {}
    for k in base.zero_grad:
        checked = torch.cat([s.indices[: len(s.zero_grad[k])] for s in shards])
        zero_grad[k] = torch.cat([s.zero_grad[k] for s in shards])[first_of_each(checked)]
    return ShardResult(indices[pick], cat([s.clean_correct for s in shards]), outcomes, zero_grad)


def build_records(
    result: ShardResult,
    meta: dict[str, Any],
    *,
    randomized: bool,
    needs_adaptive: bool,
    majority_class_acc: float | None = None,
) -> list[dict[str, Any]]:
    """Records for one cell. ``meta``: run_id, config_hash, dataset, model, defense, inference,
    seed, versions, started. ``majority_class_acc``: the accuracy of always predicting the most
    frequent class of the evaluated labels (for the ``clean_at_chance`` flag)."""
    clean_draws = as_draws(result.clean_correct)
    n, k = clean_draws.shape
    clean = by_protocol(clean_draws)
    n_clean = int(clean[HEADLINE].sum())
    finished = now_iso()

    def record(attack, tm, norm, eps, robust, **extra) -> dict[str, Any]:
        rec = record_from_counts(
            meta,
            attack=attack,
            threat_model=tm,
            norm=norm,
            eps=eps,
            n=n,
            n_clean=n_clean,
            n_robust=int(robust[HEADLINE].sum()),
            finished=finished,
            **protocol_fields(clean, robust, k),
            **extra,
        )
        return attach(rec, result.indices, clean[HEADLINE], robust[HEADLINE])

    records, robust_of = [], {}
    for o in result.outcomes:
        adv = by_protocol(o.adv_correct)
        robust = {name: clean[name] & adv[name] for name in PROTOCOLS}
        robust_of[(o.attack, o.threat_model, o.norm, o.eps)] = robust
        survivors_broken = o.component_broken.get("square")
        floor = {}
        if o.from_transfer is not None:
            own = clean[HEADLINE] & by_protocol(o.own_correct)[HEADLINE]
            floor = {
                "transfer_share": int(o.from_transfer.sum()) / n,
                "robust_acc_without_transfer": int(own.sum()) / n,
            }
        records.append(
            record(
                o.attack,
                o.threat_model,
                o.norm,
                o.eps,
                robust,
                kind="attack",
                attack_params={**o.params, "kind": o.spec.kind},
                forward_passes=o.forward_rows / n,
                backward_passes=o.backward_rows / n,
                wall_seconds=o.wall_seconds,
                adv_acc=int(adv[HEADLINE].sum()) / n,
                zero_grad_share=int(result.zero_grad[o.threat_model].sum())
                / len(result.zero_grad[o.threat_model]),
                zero_grad_points=len(result.zero_grad[o.threat_model]),
                randomized=randomized,
                majority_class_acc=majority_class_acc,
                eot=o.eot,
                bpda=o.bpda,
                attack_precision=o.precision,
                square_broke_whitebox_survivors=bool(
                    survivors_broken is not None and survivors_broken.any()
                ),
                broken_by_component={
                    name: int((clean[HEADLINE] & mask).sum())
                    for name, mask in o.component_broken.items()
                },
                **floor,
            )
        )
    apply_sanity_flags(records, needs_adaptive)
    records.extend(_worst_cases(records, robust_of, record))
    flag_adaptive_weaker_than_transfer(records)
    return records


def _worst_cases(attack_records, robust_of, record) -> list[dict[str, Any]]:
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    threat_models = {r["threat_model"] for r in attack_records}
    for r in attack_records:
        groups[(r["threat_model"], r["norm"], r["eps"])].append(r)
        if len(threat_models) > 1:
            groups[(ALL_THREAT_MODELS, r["norm"], r["eps"])].append(r)
    out = []
    for (tm, norm, eps), members in groups.items():
        masks = [robust_of[(m["attack"], m["threat_model"], m["norm"], m["eps"])] for m in members]
        robust = {name: torch.stack([m[name] for m in masks]).all(dim=0) for name in PROTOCOLS}
        flags = sorted({f for m in members for f in m["sanity_flags"]})
        out.append(
            record(
                WORST_CASE,
                tm,
                norm,
                eps,
                robust,
                kind="worst_case",
                attack_params={
                    "over": sorted({f"{m['attack']}/{m['threat_model']}" for m in members})
                },
                forward_passes=sum(m["forward_passes"] for m in members),
                backward_passes=sum(m["backward_passes"] for m in members),
                wall_seconds=sum(m["wall_seconds"] for m in members),
                randomized=members[0]["randomized"],
                sanity_flags=flags,
                attack_precision=(
                    "bf16" if any(m["attack_precision"] == "bf16" for m in members) else "fp32"
                ),
            )
        )
    return out
