"""The Hydra entry point: one cell of the pipeline in ../shared/DESIGN.md.

compose cfg -> plan (every check, before any data is read) -> train through the cache, or load
``ckpt`` -> evaluate (attacks x inference wrappers x threat models) -> records -> table; then the
``eval.compare_with`` baselines, trained with the cell's budget, beside it.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from filelock import FileLock
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from robustlab.cache import (
    checkpoint_path,
    is_worker_rank,
    remove_stale_temp_files,
    training_lock,
)
from robustlab.config import config_hash, seed_group
from robustlab.console import quiet_third_party
from robustlab.devices import pin_gpu
from robustlab.evaluation.callback import RobustEvaluation, split_tensors
from robustlab.evaluation.evaluator import Evaluator
from robustlab.loggers import build_loggers
from robustlab.models.loading import load_weights
from robustlab.paths import CONF_SEARCH_PATH
from robustlab.plan import CellPlan, ConfigError, TrainingJob, build_plan
from robustlab.plan.checks import check_seeds
from robustlab.plugins import add_plugins_from_environment
from robustlab.precision import build_net
from robustlab.results.compare import summary
from robustlab.results.report import dedupe
from robustlab.results.store import RECORDS_FILE, read_records
from robustlab.results.versions import library_versions
from robustlab.resume import (
    CELL_LOCK,
    completed_records,
    discard_partial,
    drop_units,
    mark_complete,
)
from robustlab.signals import exit_on_termination
from robustlab.spellings import check_spellings
from robustlab.training import (
    build_defense,
    drop_foreign_checkpoints,
    ensure_trained,
    fit,
    load_cached,
    reuse_cached,
)


def run(cfg: DictConfig) -> list[dict]:
    """Plan and run one cell, or one per seed of ``seeds``; return the records."""
    return execute_all(cfg, plan_all(cfg))


def plan_all(cfg: DictConfig) -> list[CellPlan]:
    """The plan of the cell, or of each seed's cell (``output_dir/seed_S``), all checked before
    any runs."""
    seeds = check_seeds(cfg)
    if not seeds:
        return [build_plan(cfg)]
    plans = []
    for seed in seeds:
        one = copy.deepcopy(cfg)
        with open_dict(one):
            one.seed, one.seeds = int(seed), None
            one.output_dir = str(Path(cfg.output_dir) / f"seed_{seed}")
        plans.append(build_plan(one))
    return plans


def plan_records(out: Path) -> list[dict]:
    """The records a cell wrote (tagged with ``_source`` for their per-example outcomes); not
    those of other runs elsewhere under the same root."""
    path = out / RECORDS_FILE
    return [{**r, "_source": str(path)} for r in read_records(path)] if path.exists() else []


def execute_all(cfg: DictConfig, plans: list[CellPlan]) -> list[dict]:
    """Execute the plans; after several seeds or with ``eval.compare_with``, print the spread over
    seeds and the paired comparisons with each baseline (read back from the run directory)."""
    records = [r for plan in plans for r in execute(plan)]
    baselines = list(cfg.eval.get("compare_with") or [])
    if (len(plans) > 1 or baselines) and not is_worker_rank():
        written = [r for plan in plans for r in plan_records(plan.output_dir)]
        text = summary(dedupe(written)[0], baselines)
        if text:
            print(text)
    return records


def execute(plan: CellPlan) -> list[dict]:
    """Run a planned cell under its directory's lock: a second run into the same directory
    waits, then finds the cell complete instead of writing its records again."""
    out = plan.output_dir
    out.mkdir(parents=True, exist_ok=True)
    if is_worker_rank():  # DDP's extra processes follow rank 0, which holds the lock
        return execute_unlocked(plan)
    with FileLock(str(out / CELL_LOCK)):
        return execute_unlocked(plan)


def execute_unlocked(plan: CellPlan) -> list[dict]:
    """Train (unless cached or mode=eval) and evaluate a planned cell, then its baselines."""
    out = plan.output_dir
    done = completed_records(out, plan.cell_hash)
    if done is not None:
        print(f"robustlab: {out} is complete ({len(done)} records); skipping")
        drop_units(out)
        return done
    if not is_worker_rank():
        discard_partial(out)
    (out / "resolved_config.yaml").write_text(OmegaConf.to_yaml(plan.config, resolve=True))
    if plan.torch_threads:
        torch.set_num_threads(plan.torch_threads)
    # the net is initialised from the seed, and training starts from the seed again
    pl.seed_everything(plan.seed, workers=True, verbose=False)
    datamodule = instantiate(plan.config.dataset)
    net = build_net(plan.config)
    pl.seed_everything(plan.seed, workers=True, verbose=False)
    loggers = build_loggers(plan.config.logger)
    evaluator = build_evaluator(plan, datamodule, loggers)
    if plan.mode == "eval":
        print(f"robustlab: evaluating {plan.ckpt} ({plan.recorded_defense})")
        load_weights(net, plan.ckpt)
        records = evaluate_loaded(
            plan.config, evaluator, datamodule, net, flags=plan.recorded_training_flags
        )
    else:
        records = train_or_reuse(plan.cell, net, evaluator, datamodule, loggers)
    if records and not is_worker_rank():
        for job in plan.baselines:
            records += evaluate_baseline(job, evaluator, datamodule)
        mark_complete(out, plan.cell_hash, len(records))
    return records


def build_evaluator(plan: CellPlan, datamodule, loggers) -> Evaluator:
    cfg, ev = plan.config, plan.evaluation
    meta = {
        "run_id": plan.output_dir.name,
        "config_hash": plan.cell_hash,
        "dataset": cfg.dataset.name,
        "model": cfg.model.name,
        "defense": plan.recorded_defense,
        "seed": plan.seed,
        "seed_group": seed_group(cfg),
        "versions": library_versions(),
    }
    return Evaluator(
        specs=list(ev.attacks),
        inferences=list(ev.inferences),
        meta=meta,
        num_classes=int(cfg.dataset.num_classes),
        seed=plan.seed,
        output_dir=plan.output_dir,
        datamodule=datamodule,
        n_examples=ev.n_examples,
        batch_size=ev.batch_size,
        threat_models=ev.threat_models,
        eot_draws=ev.eot_draws,
        score_draws=ev.score_draws,
        transfer_floor=ev.transfer_floor,
        heavy_on_randomized=ev.heavy_on_randomized,
        natural_shifts=list(ev.natural_shifts) if ev.natural_shifts else None,
        loggers=loggers,
        attack_precision=ev.attack_precision,
        channels_last=ev.channels_last,
        grad_check_points=ev.grad_check_points,
    )


def evaluate_loaded(
    cfg: DictConfig, evaluator: Evaluator, datamodule, net, defense=None, meta=None, flags=()
) -> list[dict]:
    """Evaluate weights already loaded, in this process, on the trainer's device kind."""
    accelerator = str(cfg.trainer.get("accelerator", "cpu"))
    if accelerator in ("gpu", "cuda") and torch.cuda.is_available():
        net = net.cuda()
        defense = defense.cuda() if defense is not None else None
    x, y = split_tensors(datamodule, "test")
    return evaluator.evaluate(net, x, y, defense=defense, meta=meta, training_flags=flags)


def evaluate_baseline(job: TrainingJob, evaluator: Evaluator, datamodule) -> list[dict]:
    """A ``eval.compare_with`` baseline: trained (or found) through the cache with the cell's
    budget, evaluated with the same attacks and wrappers, recorded under its own defense name."""
    baseline = build_defense(job, build_net(job.config))
    load_cached(baseline, ensure_trained(job))
    meta = {
        "defense": job.defense,
        "config_hash": config_hash(job.config),
        "seed_group": seed_group(job.config),
        # the cell it was trained beside (its budget): reports keep it apart from a cell of its own
        "baseline_of": evaluator.meta["defense"],
    }
    return evaluate_loaded(job.config, evaluator, datamodule, baseline.net, baseline, meta)


def train_or_reuse(
    job: TrainingJob, net: torch.nn.Module, evaluator: Evaluator, datamodule, loggers
) -> list[dict]:
    """Reload the cached defense of this training config, or train it once under a lock (from
    where a killed run stopped)."""
    cfg = job.config
    use_cache = bool(cfg.cache.enabled) and not cfg.trainer.get("fast_dev_run")
    cached = checkpoint_path(cfg) if use_cache else None
    lock = training_lock(cached) if cached is not None else None
    if lock is not None:
        lock.acquire()
        remove_stale_temp_files(cached)
    try:
        defense = build_defense(job, net)
        if cached is not None and reuse_cached(defense, cached):
            lock.release()
            print(f"robustlab: reusing trained weights {cached}")
            drop_foreign_checkpoints(job)
            return evaluate_loaded(cfg, evaluator, datamodule, defense.net, defense)
        evaluation = RobustEvaluation(
            evaluator, int(cfg.eval.every_n_val_epochs), int(cfg.eval.val_subset)
        )
        trainer = fit(
            job,
            defense,
            datamodule,
            loggers=loggers,
            callbacks=[evaluation],
            cached=cached,
            lock=lock,
            monitor=defense.monitor,
        )
        if trainer is None:  # the killed run had finished training: evaluate its weights
            return evaluate_loaded(cfg, evaluator, datamodule, defense.net, defense)
        return evaluation.records if trainer.is_global_zero else []
    finally:
        if lock is not None and lock.is_locked:
            lock.release()


def fail(err: Exception) -> None:
    """Bad input: one line on stderr, exit status 2, no traceback."""
    print(f"robustlab: error: {str(err).splitlines()[0]}", file=sys.stderr)
    sys.exit(2)


@hydra.main(version_base="1.3", config_path=CONF_SEARCH_PATH, config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    runtime = HydraConfig.get()
    job_num = runtime.job.num if runtime.mode == RunMode.MULTIRUN else None
    pin_gpu(cfg, job_num, torch.cuda.device_count())
    exit_on_termination()
    quiet_third_party()  # again: a launcher's worker process starts without the filters
    try:
        plans = plan_all(cfg)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        fail(err)
    execute_all(cfg, plans)


def main() -> None:
    """``robustlab ...``: old spellings fail in one line; plugins from ``ROBUSTLAB_PLUGINS``."""
    try:
        check_spellings(sys.argv[1:])
    except ConfigError as err:
        fail(err)
    sys.argv[1:] = add_plugins_from_environment(sys.argv[1:])
    quiet_third_party()
    _hydra_main()
