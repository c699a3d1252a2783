"""The catastrophic-overfitting flag (Wong, Rice, Kolter 2020): the rule on written histories, the
callback through Lightning's real validation loop with real PGD and FGSM, and the flag's way
through the training cache and Lightning checkpoints.

Single-step training of the small digits nets did not overfit catastrophically here (fast AT and
FGSM-AT without random start, eps 0.2-0.3, step up to 2 eps, Adam and SGD, wider nets, 20 epochs:
PGD accuracy only ever rose). So the collapse is made: mid-training, the validation sees a
genuinely gradient-masked net (an ERM net behind a staircase whose slope is exactly zero on the
1/16 grid the digits pixels lie on), where FGSM from the clean point finds no direction for most
pixels but PGD, starting off the grid, still succeeds.
"""

from __future__ import annotations

import csv
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from hypothesis import given, settings
from hypothesis import strategies as st
from pytorch_lightning.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from robustlab.cache import CacheWriter
from robustlab.defenses.adversarial import PGDAT
from robustlab.defenses.inner import InnerAttack, pgd
from robustlab.defenses.overfitting import (
    FLAG,
    CatastrophicOverfittingMonitor,
    Collapse,
    find_collapse,
)
from robustlab.plan import TrainingJob
from robustlab.run import run
from robustlab.training import fit, load_cached

# ---- the rule --------------------------------------------------------------------------------


def test_a_sudden_pgd_collapse_while_fgsm_rises_is_found():
    pgd_acc = [0.10, 0.30, 0.45, 0.50, 0.04]
    fgsm_acc = [0.12, 0.35, 0.50, 0.55, 0.90]
    assert find_collapse(pgd_acc, fgsm_acc) == Collapse(3, 4, 0.50, 0.04, 0.55, 0.90)


def test_a_collapse_over_two_epochs_is_found_against_the_better_one():
    assert find_collapse([0.5, 0.35, 0.1], [0.55, 0.6, 0.8]) == Collapse(0, 2, 0.5, 0.1, 0.55, 0.8)


def test_a_slow_decline_is_not_a_collapse():
    pgd_acc = [0.6 - 0.05 * t for t in range(11)]  # 0.6 -> 0.1, at most 0.1 per two epochs
    assert find_collapse(pgd_acc, [0.6 + 0.02 * t for t in range(11)]) is None


def test_pgd_falling_with_fgsm_falling_too_is_not_a_collapse():
    assert find_collapse([0.5, 0.5, 0.05], [0.6, 0.6, 0.1]) is None


def test_fgsm_holding_within_the_slack_still_counts():
    assert find_collapse([0.5, 0.5, 0.05], [0.6, 0.6, 0.56]) is not None
    assert find_collapse([0.5, 0.5, 0.05], [0.6, 0.6, 0.54]) is None


def test_a_drop_of_a_very_robust_net_that_keeps_half_is_not_a_collapse():
    assert find_collapse([0.9, 0.9, 0.68], [0.9, 0.9, 0.95]) is None  # -0.22 but 76% kept


def test_non_finite_values_are_skipped_and_lengths_must_agree():
    assert find_collapse([0.5, float("nan"), 0.05], [0.6, 0.9, 0.9]) == Collapse(
        0, 2, 0.5, 0.05, 0.6, 0.9
    )
    with pytest.raises(ValueError, match="pgd has 2 epochs but fgsm has 1"):
        find_collapse([0.5, 0.1], [0.6])


accuracy = st.floats(0.0, 1.0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(accuracy, accuracy), max_size=12), st.integers(0, 12))
def test_the_rule_is_causal(history, cut):
    """What a prefix finds stays found: the callback can decide epoch by epoch."""
    pgd_acc, fgsm_acc = [p for p, _ in history], [f for _, f in history]
    whole = find_collapse(pgd_acc, fgsm_acc)
    prefix = find_collapse(pgd_acc[:cut], fgsm_acc[:cut])
    if whole is not None and whole.at < cut:
        assert prefix == whole
    else:
        assert prefix is None


@settings(max_examples=200, deadline=None)
@given(st.lists(accuracy, max_size=12), st.floats(0.0, 0.5))
def test_fgsm_falling_with_pgd_is_never_a_collapse(pgd_acc, gap):
    """FGSM accuracy a constant above PGD's: the gap never widens, so nothing is masked."""
    pgd_acc = [p / 2 for p in pgd_acc]
    assert find_collapse(pgd_acc, [p + gap for p in pgd_acc]) is None


@settings(max_examples=200, deadline=None)
@given(accuracy, st.lists(st.floats(-0.099, 0.3), max_size=12), st.lists(accuracy, min_size=13))
def test_losing_less_than_0_1_per_epoch_is_never_a_collapse(start, changes, fgsm_acc):
    pgd_acc = [start]
    for change in changes:
        pgd_acc.append(min(1.0, max(0.0, pgd_acc[-1] + change)))
    assert find_collapse(pgd_acc, fgsm_acc[: len(pgd_acc)]) is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(accuracy, accuracy), max_size=10), st.floats(0.3, 1.0), accuracy)
def test_an_appended_collapse_is_always_found(history, before, fgsm_before):
    pgd_acc = [p for p, _ in history] + [before, before / 4]
    fgsm_acc = [f for _, f in history] + [fgsm_before, 1.0]
    found = find_collapse(pgd_acc, fgsm_acc)
    assert found is not None and found.at <= len(pgd_acc) - 1


# ---- the callback on its own -----------------------------------------------------------------


class _Module:
    """What the callback touches of a DefenseModule: name, training_flags and log."""

    def __init__(self):
        self.name = "fast_at"
        self.training_flags: list[str] = []
        self.logged: list[tuple[str, float]] = []

    def log(self, key, value, **kwargs):
        self.logged.append((key, value))


def _epoch(monitor, module, epoch, pgd_acc, fgsm_acc, sanity=False):
    metrics = {"val/pgd_acc": torch.tensor(pgd_acc), "val/fgsm_acc": torch.tensor(fgsm_acc)}
    trainer = SimpleNamespace(
        sanity_checking=sanity, callback_metrics=metrics, current_epoch=epoch, is_global_zero=True
    )
    monitor.on_validation_epoch_end(trainer, module)


def test_the_callback_warns_once_flags_once_and_skips_the_sanity_check(capsys):
    monitor, module = CatastrophicOverfittingMonitor(), _Module()
    _epoch(monitor, module, 0, 0.9, 0.0, sanity=True)  # would be the reference: not recorded
    for epoch, (p, f) in enumerate([(0.1, 0.1), (0.45, 0.5), (0.05, 0.9), (0.5, 0.5), (0.0, 1)]):
        _epoch(monitor, module, epoch, p, f)
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "robustlab: warning: catastrophic overfitting in fast_at at epoch 2: val PGD acc "
        "0.450 -> 0.050 while val FGSM acc 0.500 -> 0.900 (Wong et al. 2020)"
    ]
    assert module.training_flags == [FLAG] and len(monitor.pgd) == 5
    assert [v for _, v in module.logged] == [0.0, 0.0, 1.0, 1.0, 1.0]
    assert {k for k, _ in module.logged} == {"train/catastrophic_overfitting"}


def test_the_callback_ignores_a_defense_without_the_two_metrics():
    monitor, module = CatastrophicOverfittingMonitor(), _Module()
    trainer = SimpleNamespace(sanity_checking=False, callback_metrics={"val/adv_acc": 0.3})
    monitor.on_validation_epoch_end(trainer, module)
    assert monitor.pgd == [] and module.logged == []


# ---- real attacks on digits ------------------------------------------------------------------

GRID = 1 / 16  # digits pixels are k/16 exactly
DELTA = 0.002  # half-width of the flat spot around a grid point


class GridMasked(nn.Module):
    """``net``, and once ``masked``, behind a monotone staircase on each pixel: within ~DELTA of an
    interior grid point k/16 (0 < k < 16) it is flat, with slope exactly zero on the point, and it
    is the identity elsewhere (off by < 3e-4 at the cell edges). Shattered gradients in the
    sense of Athalye et al. 2018: FGSM from a clean digit gets no direction for its interior
    pixels (sign(0) = 0), while PGD, whose random start leaves the grid, sees the net's gradient."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.masked = False

    def forward(self, x):
        if self.masked:
            q = torch.round(x / GRID) * GRID
            r = x - q
            x = torch.where((q > 0) & (q < 1), q + r**3 / (r**2 + DELTA**2), x)
        return self.net(x)


def _train(net, x, y, epochs, attack=None):
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(epochs):
        order = torch.randperm(len(x))
        for i in range(0, len(x), 64):
            xb, yb = x[order[i : i + 64]], y[order[i : i + 64]]
            if attack is not None:
                net.eval()
                xb = pgd(net, xb, yb, attack)
                net.train()
            loss = F.cross_entropy(net(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


@pytest.fixture(scope="module")
def digits_weights():
    """Weights of the digits smallcnn: ERM (8 epochs) and fast AT (FGSM-RS, 8 epochs, eps 0.2)."""
    from hydra import compose, initialize_config_dir

    from robustlab.paths import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["output_dir=unused"])
    datamodule = instantiate(cfg.dataset)
    datamodule.setup("fit")
    x, y = datamodule.tensors("train")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in one_thread (a module-scoped fixture cannot use it)
    try:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            erm = _train(instantiate(cfg.model), x, y, 8)
            fast = InnerAttack(eps=0.2, steps=1, step_size=0.25, random_start=True)
            robust = _train(instantiate(cfg.model), x, y, 8, attack=fast)
    finally:
        torch.set_num_threads(threads)
    return {"erm": erm, "robust": robust}


@pytest.fixture
def one_thread():
    """Small nets and batches: one thread is as fast, and does not stall on a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class _SwapAtValidation(pl.Callback):
    """Before the validation of ``epoch``, the net becomes the ERM one, masked or not."""

    def __init__(self, state, epoch, masked):
        self.state, self.epoch, self.masked = state, epoch, masked

    def on_validation_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            pl_module.net.net.load_state_dict(self.state)
            pl_module.net.masked = self.masked


def _fast_at(cfg, state):
    net = GridMasked(instantiate(cfg.model))
    net.net.load_state_dict(state)
    return instantiate(cfg.defense, net=net, _convert_="all")


@pytest.mark.parametrize("masked", [True, False], ids=["gradient_masked", "plain_erm"])
def test_the_real_validation_loop_flags_a_gradient_masked_net(
    masked, digits_weights, compose_cfg, tmp_path, capsys, one_thread
):
    """Fast AT resumes from robust weights for two epochs (2 batches each); before the third
    validation its net turns into the ERM net. Masked, PGD collapses while FGSM rises: flagged,
    in the cache file and the checkpoint too. Unmasked, FGSM collapses with PGD: not flagged."""
    cfg = compose_cfg(
        "defense=fast_at",
        "trainer.max_epochs=3",
        "+trainer.limit_train_batches=2",
        "trainer.enable_progress_bar=false",
        "logger=none",
    )
    defense = _fast_at(cfg, digits_weights["robust"])
    cached = tmp_path / "cache" / "fast_at.pt"
    cached.parent.mkdir()
    trainer = fit(
        TrainingJob("fast_at", cfg),
        defense,
        instantiate(cfg.dataset),
        loggers=[],
        callbacks=[_SwapAtValidation(digits_weights["erm"], 2, masked)],
        cached=cached,
        lock=None,
    )
    monitor = next(c for c in trainer.callbacks if isinstance(c, CatastrophicOverfittingMonitor))
    assert monitor.epochs == [0, 1, 2]
    assert min(monitor.pgd[:2]) > 0.35 and monitor.pgd[2] < 0.2  # PGD collapses either way
    warnings = [
        line
        for line in capsys.readouterr().err.splitlines()
        if line.startswith("robustlab: warning: catastrophic")
    ]
    stored = torch.load(cached, weights_only=True)
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    restored = _fast_at(cfg, digits_weights["erm"])
    load_cached(restored, cached)
    if masked:
        assert monitor.fgsm[2] > max(monitor.fgsm[:2])  # FGSM rises: gradient masking
        assert monitor.collapse is not None and monitor.collapse.at == 2
        assert len(warnings) == 1 and "in fast_at at epoch 2" in warnings[0]
        expected = [FLAG]
    else:
        assert monitor.fgsm[2] < max(monitor.fgsm[:2]) - 0.2
        assert monitor.collapse is None and warnings == []
        expected = []
    assert defense.training_flags == expected
    assert stored["training_flags"] == expected and stored["defense"] == "fast_at"
    assert saved["robustlab_training_flags"] == expected
    assert restored.training_flags == expected


# A short PGD-AT run (640 images, PGD-5, lr 3e-3: val PGD accuracy 0.13 -> 0.41 in 5 epochs), and
# pgd_at exactly as configured (all of digits, PGD-10, 15 epochs).
QUICK_PGD_AT = (
    "dataset.train_limit=640",
    "defense.inner.steps=5",
    "defense.optimizer.lr=0.003",
    "trainer.max_epochs=5",
)


@pytest.mark.parametrize(
    "overrides",
    [QUICK_PGD_AT, pytest.param((), marks=pytest.mark.slow)],
    ids=["quick", "as_configured"],
)
def test_a_normal_pgd_at_run_on_digits_is_not_flagged(
    overrides, compose_cfg, tmp_path, capsys, one_thread
):
    cfg = compose_cfg(
        "torch_threads=1",
        f"cache.dir={tmp_path / 'cache'}",
        "defense=pgd_at",
        "trainer.enable_progress_bar=false",
        "attack=[fgsm]",
        "eval.n_examples=48",
        "logger=csv",
        *overrides,
    )
    run(cfg)
    assert "warning: catastrophic" not in capsys.readouterr().err
    (cached,) = (tmp_path / "cache").glob("*.pt")
    stored = torch.load(cached, weights_only=True)
    assert stored["training_flags"] == [] and stored["defense"] == "pgd_at"
    with open(tmp_path / "csv" / "metrics.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("val/fgsm_acc")]
    epochs = int(cfg.trainer.max_epochs)
    assert len(rows) == epochs  # one validation per epoch, each with the FGSM accuracy
    assert [float(r["train/catastrophic_overfitting"]) for r in rows] == [0.0] * epochs
    assert float(rows[-1]["val/pgd_acc"]) > 0.3  # the run did become robust


# ---- the validation FGSM and persistence -----------------------------------------------------


def _toy(val_attack=None):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 3))
    common = dict(name="toy", num_classes=3, optimizer={"name": "sgd", "lr": 0.1})
    return PGDAT(net, **common, val_attack=val_attack, inner={"eps": 0.1, "steps": 2})


def _trainer(tmp_path, **kwargs):
    return pl.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        inference_mode=False,
        default_root_dir=tmp_path,
        **kwargs,
    )


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_val_fgsm_is_one_eps_step_from_the_clean_point_and_draws_no_randomness(norm, tmp_path):
    defense = _toy({"eps": 0.3, "steps": 5, "norm": norm, "random_start": True})
    assert defense.val_fgsm_attack == InnerAttack(0.3, 1, 0.3, norm, random_start=False)
    x, y = torch.rand(32, 1, 4, 4), torch.randint(0, 3, (32,))
    net = defense.net
    x_req = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(net(x_req), y, reduction="sum"), x_req)
    if norm == "linf":
        step = grad.sign()
    else:
        step = grad / grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    expected = (net((x + 0.3 * step).clamp(0, 1)).argmax(1) == y).float().mean()
    before = torch.get_rng_state()
    pgd(net, x, y, defense.val_fgsm_attack)
    assert torch.equal(torch.get_rng_state(), before)
    trainer = _trainer(tmp_path)
    trainer.validate(defense, DataLoader(TensorDataset(x, y), batch_size=32), verbose=False)
    torch.testing.assert_close(trainer.callback_metrics["val/fgsm_acc"], expected)
    assert "val/pgd_acc" in trainer.callback_metrics


def test_no_val_attack_no_fgsm_metric():
    assert _toy().val_fgsm_attack is None and _toy().training_flags == []


def test_flags_round_trip_through_the_training_cache(tmp_path):
    defense = _toy()
    defense.training_flags.append(FLAG)
    path = tmp_path / "cached.pt"
    CacheWriter(path, {"seed": 0}, None).on_train_end(SimpleNamespace(is_global_zero=True), defense)
    stored = torch.load(path, weights_only=True)
    assert stored["training_flags"] == [FLAG] and stored["defense"] == "toy"
    fresh = _toy()
    load_cached(fresh, path)
    assert fresh.training_flags == [FLAG]
    for key, value in defense.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value)


def test_a_cache_file_from_before_the_flags_loads_without_any(tmp_path):
    defense = _toy()
    path = tmp_path / "old.pt"
    torch.save({"state_dict": defense.state_dict(), "training_config": "{}"}, path)
    fresh = _toy()
    fresh.training_flags = ["stale"]
    load_cached(fresh, path)
    assert fresh.training_flags == []


def test_flags_round_trip_through_a_lightning_checkpoint(tmp_path):
    defense = _toy({"eps": 0.1, "steps": 1})
    defense.training_flags.append(FLAG)
    x, y = torch.rand(16, 1, 4, 4), torch.randint(0, 3, (16,))
    data = DataLoader(TensorDataset(x, y), batch_size=8)
    checkpoint = ModelCheckpoint(dirpath=tmp_path, filename="last", monitor=None)
    monitor = CatastrophicOverfittingMonitor()
    _trainer(tmp_path, max_epochs=1, callbacks=[monitor, checkpoint]).fit(defense, data, data)
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)  # plain lists and strings
    assert saved["robustlab_training_flags"] == [FLAG]
    fresh, fresh_monitor = _toy({"eps": 0.1, "steps": 1}), CatastrophicOverfittingMonitor()
    trainer = _trainer(
        tmp_path, max_epochs=1, callbacks=[fresh_monitor], enable_checkpointing=False
    )
    trainer.fit(fresh, data, data, ckpt_path=tmp_path / "last.ckpt")  # restores, trains nothing
    assert fresh.training_flags == [FLAG]
    assert fresh_monitor.pgd == monitor.pgd and len(monitor.pgd) == 1
