"""Kill anywhere (issue 16, item 6): a 3-cell sweep killed by SIGKILL at many moments, then rerun,
ends as the uninterrupted sweep ends.

``tests/kill_driver.py`` runs the sweep in its own process, counts events (epoch starts, each
atomic write just before and after its rename, evaluation units begun and computed, the result
table, the sweep's end) and dies at the chosen one; it journals the work begun (epochs and
evaluation units). The uninterrupted sweep gives the events, the records, the per-example
outcomes, the trained weights and the work done. Each kill scenario, on a fresh sweep and cache
directory, is killed once (or in a chain, again in each next attempt, up to five kills), then rerun
until it exits 0 (at most twice); then

(a) each cell holds one record set equal to the uninterrupted sweep's (volatile fields aside),
    DONE.json counting its lines, the same per-example outcomes, checkpoints (``last.ckpt``,
    ``best.ckpt``) of the same epochs and weights, and the cache the same weights;
(b) no temp file of an atomic write is left under the sweep or the cache directory;
(c) epochs and evaluation units begun over all attempts exceed the uninterrupted counts by at
    most one each per kill;
(d) the attempt after a kill says where it resumes: the epoch (``resuming training of D at epoch
    K of N``), a finished training taken from its checkpoint, the cached weights reused, the
    number of evaluation units already done, or the cell found complete.

Single kills leave the directory to one rerun; chains kill each next attempt again at a later
moment. Scenarios run in parallel, one per CPU core up to four (each process has one torch
thread); on two free cores the
test takes about two to three minutes (each attempt pays ~5 s of importing torch and Lightning).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

DRIVER = Path(__file__).resolve().parent / "kill_driver.py"
CELLS = ("0_digits_erm", "1_digits_pgd_at", "2_digits_mixup")
DEFENSE = {cell: cell.split("_", 2)[2] for cell in CELLS}
MAX_EPOCHS = 3
SWEEP = [
    "-m",
    "defense=erm,pgd_at,mixup",
    "dataset.train_limit=200",
    f"trainer.max_epochs={MAX_EPOCHS}",
    "eval.n_examples=48",
    "eval.batch_size=16",
    "attack=[fgsm,pgd]",
    "attack.pgd.steps=3",
    "inference=[plain,mi_ol]",
    "inference.mi_ol.n_ol=4",
    "eval.eot_draws=2",
    "eval.score_draws=3",
    "logger=none",
    "trainer.enable_progress_bar=false",
    "torch_threads=1",
]
VOLATILE = {"run_id", "started", "finished", "wall_seconds", "versions"}
TRAINING = ("epoch_start", "write_ckpt_last_before", "write_ckpt_last_after")
TRAINING += ("write_ckpt_best_before", "write_ckpt_best_after", "write_cache_before")
EVALUATION = ("unit_start", "unit_computed", "write_unit_before", "write_unit_after")
EVALUATION += ("write_records_before", "write_records_after", "write_outcomes_before")
EVALUATION += ("write_outcomes_after", "table", "write_done_before")

# A scenario: its first kill (an event of the uninterrupted sweep: kind, cell, which of that cell's
# events of the kind), then the kills of the next attempts ("KIND@CELL#N": the N-th event of KIND
# in CELL of that attempt), then reruns. Single kills first, then chains that kill a directory
# again and again as it makes progress (cheaper per kill: each attempt does a little more work).
SCENARIOS = [
    (("epoch_start", 0, 1), []),
    (("write_ckpt_last_before", 1, 2), []),
    (("write_cache_before", 2, 0), []),
    (("unit_computed", 1, 20), []),
    (("write_records_after", 2, 0), []),
    (("write_done_after", 0, 0), []),
    (
        ("write_ckpt_best_before", 0, 0),
        [
            "unit_start@0_digits_erm#5",
            "write_outcomes_before@1_digits_pgd_at#1",
            "write_outcomes_after@2_digits_mixup#1",
            "sweep_end@-#1",
        ],
    ),
    (
        ("cell_start", 1, 0),
        [
            "epoch_start@1_digits_pgd_at#3",
            "write_unit_before@1_digits_pgd_at#7",
            "table@1_digits_pgd_at#1",
            "write_done_before@2_digits_mixup#1",
        ],
    ),
    (
        ("write_ckpt_best_after", 2, 0),
        [
            "write_ckpt_last_after@2_digits_mixup#3",
            "write_cache_after@2_digits_mixup#1",
            "write_unit_after@2_digits_mixup#15",
            "write_records_before@2_digits_mixup#1",
        ],
    ),
]


@dataclass
class Event:
    n: int
    kind: str
    cell: str
    detail: str


@dataclass
class Attempt:
    kill: str
    returncode: int
    stdout: str
    events: list[Event] = field(default_factory=list)
    epochs: list[str] = field(default_factory=list)  # "cell epoch", one per epoch begun
    units: list[str] = field(default_factory=list)  # "cell unit", one per unit begun
    killed: bool = False


def run_attempt(root: Path, kill: str, tag: str) -> Attempt:
    journal = root / f"journal-{tag}.txt"
    proc = subprocess.run(
        [
            sys.executable,
            str(DRIVER),
            kill,
            *SWEEP,
            f"hydra.sweep.dir={root / 'sweep'}",
            f"cache.dir={root / 'cache'}",
        ],
        cwd=root,
        env={**os.environ, "KILL_JOURNAL": str(journal)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
    )
    attempt = Attempt(kill, proc.returncode, proc.stdout)
    for line in journal.read_text().splitlines() if journal.exists() else []:
        word, *rest = line.split()
        if word == "event":
            attempt.events.append(Event(int(rest[0]), rest[1], rest[2], rest[3]))
        elif word == "epoch_start":
            attempt.epochs.append(" ".join(rest))
        elif word == "unit_start":
            attempt.units.append(" ".join(rest))
        elif word == "killed":
            attempt.killed = True
    return attempt


def stable(value, root: str):
    """A record without its volatile fields and fields that hold paths."""
    return {
        k: v
        for k, v in value.items()
        if k not in VOLATILE and root not in json.dumps(v, default=str)
    }


def final_state(root: Path, base: str) -> dict:
    """Per cell: the records (stable fields), DONE's count, the outcomes, the epoch and weights of
    each checkpoint; the cached weights."""
    state = {}
    for cell in CELLS:
        out = root / "sweep" / cell
        lines = (out / "records.jsonl").read_text().splitlines() if out.is_dir() else []
        done = json.loads((out / "DONE.json").read_text()) if (out / "DONE.json").exists() else {}
        outcomes = {}
        if (out / "outcomes.npz").exists():
            with np.load(out / "outcomes.npz", allow_pickle=False) as data:
                outcomes = {name: data[name].tolist() for name in sorted(data.files)}
        checkpoints = {}
        for path in sorted((out / "checkpoints").glob("*.ckpt")):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
            checkpoints[path.name] = (checkpoint["epoch"], checkpoint["state_dict"])
        state[cell] = {
            "checkpoints": checkpoints,
            "records": [stable(json.loads(line), base) for line in lines],
            "n_lines": len(lines),
            "done_n_records": done.get("n_records"),
            "outcomes": outcomes,
        }
    weights = {}
    for path in sorted((root / "cache").glob("*.pt")):
        cached = torch.load(path, map_location="cpu", weights_only=True)
        weights[path.name] = cached["state_dict"]
    state["cache"] = weights
    return state


def kill_spec(clean: Attempt, kind: str, cell: int, which: int) -> tuple[str, Event]:
    matches = [e for e in clean.events if e.kind == kind and e.cell == CELLS[cell]]
    event = matches[which]
    return str(event.n), event


def expected_after(attempts: list[Attempt], i: int) -> list[tuple[str, bool]]:
    """What the attempt after the killed attempt ``i`` must print ((pattern, present?)), from
    where the kill fell."""
    killed = attempts[i]
    last = killed.events[-1]
    cell, kind = last.cell, last.kind
    mine = [e for e in killed.events if e.cell == cell]
    if cell not in DEFENSE:
        return [("is complete", True)]
    defense = DEFENSE[cell]
    if kind in TRAINING:
        starts = [k for k, e in enumerate(mine) if e.kind == "epoch_start"]
        if not starts:
            return []
        epoch = int(mine[starts[-1]].detail)
        saved = epoch + any(e.kind == "write_ckpt_last_after" for e in mine[starts[-1] :])
        if saved == 0:
            return [(f"resuming training of {defense} at", False)]
        if saved < MAX_EPOCHS:
            return [(f"resuming training of {defense} at epoch {saved + 1} of {MAX_EPOCHS}", True)]
        return [(f"training of {defense} had finished", True)]
    if kind == "write_done_after":
        return [(f"{cell} is complete", True)]
    if kind == "write_cache_after" or kind in EVALUATION:
        # the cache was written before the evaluation began
        expect = [(f"resuming training of {defense}", False), ("reusing trained weights", True)]
        if kind in EVALUATION[:4]:
            scope = last.detail.rsplit("/", 1)[0]
            stored = {
                e.detail
                for a in attempts[: i + 1]
                for e in a.events
                if e.cell == cell and e.kind == "write_unit_after" and e.detail.startswith(scope)
            }
            if stored:
                expect.append((f"resumes: {len(stored)} of", True))
        return expect
    return []


def run_scenario(base: Path, number: int, first: str, later: list[str]):
    root = base / f"kill{number:02d}"
    root.mkdir()
    attempts = [run_attempt(root, first, "0")]
    for k, spec in enumerate(later):
        if not attempts[-1].killed:
            break
        attempts.append(run_attempt(root, spec, str(k + 1)))
    for k in range(2):
        if attempts[-1].returncode == 0:
            break
        attempts.append(run_attempt(root, "0", f"rerun{k}"))
    return root, attempts


def check_scenario(
    name: str, root: Path, attempts: list[Attempt], clean: Attempt, clean_state: dict, base: str
) -> list[str]:
    problems = []
    kills = [a for a in attempts if a.kill != "0"]
    for a in kills:
        if not a.killed or a.returncode != -9:
            problems.append(f"kill {a.kill} did not happen (exit {a.returncode})")
    if attempts[-1].returncode != 0:
        tail = attempts[-1].stdout[-3000:]
        return [*problems, f"the last rerun exited {attempts[-1].returncode}:\n{tail}"]
    # (a)
    state = final_state(root, base)
    for cell in CELLS:
        got, want = state[cell], clean_state[cell]
        if got["n_lines"] != want["n_lines"] or got["done_n_records"] != got["n_lines"]:
            problems.append(
                f"{cell}: {got['n_lines']} record lines, DONE says {got['done_n_records']}, "
                f"uninterrupted {want['n_lines']}"
            )
        if got["records"] != want["records"]:
            diff = [
                (k, r.get(k), w.get(k))
                for r, w in zip(got["records"], want["records"], strict=False)
                for k in sorted(set(r) | set(w))
                if r.get(k) != w.get(k)
            ]
            problems.append(f"{cell}: records differ from the uninterrupted sweep's: {diff[:4]}")
        if got["outcomes"] != want["outcomes"]:
            problems.append(f"{cell}: per-example outcomes differ")
        if sorted(got["checkpoints"]) != sorted(want["checkpoints"]):
            problems.append(f"{cell}: checkpoints {sorted(got['checkpoints'])}")
        for name, (epoch, weights) in got["checkpoints"].items():
            ref_epoch, ref = want["checkpoints"].get(name, (None, {}))
            if epoch != ref_epoch or any(not torch.equal(weights[k], ref[k]) for k in ref):
                problems.append(
                    f"{cell}: checkpoints/{name} (epoch {epoch}) differs from the uninterrupted "
                    f"run's (epoch {ref_epoch})"
                )
    if sorted(state["cache"]) != sorted(clean_state["cache"]):
        problems.append(f"cache entries {sorted(state['cache'])}")
    else:
        for entry, weights in state["cache"].items():
            ref = clean_state["cache"][entry]
            if any(not torch.equal(weights[k], ref[k]) for k in ref):
                problems.append(f"cached weights {entry} differ from the uninterrupted run's")
    # (b)
    temps = [
        str(p.relative_to(root)) for d in ("sweep", "cache") for p in (root / d).rglob("*.tmp")
    ]
    if temps:
        problems.append(f"temp files left: {temps}")
    # (c)
    epochs = sum(len(a.epochs) for a in attempts)
    units = sum(len(a.units) for a in attempts)
    if epochs > len(clean.epochs) + len(kills):
        problems.append(
            f"{epochs} epochs begun over {len(attempts)} attempts, uninterrupted "
            f"{len(clean.epochs)}, kills {len(kills)}: {[a.epochs for a in attempts]}"
        )
    if units > len(clean.units) + len(kills):
        problems.append(
            f"{units} evaluation units begun over {len(attempts)} attempts, uninterrupted "
            f"{len(clean.units)}, kills {len(kills)}: {[len(a.units) for a in attempts]}"
        )
    # (d)
    for i, a in enumerate(attempts[:-1]):
        if not a.killed:
            continue
        for pattern, present in expected_after(attempts, i):
            if (pattern in attempts[i + 1].stdout) != present:
                problems.append(
                    f"after the kill at {a.events[-1]}: the next attempt "
                    f"{'does not say' if present else 'says'} {pattern!r}"
                )
    return [f"{name}: {p}" for p in problems]


def leftover_units(root: Path) -> list[str]:
    """Complete cells that still hold evaluation units (the marker was written, the units not yet
    removed when the process died)."""
    return [
        str(out.relative_to(root))
        for out in sorted((root / "sweep").glob("*"))
        if (out / "DONE.json").exists() and (out / "eval_state").exists()
    ]


@pytest.mark.slow
def test_sweep_killed_anywhere_ends_as_the_uninterrupted_sweep(tmp_path):
    start = time.perf_counter()
    cpu_start = resource.getrusage(resource.RUSAGE_CHILDREN)
    (tmp_path / "clean").mkdir()
    clean = run_attempt(tmp_path / "clean", "0", "0")
    assert clean.returncode == 0, clean.stdout[-3000:]
    base = str(tmp_path)
    clean_state = final_state(tmp_path / "clean", base)
    for cell in CELLS:
        assert clean_state[cell]["n_lines"] == clean_state[cell]["done_n_records"] > 0
    assert len(clean.epochs) == MAX_EPOCHS * len(CELLS)
    assert clean.events[-1].kind == "sweep_end"
    kinds = {e.kind for e in clean.events}

    plans = []
    for number, ((kind, cell, which), later) in enumerate(SCENARIOS):
        first, event = kill_spec(clean, kind, cell, which)
        plans.append((f"kill {number} at {event}, then {later}", number, first, later))
    covered = {kind for (kind, _, _), _ in SCENARIOS}
    covered |= {spec.split("@")[0] for _, later in SCENARIOS for spec in later}
    assert kinds <= covered, f"event kinds no scenario kills at: {kinds - covered}"

    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:  # the longest (most kills) first
        futures = [
            (name, pool.submit(run_scenario, tmp_path, number, first, later))
            for name, number, first, later in sorted(plans, key=lambda p: -len(p[3]))
        ]
        results = [(name, *future.result()) for name, future in futures]

    problems, leftovers = [], []
    for name, root, attempts in results:
        extra_epochs = sum(len(a.epochs) for a in attempts) - len(clean.epochs)
        extra_units = sum(len(a.units) for a in attempts) - len(clean.units)
        print(
            f"{name}: {len(attempts)} attempts, {extra_epochs} epochs and {extra_units} units "
            "begun again"
        )
        problems += check_scenario(name, root, attempts, clean, clean_state, base)
        leftovers += [f"{root.name}/{cell}" for cell in leftover_units(root)]
    n_kills = sum(1 for _, _, attempts in results for a in attempts if a.kill != "0")
    elapsed = time.perf_counter() - start
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = cpu.ru_utime + cpu.ru_stime - cpu_start.ru_utime - cpu_start.ru_stime
    print(
        f"kill anywhere: {len(clean.events)} events, {len(results)} scenarios, {n_kills} kills "
        f"(first kills at {sorted(int(first) for _, _, first, _ in plans)}), "
        f"{elapsed:.0f} s wall, {cpu_s:.0f} s CPU in the sweeps"
    )
    assert not leftovers, f"complete cells still holding eval_state: {leftovers}"
    assert not problems, "\n".join(problems)
