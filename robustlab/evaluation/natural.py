"""Natural shifts reported like attacks (``eval.natural_shifts``): threat model ``natural``, the
shifts of ``robustlab.data.shifts`` at the asked severities, for the bare net and the predictor."""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from robustlab.attacks.costs import count_passes
from robustlab.data.shifts import SHIFTS, apply_shift, check_shift_names
from robustlab.evaluation.engine import score
from robustlab.evaluation.summary import HEADLINE, PROTOCOLS, by_protocol, protocol_fields
from robustlab.results.outcomes import attach
from robustlab.results.record import now_iso, record_from_counts


def shift_records(
    predictor: nn.Module,
    net: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    meta: dict[str, Any],
    severities: list[int],
    shifts: list[str] | None = None,
    batch_size: int = 256,
    score_draws: int = 10,
) -> list[dict[str, Any]]:
    """Records (``robustlab/results/record.py``) for the bare ``net`` (inference ``plain``) and the
    defended ``predictor`` (``meta["inference"]``) under each shift and severity: attack
    ``shift:<name>@<severity>``, threat model ``natural``, norm ``none``, eps = severity.

    As for attacks, ``robust_acc`` counts an example only if it is correct clean and shifted;
    ``adv_acc`` is the plain accuracy on the shifted inputs. Defended records carry
    ``translated_share`` (share of shifted inputs the gate sent to the translator) when the
    predictor records it. The caller fixes eval mode and the device; noise is seeded by
    ``meta["seed"]`` (the same draw at every severity). A randomized predictor is scored on
    ``score_draws`` draws, with the protocols of :mod:`robustlab.evaluation.summary`.
    """
    shifts = list(SHIFTS) if shifts is None else list(shifts)
    check_shift_names(shifts)
    models = {"plain": net, meta["inference"]: predictor}
    clean = {k: by_protocol(score(m, x, y, score_draws, batch_size)) for k, m in models.items()}
    started, records = now_iso(), []
    for name in shifts:
        for severity in severities:
            x_shift = apply_shift(name, x, int(severity), seed=int(meta["seed"]))
            for inference, model in models.items():
                start = time.perf_counter()
                with count_passes(net) as counter:
                    shifted = by_protocol(score(model, x_shift, y, score_draws, batch_size))
                extra = {"forward_passes": counter.forward_rows / len(y)}
                if model is predictor and hasattr(predictor, "translated_share"):
                    extra["translated_share"] = predictor.translated_share(x_shift, batch_size)
                records.append(
                    _record(
                        meta,
                        inference,
                        f"shift:{name}@{int(severity)}",
                        int(severity),
                        clean[inference],
                        shifted,
                        score_draws if getattr(model, "randomized", False) else 1,
                        time.perf_counter() - start,
                        started,
                        extra,
                    )
                )
    return records


def _record(meta, inference, attack, severity, clean, shifted, k, seconds, started, extra) -> dict:
    robust = {name: clean[name] & shifted[name] for name in PROTOCOLS}
    rec = record_from_counts(
        {**meta, "inference": inference, "started": started},
        attack=attack,
        threat_model="natural",
        norm="none",
        eps=float(severity),
        n=len(clean[HEADLINE]),
        n_clean=int(clean[HEADLINE].sum()),
        n_robust=int(robust[HEADLINE].sum()),
        wall_seconds=seconds,
        kind="natural_shift",
        adv_acc=int(shifted[HEADLINE].sum()) / len(shifted[HEADLINE]),
        **protocol_fields(clean, robust, k),
        **extra,
    )
    n = len(clean[HEADLINE])
    return attach(rec, torch.arange(n), clean[HEADLINE], robust[HEADLINE])
