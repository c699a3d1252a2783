"""The evaluation of one cell: test split -> per-example flags (sharded over ranks) -> records.

Used by the Lightning callback after fit and by eval-only mode; rank 0 writes and prints.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from robustlab.attacks.kinds import AttackSpec
from robustlab.attacks.rng import attack_rng
from robustlab.evaluation.engine import ShardResult, evaluate_shard
from robustlab.evaluation.natural import shift_records
from robustlab.evaluation.summary import build_records, merge_shards
from robustlab.evaluation.units import STATE_DIR, fingerprint
from robustlab.inference.build import build_predictor
from robustlab.modes import eval_mode
from robustlab.precision import evaluates_channels_last, evaluation_layout
from robustlab.results.outcomes import OUTCOMES_FILE, Outcomes, append_outcomes, split
from robustlab.results.record import now_iso
from robustlab.results.side_by_side import side_by_side_table
from robustlab.results.store import append_records
from robustlab.results.table import format_cell_table, format_flags_banner

RECORDS_FILE = "records.jsonl"


def training_mismatch(predictor, defense: str, speak: bool) -> list[str]:
    """``["inference_expects_other_training"]`` when the wrapper is designed for nets trained by
    other defenses than ``defense`` (said on stderr); an ``external`` net is said to be unchecked."""
    expected = getattr(predictor, "expects_training", ())
    if not expected or defense in expected:
        return []
    wanted = " or ".join(expected)
    if defense == "external":
        if speak:
            print(
                f"robustlab: note: inference={predictor.name} assumes a net trained with {wanted}; "
                "the checkpoint does not say how it was trained",
                file=sys.stderr,
            )
        return []
    if speak:
        print(
            f"robustlab: warning: inference={predictor.name} assumes a net trained with {wanted}, "
            f"this one was trained with defense={defense} (flag inference_expects_other_training)",
            file=sys.stderr,
        )
    return ["inference_expects_other_training"]


def test_points(x: torch.Tensor, y: torch.Tensor) -> str:
    """A fingerprint of the evaluated inputs and labels: records pair only on equal ones."""
    digest = hashlib.sha256(x.detach().cpu().contiguous().numpy().tobytes())
    digest.update(y.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def gather_shards(shard: ShardResult) -> list[ShardResult]:
    """All ranks' shards on every rank (identity when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [shard]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, shard)
    return out


@dataclass
class Evaluator:
    """Everything needed to evaluate a trained net, except the net.

    ``inferences`` are inference-wrapper configs (``_target_`` + params); each is built around the
    same trained net and evaluated with every attack, its records carrying its own ``inference``.
    """

    specs: list[AttackSpec]
    inferences: list[dict[str, Any]]
    meta: dict[str, Any]
    num_classes: int
    seed: int
    output_dir: Path
    datamodule: Any = None
    n_examples: int | None = None
    batch_size: int = 256
    threat_models: Any = "auto"
    eot_draws: int = 20
    score_draws: int = 10
    transfer_floor: bool = True
    heavy_on_randomized: bool = True
    natural_shifts: list[int] | None = None
    progress: bool = True
    loggers: list = field(default_factory=list)
    resumable: bool = True  # keep finished units under output_dir/eval_state (units.py)
    attack_precision: str = "fp32"  # precision.attack: bf16 crafts under autocast (precision.py)
    channels_last: bool | str = "auto"  # precision.channels_last: auto is channels_last on a CPU
    grad_check_points: int | None = None  # eval.grad_check_points: the gradient check's points

    def evaluate(
        self,
        net: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        rank: int = 0,
        world_size: int = 1,
        write: bool = True,
        defense: nn.Module | None = None,
        meta: dict[str, Any] | None = None,
        training_flags: tuple[str, ...] = (),
    ) -> list[dict[str, Any]]:
        """Evaluate (x, y) with this rank's shard; returns the records (on every rank).
        ``training_flags`` (e.g. read from a checkpoint) join those of ``defense``."""
        if self.n_examples is not None:
            x, y = x[: self.n_examples], y[: self.n_examples]
        device = next(net.parameters()).device
        indices = torch.arange(len(x))[rank::world_size]
        points = test_points(x, y)
        majority = int(torch.bincount(y.long().cpu()).max()) / len(y)
        records = []
        layout = evaluation_layout(net, evaluates_channels_last(self.channels_last, device))
        with layout as memory_format:
            for inference_cfg in self.inferences:
                predictor = build_predictor(inference_cfg, net, self.datamodule, defense).to(device)
                started = now_iso()
                shard = evaluate_shard(
                    predictor,
                    x[indices].to(device),
                    y[indices].to(device),
                    indices,
                    self.specs,
                    num_classes=self.num_classes,
                    seed=self.seed + rank,
                    threat_models=self.threat_models,
                    eot_draws=self.eot_draws,
                    score_draws=self.score_draws,
                    keep_transfer=self.transfer_floor,
                    batch_size=self.batch_size,
                    progress=self.progress and rank == 0,
                    heavy_on_randomized=self.heavy_on_randomized,
                    attack_precision=self.attack_precision,
                    grad_check_points=self.grad_check_points,
                    state_dir=self._state_dir(
                        inference_cfg,
                        {**self.meta, **(meta or {})},
                        rank,
                        world_size,
                        memory_format,
                    ),  # fmt: skip
                )
                cell_meta = {
                    **self.meta,
                    **(meta or {}),
                    "inference": predictor.name,
                    "test_points": points,
                }
                mismatch = training_mismatch(predictor, cell_meta["defense"], rank == 0)
                ours = build_records(
                    merge_shards(gather_shards(shard)),
                    {**cell_meta, "started": started},
                    randomized=predictor.randomized,
                    needs_adaptive=predictor.needs_adaptive_tools(),
                    majority_class_acc=majority,
                )
                if self.natural_shifts and rank == 0:
                    ours += self._shift_records(
                        predictor, net, x.to(device), y.to(device), cell_meta
                    )
                flags = [*getattr(defense, "training_flags", ()), *training_flags, *mismatch]
                for r in ours:
                    r["memory_format"] = memory_format
                    for flag in flags:
                        if flag not in r["sanity_flags"]:
                            r["sanity_flags"].append(flag)
                pass_rate = getattr(predictor, "benign_pass_rate", None)
                if pass_rate is not None:
                    with torch.no_grad():
                        rate = pass_rate(x.to(device))
                    for r in ours:
                        r["benign_pass_rate"] = rate
                records += ours
        outcomes = split(records)
        if write and rank == 0:
            self.publish(records, outcomes)
        return records

    def _state_dir(
        self,
        inference_cfg: dict[str, Any],
        meta: dict[str, Any],
        rank: int,
        world_size: int,
        memory_format: str = "contiguous",
    ) -> Path | None:
        """Where this wrapper's finished units are kept (None: not resumable): scoped by the
        wrapper's config and the evaluated config's hash (data split, attacks, eval settings),
        and the net's memory format when channels_last (not in the hash, but in the floats),
        beside what the engine adds (weights, points, seed, draws)."""
        if not self.resumable:
            return None
        identity = {k: meta.get(k) for k in ("config_hash", "defense", "versions")}
        layout = () if memory_format == "contiguous" else (memory_format,)
        scope = fingerprint(dict(inference_cfg), identity, rank, world_size, *layout)
        return self.output_dir / STATE_DIR / scope

    def _shift_records(self, predictor, net, x, y, meta) -> list[dict[str, Any]]:
        """Natural shifts (darker, sharper, noise) at ``natural_shifts`` severities, reported like
        attacks (threat model ``natural``); rank 0 evaluates the whole split, in a generator
        forked and seeded from the cell's seed (reruns score the same draws)."""
        with attack_rng(self.seed), eval_mode(predictor), torch.no_grad():
            records = shift_records(
                predictor,
                net,
                x,
                y,
                meta,
                list(self.natural_shifts),
                None,
                self.batch_size,
                self.score_draws,
            )
        return [r for r in records if r["inference"] == predictor.name]

    def publish(self, records: list[dict[str, Any]], outcomes: dict[str, Outcomes]) -> None:
        """Append the records and their per-example outcomes atomically, log them, print one
        table per inference wrapper."""
        append_records(self.output_dir / RECORDS_FILE, records)
        append_outcomes(self.output_dir / OUTCOMES_FILE, outcomes)
        self._log(records)
        for inference in dict.fromkeys(r["inference"] for r in records):
            print(format_cell_table([r for r in records if r["inference"] == inference]))
        bare = [r for r in records if r["inference"] == "plain"]
        for inference in dict.fromkeys(r["inference"] for r in records):
            if bare and inference != "plain":
                mine = [r for r in records if r["inference"] == inference]
                print(f"{inference} beside the bare classifier (plain):")
                print(side_by_side_table(mine, bare, mine[0].get("benign_pass_rate")))
        banner = format_flags_banner(records)
        if banner:
            print(banner)

    def _log(self, records: list[dict[str, Any]]) -> None:
        metrics = {"test/clean_acc": records[0]["clean_acc"]} if records else {}
        for r in records:
            key = (
                f"robust/{r['defense']}+{r['inference']}/{r['attack']}/{r['threat_model']}/"
                f"{r['norm']}_{r['eps']:g}"
            )
            metrics[key] = r["robust_acc"]
        for logger in self.loggers:
            logger.log_metrics(metrics)
            log_records = getattr(logger, "log_records", None)  # W&B: every column, the flags
            log_table = getattr(logger, "log_table", None)
            if log_records is not None:
                log_records(records)
            elif log_table is not None:
                columns = ["attack", "threat_model", "norm", "eps", "clean_acc", "robust_acc"]
                log_table(
                    "records", columns=columns, data=[[r[c] for c in columns] for r in records]
                )
            logger.save()
