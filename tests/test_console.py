"""A quiet, informative console (#18): no third-party tips or deprecation notices on a normal run,
robustlab's own warnings still shown, one line saying what each cell does, a help that names
robustlab."""

from __future__ import annotations

import logging
import subprocess
import sys
import warnings

from robustlab.console import quiet_third_party

NOISE = (
    "💡",
    "litlogger",
    "GPU available",
    "TPU available",
    "LeafSpec",
    "srun",
    "Trainer.fit",
    "configure_callbacks",
)


def test_a_cell_prints_what_it_does_and_no_third_party_noise(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "robustlab",
        "trainer.max_epochs=1",
        "dataset.train_limit=128",
        "eval.n_examples=32",
        "inference=[plain,mi_ol]",  # MI on an ERM net: robustlab's own warning must still show
        "inference.mi_ol.n_ol=2",
        "attack=[fgsm]",
        "torch_threads=1",
        f"hydra.run.dir={tmp_path / 'cell'}",
        f"cache.dir={tmp_path / 'cache'}",
    ]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    console = first.stdout + first.stderr
    assert not [n for n in NOISE if n in console], console[-3000:]
    assert "robustlab: training erm for 1 epoch(s)" in first.stdout
    assert "robustlab: warning: inference=mi_ol assumes a net trained with" in first.stderr
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert "is complete" in again.stdout and "skipping" in again.stdout


def test_help_names_robustlab_says_what_a_cell_is_and_lists_the_groups():
    out = subprocess.run(
        [sys.executable, "-m", "robustlab", "--help"], capture_output=True, text=True, timeout=120
    ).stdout
    assert out.startswith("robustlab:")
    assert "powered by Hydra" not in out
    assert "A cell is one dataset x model x defense" in out
    for group in ("attack:", "dataset:", "defense:", "inference:", "experiment:", "trainer:"):
        assert f"\n{group} " in out
    assert "README.md" in out


def test_only_the_named_noise_is_filtered(capsys):
    quiet_third_party()
    rank_zero = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "GPU available: False", (), None)
    assert not all(f.filter(record) for f in rank_zero.filters)
    kept = logging.LogRecord("x", logging.INFO, __file__, 1, "Epoch 3: val/acc improved", (), None)
    assert all(f.filter(kept) for f in rank_zero.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        quiet_third_party()
        warnings.warn(
            "`isinstance(treespec, LeafSpec)` is deprecated", DeprecationWarning, stacklevel=1
        )
        warnings.warn("robustlab: something real", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["robustlab: something real"]


def test_a_defense_paces_lightning_s_default_progress_bar(monkeypatch):
    """The default bar (redrawn after every batch) becomes a PacedProgressBar: redrawn when half a
    second has passed, and at a loop's end; a disabled or custom bar is left alone."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import TQDMProgressBar
    from torch import nn

    import robustlab.console as console
    from robustlab.console import PacedProgressBar
    from robustlab.defenses.erm import ERM

    def bar_of(**kwargs):
        trainer = pl.Trainer(logger=False, enable_checkpointing=False, **kwargs)
        defense = ERM(nn.Linear(2, 2), name="e", num_classes=2, optimizer={"lr": 0.1})
        defense.trainer = trainer
        return defense.configure_callbacks()

    assert [type(c) for c in bar_of()] == [PacedProgressBar]
    assert bar_of(enable_progress_bar=False) == []
    assert bar_of(callbacks=[TQDMProgressBar(refresh_rate=5)]) == []

    clock = iter([0.0, 0.1, 0.6, 0.7, 0.8, 0.9])
    monkeypatch.setattr(console.time, "monotonic", lambda: next(clock))
    bar = PacedProgressBar()
    assert [bar._should_update(n, 6) for n in range(1, 6)] == [True, False, True, False, False]
    assert bar._should_update(6, 6)  # the end is always drawn
