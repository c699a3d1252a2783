"""``build_plan``: the composed config -> a checked, typed ``CellPlan``.

Every check that can fail on bad input runs here, cheap ones first, then (``mode=eval``) the
defense the checkpoint was trained with is read against the one named, then the dataset files are
opened and checked, then the checkpoint is fitted to the model; nothing is trained or evaluated.
Training jobs of dependencies (``defense.dependencies``) and baselines (``eval.compare_with``) are
composed by Hydra (``robustlab.plan.compose``) and checked the same way.
"""

from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from robustlab.config import config_hash
from robustlab.loggers import check_loggers
from robustlab.models.loading import load_weights
from robustlab.models.provenance import checkpoint_defense, checkpoint_training_flags
from robustlab.paths import CONF_DIR
from robustlab.plan import checks
from robustlab.plan.compose import baseline_config, job_config
from robustlab.plan.errors import ConfigError
from robustlab.plan.jobs import CellPlan, EvaluationJob, TrainingJob
from robustlab.precision import settings


def build_plan(cfg: DictConfig) -> CellPlan:
    """Check ``cfg`` and turn it into the plan of its cell (ConfigError: one line)."""
    checks.check_run(cfg)
    checks.check_eval(cfg)
    checks.check_precision(cfg)
    checks.check_model(cfg)
    check_loggers(cfg.get("logger"))
    cell = training_job(cfg, "defense")
    checks.check_baselines(cfg)
    defense_cls = checks.defense_class("defense", cfg.defense)
    attacks = checks.attack_specs(cfg)
    inferences = checks.inference_configs(cfg, defense_cls)
    wheres = [f"eval.compare_with[{i}]" for i in range(len(cfg.eval.compare_with or []))]
    baselines = tuple(
        training_job(baseline_config(cfg, name, where), where)
        for where, name in zip(wheres, cfg.eval.compare_with or [])
    )
    ckpt = Path(cfg.ckpt) if cfg.mode == "eval" else None
    recorded = cfg.defense.name if ckpt is None else evaluated_defense(ckpt, named_defense(cfg))
    check_dataset(cfg)
    if ckpt is not None:
        check_checkpoint(cfg, ckpt)
    flags = checkpoint_training_flags(ckpt) if ckpt is not None else ()
    ev = cfg.eval
    evaluation = EvaluationJob(
        attacks=attacks,
        inferences=inferences,
        threat_models=checks.threat_models(ev.threat_models),
        n_examples=ev.get("n_examples"),
        batch_size=ev.batch_size,
        eot_draws=ev.eot_draws,
        score_draws=ev.score_draws,
        transfer_floor=ev.transfer_floor,
        heavy_on_randomized=ev.heavy_attacks_on_randomized,
        natural_shifts=checks.natural_shifts(ev.get("natural_shifts")),
        every_n_val_epochs=ev.every_n_val_epochs,
        val_subset=ev.val_subset,
        grad_check_points=ev.get("grad_check_points"),
        attack_precision=settings(cfg)["attack"],
        channels_last=settings(cfg)["channels_last"],
    )
    return CellPlan(
        mode=cfg.mode,
        seed=cfg.seed,
        torch_threads=cfg.get("torch_threads"),
        output_dir=Path(cfg.output_dir),
        cell_hash=config_hash(cfg),
        ckpt=ckpt,
        cell=cell,
        baselines=baselines,
        evaluation=evaluation,
        config=cfg,
        recorded_defense=recorded,
        recorded_training_flags=flags,
    )


def training_job(cfg: DictConfig, where: str) -> TrainingJob:
    """The job of ``cfg.defense`` and, recursively, of each of its dependencies."""
    checks.check_defense(where, cfg.defense)
    deps = []
    # resolved in the parent's context: ${defense.optimizer} is the parent defense's optimizer
    specs = OmegaConf.to_container(cfg.defense, resolve=True).get("dependencies") or {}
    for key, spec in specs.items():
        dep_where = f"{where}.dependencies.{key}"
        if not spec or not spec.get("defense"):
            raise ConfigError(f"{dep_where} names no defense (defense: NAME)")
        sub = job_config(cfg, spec["defense"], spec.get("overrides"), dep_where)
        deps.append((key, training_job(sub, dep_where)))
    return TrainingJob(defense=cfg.defense.name, config=cfg, dependencies=tuple(deps))


def construct(node: DictConfig, where: str, **kwargs):
    """``instantiate(node)`` with a constructor's ValueError as one line naming ``where``."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__ or err
        raise ConfigError(f"{where}: {str(cause).splitlines()[0]}") from None


def check_dataset(cfg: DictConfig) -> None:
    """Build the datamodule (its argument checks) and open and check its files."""
    datamodule = construct(cfg.dataset, "dataset")
    try:
        datamodule.check_files()
    except (ValueError, FileNotFoundError) as err:
        raise ConfigError(str(err).splitlines()[0]) from None


def named_defense(cfg: DictConfig) -> str | None:
    """The defense the user named: ``cfg.defense.name`` if the command line selects it
    (``defense=X``), None if it is only the config's default. Outside a Hydra run (the compose API,
    library use) the overrides are unknown: a composed defense other than the primary config's
    default counts as named."""
    if not HydraConfig.initialized():
        return None if cfg.defense.name == default_defense() else cfg.defense.name
    for override in HydraConfig.get().overrides.task:
        key, sep, _ = override.partition("=")
        if sep and key.lstrip("+") == "defense":
            return cfg.defense.name
    return None


def default_defense() -> str:
    """The defense the primary config (conf/config.yaml) selects by default."""
    for entry in OmegaConf.load(CONF_DIR / "config.yaml").defaults:
        if isinstance(entry, DictConfig) and "defense" in entry:
            return str(entry.defense)
    raise ConfigError("conf/config.yaml selects no default defense")


def evaluated_defense(ckpt: Path, named: str | None) -> str:
    """``mode=eval``: the defense the records carry. The checkpoint's own defense, which a named
    different one contradicts (ConfigError); for a checkpoint that names none (a plain state_dict,
    a third-party file), the named one or ``external``."""
    check_exists(ckpt)
    try:
        trained = checkpoint_defense(ckpt)
    except (ValueError, FileNotFoundError) as err:
        raise ConfigError(str(err).splitlines()[0]) from None
    if trained is None:
        return named or "external"
    if named is not None and named != trained:
        raise ConfigError(
            f"ckpt={ckpt} was trained with defense={trained}, not defense={named}: "
            f"drop defense= or pass defense={trained}"
        )
    return trained


def check_exists(ckpt: Path) -> None:
    if not ckpt.is_file():
        raise ConfigError(f"ckpt={ckpt} does not exist or is not a file")


def check_checkpoint(cfg: DictConfig, ckpt: Path) -> None:
    """``mode=eval``: the checkpoint exists and fits the model."""
    check_exists(ckpt)
    try:
        load_weights(construct(cfg.model, "model"), ckpt)
    except (ValueError, FileNotFoundError) as err:
        raise ConfigError(str(err).splitlines()[0]) from None
