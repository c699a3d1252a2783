"""The default grid (make run) is the mission: every conf/grid_cell option is swept, and each cell
composes and plans (its defense, wrappers, baselines, natural shifts), in seconds, no training."""

from __future__ import annotations

from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from robustlab.paths import CONF_DIR
from robustlab.plan import build_plan

SEED_DEFENSES = {"mixup", "interpolated_at", "miat", "translation"}
BASELINES = {"erm", "pgd_at", "trades", "mart", "fast_at", "m2at"}


def test_the_default_grid_sweeps_every_cell_and_each_plans(tmp_path):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        top = compose(
            config_name="config", overrides=["experiment=grid_default"], return_hydra_config=True
        )
        swept = str(top.hydra.sweeper.params.grid_cell).split(",")
        assert set(swept) == {p.stem for p in (CONF_DIR / "grid_cell").glob("*.yaml")}
        assert set(swept) == SEED_DEFENSES | BASELINES
        plans = {}
        for cell in swept:
            cfg = compose(
                config_name="config", overrides=["experiment=grid_default", f"grid_cell={cell}"]
            )
            with open_dict(cfg):
                cfg.output_dir = str(tmp_path / cell)
            plans[cell] = build_plan(cfg)
    assert {cell: plan.cell.defense for cell, plan in plans.items()} == {c: c for c in swept}
    attacks = {s.name for s in plans["erm"].evaluation.attacks}
    assert {"fgsm", "pgd", "autoattack"} <= attacks
    assert [b.defense for b in plans["miat"].baselines] == ["pgd_at"]
    names = [i["name"] for i in plans["translation"].evaluation.inferences]
    assert set(names) == {"translation", "plain"}
    assert plans["translation"].evaluation.natural_shifts
    mixup = {i["name"] for i in plans["mixup"].evaluation.inferences}
    assert {"plain", "mi_ol"} <= mixup
