"""W&B runs offline unless configured, grouped by sweep, with a run id stable per cell."""

from __future__ import annotations

import pytest

from robustlab.loggers import wandb_logger, wandb_offline


@pytest.fixture(autouse=True)
def no_key(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))


def test_offline_by_default_online_when_asked(monkeypatch):
    assert wandb_offline()
    monkeypatch.setenv("WANDB_MODE", "online")
    assert not wandb_offline()
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_API_KEY", "x")
    assert wandb_offline()


def test_group_is_the_sweep_and_run_id_is_stable_per_cell(tmp_path):
    cell = tmp_path / "sweep_a" / "0_digits_erm"
    cell.mkdir(parents=True)
    first = wandb_logger(project="p", save_dir=str(cell), name="n")
    again = wandb_logger(project="p", save_dir=str(cell), name="n")
    other = wandb_logger(project="p", save_dir=str(tmp_path / "sweep_a" / "1"), name="n")
    assert first._wandb_init["group"] == "sweep_a"
    assert first._wandb_init["id"] == again._wandb_init["id"] != other._wandb_init["id"]
    assert first._offline
