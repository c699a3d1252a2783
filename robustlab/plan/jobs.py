"""The typed plan of one cell: what to train (through the cache) and how to evaluate it.

Built once from the composed config by ``robustlab.plan.build.build_plan``, after every check of
the input has passed; ``robustlab.run`` executes it top to bottom.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from robustlab.attacks.kinds import AttackSpec


@dataclass(frozen=True, eq=False)
class TrainingJob:
    """A defense to train once through the training cache, or to find there.

    ``config`` is the job's whole cell config (the cell's own, or the cell's with the defense
    replaced for a dependency or a baseline); ``dependencies`` are trained first and handed to the
    defense as ``dependencies={key: checkpoint path}``.
    """

    defense: str
    config: DictConfig
    dependencies: tuple[tuple[str, TrainingJob], ...] = ()


@dataclass(frozen=True)
class EvaluationJob:
    """Attacks x inference wrappers x threat models on the first ``n_examples`` test points."""

    attacks: tuple[AttackSpec, ...]
    inferences: tuple[dict[str, Any], ...]  # wrapper configs: _target_, name and parameters
    threat_models: str | tuple[str, ...]  # "auto" or a subset of the threat models
    n_examples: int | None
    batch_size: int
    eot_draws: int
    score_draws: int
    transfer_floor: bool
    heavy_on_randomized: bool
    natural_shifts: tuple[int, ...] | None
    every_n_val_epochs: int
    val_subset: int
    grad_check_points: int | None = None  # the gradient check on the first N points (None: all)
    attack_precision: str = "fp32"  # precision.attack: fp32 | bf16 (autocast while crafting)
    channels_last: bool | str = "auto"  # precision.channels_last: the evaluation's memory format


@dataclass(frozen=True, eq=False)
class CellPlan:
    """One cell: train (``mode=train``) or load ``ckpt`` (``mode=eval``), then evaluate; the
    ``baselines`` (``eval.compare_with``) are trained with the cell's budget and evaluated beside."""

    mode: str
    seed: int
    torch_threads: int | None
    output_dir: Path
    cell_hash: str
    ckpt: Path | None
    cell: TrainingJob
    baselines: tuple[TrainingJob, ...]
    evaluation: EvaluationJob
    config: DictConfig
    # the defense the records carry: cfg.defense.name when training; with mode=eval, the one the
    # checkpoint was trained with, else the one named by defense=, else "external"
    recorded_defense: str
    # mode=eval: the training flags the checkpoint records (e.g. catastrophic_overfitting)
    recorded_training_flags: tuple[str, ...] = ()
