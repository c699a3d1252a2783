"""A researcher's own defense and attack (examples/plugin, copied to a folder outside the
checkout) are found through ROBUSTLAB_PLUGINS or hydra.searchpath, selected like built-in options
and checked by the same validation."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "plugin"
TINY = (
    "trainer.max_epochs=1",
    "dataset.train_limit=128",
    "eval.n_examples=24",
    "logger=none",
    "trainer.enable_progress_bar=false",
)


def robustlab(cwd: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "robustlab", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_plugin_defense_and_attack_run_from_outside_the_checkout(tmp_path):
    plugin = shutil.copytree(EXAMPLE, tmp_path / "my_project")
    work = tmp_path / "work"
    work.mkdir()
    result = robustlab(
        work,
        "defense=label_smoothing",
        "defense.smoothing=0.2",
        "attack=[fgsm,noise]",
        f"cache.dir={tmp_path / 'cache'}",
        "hydra.run.dir=out",
        *TINY,
        env={"ROBUSTLAB_PLUGINS": str(plugin)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    records = [
        json.loads(line) for line in (work / "out" / "records.jsonl").read_text().splitlines()
    ]
    assert {r["defense"] for r in records} == {"label_smoothing"}
    assert {r["attack"] for r in records} == {"fgsm", "noise", "worst_case"}
    noise = next(r for r in records if r["attack"] == "noise")
    assert noise["attack_params"]["kind"] == "uniform_noise"


def test_plugin_keys_are_checked_like_built_in_ones(tmp_path):
    plugin = shutil.copytree(EXAMPLE, tmp_path / "my_project")
    result = robustlab(
        plugin,  # the modules import from the working folder; the configs come by searchpath
        "defense=label_smoothing",
        "+defense.smothing=0.2",
        f"hydra.searchpath=[file://{plugin / 'conf'}]",
        f"hydra.run.dir={tmp_path / 'out'}",
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("robustlab: error: defense: ['smothing']")
    assert "['smothing'] not parameters of LabelSmoothing" in result.stderr
