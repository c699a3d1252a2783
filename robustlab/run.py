"""The Hydra entry point: one cell of the pipeline in ../shared/DESIGN.md.

compose cfg -> validate -> seed -> datamodule -> net -> defense (train) or checkpoint (eval)
-> predictor (inference wrapper) -> robust evaluation -> records -> table.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint

from robustlab.attacks.callback import RobustEvaluation, split_tensors
from robustlab.attacks.evaluator import Evaluator
from robustlab.attacks.specs import resolve_attack_specs
from robustlab.cache import (
    checkpoint_path,
    is_worker_rank,
    training_lock,
)
from robustlab.config import config_hash
from robustlab.devices import pin_gpu
from robustlab.loggers import build_loggers
from robustlab.models.loading import load_weights
from robustlab.paths import CONF_DIR
from robustlab.results.versions import library_versions
from robustlab.resume import completed_records, discard_partial, mark_complete
from robustlab.training import (
    build_defense,
    dependency_config,
    ensure_trained,
    fit,
    load_cached,
    same_budget_spec,
)
from robustlab.validate import (
    ConfigError,
    validate_attack_specs,
    validate_config,
    validate_defenses,
)


def inference_configs(cfg: DictConfig) -> list[dict]:
    """The primary ``inference`` config plus each of ``eval.inferences`` (by name), deduplicated."""
    primary = OmegaConf.to_container(cfg.inference, resolve=True)
    configs = {primary["name"]: primary}
    valid = sorted(p.stem for p in (CONF_DIR / "inference").glob("*.yaml"))
    for name in cfg.eval.get("inferences") or []:
        if name not in valid:
            raise ConfigError(f"eval.inferences: {name!r} not found; valid inferences: {valid}")
        root = OmegaConf.create({"dataset": cfg.dataset, "model": cfg.model})
        root.inference = OmegaConf.load(CONF_DIR / "inference" / f"{name}.yaml")
        configs.setdefault(name, OmegaConf.to_container(root.inference, resolve=True))
    return list(configs.values())


def build_evaluator(cfg: DictConfig, specs, inferences, datamodule, loggers) -> Evaluator:
    out = Path(cfg.output_dir)
    meta = {
        "run_id": out.name,
        "config_hash": config_hash(cfg),
        "dataset": cfg.dataset.name,
        "model": cfg.model.name,
        "defense": cfg.defense.name,
        "seed": int(cfg.seed),
        "versions": library_versions(),
    }
    return Evaluator(
        specs=specs,
        inferences=inferences,
        meta=meta,
        num_classes=int(cfg.dataset.num_classes),
        seed=int(cfg.seed),
        output_dir=out,
        datamodule=datamodule,
        n_examples=cfg.eval.n_examples,
        batch_size=int(cfg.eval.batch_size),
        threat_models=cfg.eval.threat_models,
        eot_draws=int(cfg.eval.eot_draws),
        heavy_on_randomized=bool(cfg.eval.heavy_attacks_on_randomized),
        natural_shifts=cfg.eval.get("natural_shifts"),
        loggers=loggers,
    )


@dataclass
class Prepared:
    """A validated cell: attack specs, inference configs, datamodule and an untrained net."""

    specs: list[dict]
    inferences: list[dict]
    datamodule: pl.LightningDataModule
    net: torch.nn.Module


def prepare(cfg: DictConfig) -> Prepared:
    """Every check that can fail on bad input, before anything expensive starts."""
    validate_config(cfg)
    validate_defenses(cfg)
    if cfg.get("torch_threads"):
        torch.set_num_threads(int(cfg.torch_threads))
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    specs = resolve_attack_specs(cfg)
    validate_attack_specs(specs)
    inferences = inference_configs(cfg)
    datamodule = instantiate(cfg.dataset)
    datamodule.check_files()
    net = instantiate(cfg.model)
    if cfg.mode == "eval":
        load_weights(net, cfg.ckpt)
    return Prepared(specs, inferences, datamodule, net)


def run(cfg: DictConfig) -> list[dict]:
    """Run one cell and return its records."""
    return execute(cfg, prepare(cfg))


def execute(cfg: DictConfig, prepared: Prepared) -> list[dict]:
    """Train (unless cached or mode=eval) and evaluate an already validated cell."""
    out = Path(cfg.output_dir)
    cell_hash = config_hash(cfg)
    done = completed_records(out, cell_hash)
    if done is not None:
        print(f"robustlab: {out} is complete ({len(done)} records); skipping")
        return done
    if not is_worker_rank():
        discard_partial(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "resolved_config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    loggers = build_loggers(cfg.logger)
    datamodule, net = prepared.datamodule, prepared.net
    evaluator = build_evaluator(cfg, prepared.specs, prepared.inferences, datamodule, loggers)

    if cfg.mode == "eval":
        records = evaluate_loaded(cfg, evaluator, datamodule, net)
    else:
        records = train_or_reuse(cfg, evaluator, datamodule, net, loggers)
    if records and not is_worker_rank():
        records += evaluate_baselines(cfg, evaluator, datamodule)
        mark_complete(out, cell_hash, len(records))
    return records


def evaluate_loaded(
    cfg: DictConfig, evaluator: Evaluator, datamodule, net, defense=None, meta=None
) -> list[dict]:
    """Evaluate weights already loaded, in this process, on the trainer's device kind."""
    accelerator = str(cfg.trainer.get("accelerator", "cpu"))
    if accelerator in ("gpu", "cuda") and torch.cuda.is_available():
        net = net.cuda()
        defense = defense.cuda() if defense is not None else None
    x, y = split_tensors(datamodule, "test")
    return evaluator.evaluate(net, x, y, defense=defense, meta=meta)


def evaluate_baselines(cfg: DictConfig, evaluator: Evaluator, datamodule) -> list[dict]:
    """``eval.compare_with``: the same cell with another defense, trained (or found) through the
    cache with the cell's budget (``same_budget_spec``) and evaluated with the same attacks, so
    the table shows the method beside its baseline."""
    records = []
    for name in cfg.eval.get("compare_with") or []:
        sub = dependency_config(cfg, same_budget_spec(cfg, name))
        baseline = build_defense(sub, instantiate(sub.model))
        load_cached(baseline, ensure_trained(sub))
        meta = {"defense": name, "config_hash": config_hash(sub)}
        records += evaluate_loaded(sub, evaluator, datamodule, baseline.net, baseline, meta)
    return records


def checkpoint_callbacks(dirpath: Path, monitor: str) -> list[ModelCheckpoint]:
    """``best.ckpt`` (highest ``monitor``) and ``last.ckpt`` (every epoch: the evaluated weights;
    Lightning's own ``save_last`` only writes when the monitored metric improves)."""
    best = ModelCheckpoint(dirpath=dirpath, filename="best", monitor=monitor, mode="max")
    last = ModelCheckpoint(
        dirpath=dirpath, filename="last", monitor=None, save_top_k=1, enable_version_counter=False
    )
    return [best, last]


def train_or_reuse(cfg: DictConfig, evaluator: Evaluator, datamodule, net, loggers) -> list[dict]:
    """Reload the cached defense of this training config, or train it once under a lock."""
    use_cache = bool(cfg.cache.enabled) and not cfg.trainer.get("fast_dev_run")
    cached = checkpoint_path(cfg) if use_cache else None
    lock = training_lock(cached) if cached is not None else None
    if lock is not None:
        lock.acquire()
    try:
        defense = build_defense(cfg, net)
        if cached is not None and cached.is_file():
            lock.release()
            print(f"robustlab: reusing trained weights {cached}")
            load_cached(defense, cached)
            return evaluate_loaded(cfg, evaluator, datamodule, defense.net, defense)
        checkpoints = checkpoint_callbacks(Path(cfg.output_dir) / "checkpoints", defense.monitor)
        evaluation = RobustEvaluation(
            evaluator, int(cfg.eval.every_n_val_epochs), int(cfg.eval.val_subset)
        )
        trainer = fit(
            cfg,
            defense,
            datamodule,
            loggers=loggers,
            callbacks=[*checkpoints, evaluation],
            cached=cached,
            lock=lock,
        )
        return evaluation.records if trainer.is_global_zero else []
    finally:
        if lock is not None and lock.is_locked:
            lock.release()


def fail(err: Exception) -> None:
    """Bad input: one line on stderr, exit status 2, no traceback."""
    print(f"robustlab: error: {str(err).splitlines()[0]}", file=sys.stderr)
    sys.exit(2)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    runtime = HydraConfig.get()
    job_num = runtime.job.num if runtime.mode == RunMode.MULTIRUN else None
    pin_gpu(cfg, job_num, torch.cuda.device_count())
    try:
        prepared = prepare(cfg)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        fail(err)
    execute(cfg, prepared)


def main() -> None:
    _hydra_main()
