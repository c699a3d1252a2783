"""Records for the results tests: a valid record builder and a small two-directory sweep."""

from __future__ import annotations

from typing import Any

from robustlab.results.record import WORST_CASE, Record, wilson_interval

N = 200


def make_record(**overrides: Any) -> dict[str, Any]:
    """A contract-complete record; accuracies set their counts and Wilson intervals."""
    fields: dict[str, Any] = dict(
        run_id="r1",
        config_hash="h-erm",
        dataset="digits",
        model="smallcnn",
        defense="erm",
        inference="plain",
        attack="pgd",
        threat_model="adaptive",
        norm="linf",
        eps=0.3,
        n_examples=N,
        clean_acc=0.98,
        robust_acc=0.1,
        seed=0,
        versions={"torch": "2.13.0"},
        forward_passes=11.0,
        backward_passes=10.0,
        wall_seconds=1.5,
        started="2024-01-01T00:00:00",
        finished="2024-01-01T00:01:00",
    )
    fields.update(overrides)
    n_clean, n_robust = round(fields["clean_acc"] * N), round(fields["robust_acc"] * N)
    fields.update(
        n_clean_correct=n_clean,
        n_robust=n_robust,
        clean_ci=wilson_interval(n_clean, N),
        robust_ci=wilson_interval(n_robust, N),
    )
    return Record(**fields).to_dict()


def sweep() -> dict[str, list[dict[str, Any]]]:
    """Records by subdirectory: 2 defenses x 2 attacks + worst case, an MI row under both threat
    models (one flagged), a pgd eps list, and a rerun of erm/pgd (``stale`` is the older copy)."""
    erm = dict(config_hash="h-erm", defense="erm", clean_acc=0.98)
    at = dict(config_hash="h-at", defense="pgd_at", clean_acc=0.9, run_id="r2")
    mi = dict(config_hash="h-mi", defense="mixup", inference="mi_ol", clean_acc=0.85, run_id="r3")
    return {
        "a": [
            make_record(**erm, attack="pgd", robust_acc=0.11),
            make_record(**erm, attack="fgsm", robust_acc=0.3),
            make_record(**erm, attack=WORST_CASE, robust_acc=0.1),
        ],
        "b/nested": [
            make_record(**at, attack="pgd", robust_acc=0.6),
            make_record(**at, attack="pgd", eps=0.1, robust_acc=0.8),
            make_record(**at, attack="pgd", eps=0.2, robust_acc=0.7),
            make_record(**at, attack="fgsm", robust_acc=0.65),
            make_record(**at, attack=WORST_CASE, robust_acc=0.55),
            make_record(
                **mi,
                attack="pgd",
                threat_model="oblivious",
                robust_acc=0.5,
                sanity_flags=["robust_above_attack_free_noise"],
            ),
            make_record(**mi, attack="pgd", robust_acc=0.2),
            make_record(**mi, attack=WORST_CASE, robust_acc=0.2),
            make_record(**erm, attack="pgd", robust_acc=0.12, finished="2024-01-02T00:00:00"),
        ],
    }
