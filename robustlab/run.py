"""The Hydra entry point: one cell of the pipeline in ../shared/DESIGN.md.

compose cfg -> validate -> seed -> datamodule -> net -> defense (train) or checkpoint (eval)
-> predictor (inference wrapper) -> robust evaluation -> records -> table.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint

from robustlab.attacks.callback import RobustEvaluation, split_tensors
from robustlab.attacks.evaluator import Evaluator
from robustlab.attacks.specs import resolve_attack_specs
from robustlab.checkpointing import AtomicCheckpointIO
from robustlab.config import config_hash
from robustlab.inference.build import build_predictor
from robustlab.loggers import build_loggers
from robustlab.models.loading import load_weights
from robustlab.results.versions import library_versions
from robustlab.validate import ConfigError, validate_attack_specs, validate_config


def build_evaluator(cfg: DictConfig, specs, datamodule, loggers) -> Evaluator:
    out = Path(cfg.output_dir)
    meta = {
        "run_id": out.name,
        "config_hash": config_hash(cfg),
        "dataset": cfg.dataset.name,
        "model": cfg.model.name,
        "defense": cfg.defense.name,
        "inference": cfg.inference.name,
        "seed": int(cfg.seed),
        "versions": library_versions(),
    }
    inference_cfg = {k: v for k, v in OmegaConf.to_container(cfg.inference, resolve=True).items()}
    return Evaluator(
        specs=specs,
        predictor_factory=lambda net: build_predictor(inference_cfg, net, datamodule),
        meta=meta,
        num_classes=int(cfg.dataset.num_classes),
        seed=int(cfg.seed),
        output_dir=out,
        n_examples=cfg.eval.n_examples,
        batch_size=int(cfg.eval.batch_size),
        threat_models=cfg.eval.threat_models,
        eot_draws=int(cfg.eval.eot_draws),
        loggers=loggers,
    )


def prepare(cfg: DictConfig):
    """Every check that can fail on bad input, before anything expensive starts."""
    validate_config(cfg)
    specs = resolve_attack_specs(cfg)
    validate_attack_specs(specs)
    datamodule = instantiate(cfg.dataset)
    datamodule.check_files()
    net = instantiate(cfg.model)
    if cfg.mode == "eval":
        load_weights(net, cfg.ckpt)
    return specs, datamodule, net


def run(cfg: DictConfig) -> list[dict]:
    """Run one cell and return its records."""
    return execute(cfg, *prepare(cfg))


def execute(cfg: DictConfig, specs, datamodule, net) -> list[dict]:
    """Train (unless mode=eval) and evaluate an already validated cell."""
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "resolved_config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    loggers = build_loggers(cfg.logger)
    evaluator = build_evaluator(cfg, specs, datamodule, loggers)

    if cfg.mode == "eval":
        x, y = split_tensors(datamodule, "test")
        return evaluator.evaluate(net, x, y)

    defense = instantiate(cfg.defense, net=net)
    checkpoints = ModelCheckpoint(
        dirpath=out / "checkpoints",
        filename="best",
        monitor=defense.monitor,
        mode="max",
        save_last=True,
    )
    callback = RobustEvaluation(
        evaluator, int(cfg.eval.every_n_val_epochs), int(cfg.eval.val_subset)
    )
    trainer = instantiate(
        cfg.trainer,
        logger=loggers or False,
        callbacks=[checkpoints, callback],
        default_root_dir=str(out),
        plugins=[AtomicCheckpointIO()],
    )
    trainer.fit(defense, datamodule=datamodule)
    return callback.records


def fail(err: Exception) -> None:
    """Bad input: one line on stderr, exit status 2, no traceback."""
    print(f"robustlab: error: {str(err).splitlines()[0]}", file=sys.stderr)
    sys.exit(2)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    try:
        prepared = prepare(cfg)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        fail(err)
    execute(cfg, *prepared)


def main() -> None:
    _hydra_main()
