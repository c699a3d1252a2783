"""Behaviour is pinned: a small cell (mixup + MI-OL, four attacks, a compare_with baseline) writes
the records it wrote before the plan/config-group refactor, field for field (only ids, timestamps
and wall seconds may differ). tests/fixtures/pinned_cell_records.json came from the old code; its
MI-OL records were regenerated once when randomized predictors began to be scored on k draws
(one-draw, majority-of-k, worst-of-k), batched EOT and the transfer floor (the plain records did
not change). All of them were regenerated once more for resumable cells: an epoch's training order
is drawn from (seed, epoch) alone, so the trained weights differ; and a randomized predictor's
scoring draws are seeded per evaluation unit. Evaluated on the same weights (mode=eval), the old
and new code give identical plain records; MI-OL's differ only in their scoring draws. The records
then gained two fields, memory_format (an evaluation on a CPU runs channels_last by default) and
zero_grad_points (the gradient check's sample): with precision.channels_last=false and
eval.grad_check_points=null, and with the defaults, every other field stayed as it was."""

from __future__ import annotations

import json
from pathlib import Path

from robustlab.run import run

# outcomes_key and seed_group hash the config, which holds the (temporary) cache directory
VOLATILE = {
    "run_id",
    "started",
    "finished",
    "wall_seconds",
    "versions",
    "config_hash",
    "outcomes_key",
    "seed_group",
}
FIXTURE = Path(__file__).parent / "fixtures" / "pinned_cell_records.json"
CELL = (
    "defense=mixup",
    "trainer.max_epochs=2",
    "dataset.train_limit=400",
    "attack=[fgsm,pgd,apgd_ce,square]",
    "attack.pgd.steps=5",
    "attack.apgd_ce.steps=5",
    "attack.square.queries=50",
    "inference=[plain,mi_ol]",
    "eval.eot_draws=2",
    "eval.n_examples=40",
    "eval.compare_with=[erm]",
    "torch_threads=1",
    "logger=none",
    "trainer.enable_progress_bar=false",
)


def test_small_cell_writes_the_pinned_records(compose_cfg, tmp_path):
    records = run(compose_cfg(f"cache.dir={tmp_path / 'cache'}", *CELL))
    got = [{k: v for k, v in r.items() if k not in VOLATILE} for r in records]
    assert got == json.loads(FIXTURE.read_text())
