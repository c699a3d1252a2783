"""Turn per-example flags into records: one per (attack, eps, threat model), plus worst cases.

The worst case of a group (same norm and eps; per threat model, and across threat models when
there are several) counts an example as robust only if every attack of the group failed on it.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch

from robustlab.evaluation.engine import ShardResult
from robustlab.evaluation.sanity import apply_sanity_flags
from robustlab.results.record import WORST_CASE, now_iso, record_from_counts

ALL_THREAT_MODELS = "all"


def merge_shards(shards: list[ShardResult]) -> ShardResult:
    """Concatenate shards from all ranks, keep each test index once, sort by index."""
    indices = torch.cat([s.indices for s in shards])
    order = torch.argsort(indices, stable=True)
    keep = torch.ones_like(order, dtype=torch.bool)
    sorted_idx = indices[order]
    keep[1:] = sorted_idx[1:] != sorted_idx[:-1]
    pick = order[keep]

    def cat(tensors):
        return torch.cat(tensors)[pick]

    base = shards[0]
    outcomes = []
    for i, outcome in enumerate(base.outcomes):
        parts = [s.outcomes[i] for s in shards]
        comps = {k: cat([p.component_broken[k] for p in parts]) for k in outcome.component_broken}
        outcomes.append(
            type(outcome)(
                **{
                    **outcome.__dict__,
                    "adv_correct": cat([p.adv_correct for p in parts]),
                    "forward_rows": sum(p.forward_rows for p in parts),
                    "backward_rows": sum(p.backward_rows for p in parts),
                    "wall_seconds": max(p.wall_seconds for p in parts),
                    "component_broken": comps,
                }
            )
        )
    zero_grad = {k: cat([s.zero_grad[k] for s in shards]) for k in base.zero_grad}
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
    n = int(result.clean_correct.numel())
    clean = result.clean_correct
    n_clean = int(clean.sum())
    finished = now_iso()

    def record(attack, tm, norm, eps, robust, **extra) -> dict[str, Any]:
        return record_from_counts(
            meta,
            attack=attack,
            threat_model=tm,
            norm=norm,
            eps=eps,
            n=n,
            n_clean=n_clean,
            n_robust=int(robust.sum()),
            finished=finished,
            **extra,
        )

    records, robust_of = [], {}
    for o in result.outcomes:
        robust = clean & o.adv_correct
        robust_of[(o.attack, o.threat_model, o.norm, o.eps)] = robust
        survivors_broken = o.component_broken.get("square")
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
                adv_acc=int(o.adv_correct.sum()) / n,
                zero_grad_share=int(result.zero_grad[o.threat_model].sum()) / n,
                randomized=randomized,
                majority_class_acc=majority_class_acc,
                eot=o.eot,
                bpda=o.bpda,
                square_broke_whitebox_survivors=bool(
                    survivors_broken is not None and survivors_broken.any()
                ),
                broken_by_component={
                    name: int((clean & mask).sum()) for name, mask in o.component_broken.items()
                },
            )
        )
    apply_sanity_flags(records, needs_adaptive)
    records.extend(_worst_cases(records, robust_of, record))
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
        robust = torch.stack(masks).all(dim=0)
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
                sanity_flags=flags,
            )
        )
    return out
