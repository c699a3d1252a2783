"""MIAT: the DV bound, sample selection, estimator sizing, the frozen classifier of stage 1, and
stage 2's loss reducing to its base loss (PGD-AT, TRADES, MART) when alpha = 0."""

from __future__ import annotations

import copy
import math

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from robustlab.cache import training_key
from robustlab.defenses.adversarial import PGDAT
from robustlab.defenses.mart import MART
from robustlab.defenses.miat.estimators import MIEstimator, dv_bound
from robustlab.defenses.miat.selection import select_flipped
from robustlab.defenses.miat.stage1 import MIATEstimators
from robustlab.defenses.miat.stage2 import MIAT
from robustlab.defenses.trades import TRADES
from robustlab.models.smallcnn import SmallCNN
from robustlab.plan import build_plan

COMMON = dict(name="t", num_classes=3, optimizer={"name": "adam", "lr": 0.01}, val_attack=None)
INNER = {"eps": 0.3, "steps": 2}
SHAPE = (1, 8, 8)
EST = {"hidden": 8, "width": 4}


def _toy_net(seed=0, batchnorm=False):
    torch.manual_seed(seed)
    layers = [nn.Conv2d(1, 4, 3, padding=1)]
    layers += [nn.BatchNorm2d(4)] if batchnorm else []
    layers += [nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3)]
    return nn.Sequential(*layers)


def _data(n=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, *SHAPE, generator=g), torch.randint(0, 3, (n,), generator=g)


def test_dv_bound_is_higher_for_dependent_pairs_with_a_fixed_critic():
    torch.manual_seed(0)
    x = torch.randn(256)
    critic = lambda a, b: -((a[:, None] - b[None, :]) ** 2)  # noqa: E731  T(x_i, y_j)

    def estimate(y):
        scores = critic(x, y)
        off = ~torch.eye(len(x), dtype=torch.bool)
        return dv_bound(scores.diagonal(), scores[off]).item()

    dependent, independent = estimate(x + 0.1 * torch.randn(256)), estimate(torch.randn(256))
    assert dependent > 0.5 > 0.0 > independent


def test_dv_bound_is_stable_for_large_scores():
    value = dv_bound(torch.tensor([1000.0]), torch.tensor([1000.0, 1000.0]))
    assert torch.isfinite(value) and value.item() == pytest.approx(0.0)


def test_trained_estimator_scores_dependent_logits_above_independent_ones():
    """Patterns from 3 templates; logits = the template's one-hot (dependent) or a random one."""

    def train_and_estimate(dependent: bool) -> float:
        torch.manual_seed(0)
        est = MIEstimator((1, 4, 4), 3, hidden=8, width=4)
        opt = torch.optim.Adam(est.parameters(), lr=3e-2)
        templates = torch.rand(3, 1, 4, 4)

        def batch(n):
            c = torch.randint(0, 3, (n,))
            other = c if dependent else torch.randint(0, 3, (n,))
            return templates[c] + 0.05 * torch.randn(n, 1, 4, 4), 5.0 * F.one_hot(other, 3).float()

        for _ in range(10):
            loss = -est(*batch(32)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            return est.eval()(*batch(64)).mean().item()

    dependent, independent = train_and_estimate(True), train_and_estimate(False)
    assert dependent > 0.4 > 0.1 > independent


def test_selection_keeps_exactly_correct_clean_and_wrong_adversarial():
    y = torch.tensor([0, 1, 2, 0, 1])
    clean = torch.tensor(
        [[5.0, 0, 0], [0, 5.0, 0], [5.0, 0, 0], [5.0, 0, 0], [0, 0, 5.0]]
    )  # correct: 0, 1, 3
    adv = torch.tensor(
        [[0, 5.0, 0], [0, 5.0, 0], [0, 0, 5.0], [0, 0, 5.0], [0, 5.0, 0]]
    )  # wrong: 0, 3 (2 is right but clean-wrong; 4 is right)
    assert select_flipped(clean, adv, y).tolist() == [True, False, False, True, False]


def test_selection_uses_the_class_axis_not_the_batch_axis():
    # a softmax over the batch axis (the official code) would pick class 1 for example 0
    clean = torch.tensor([[2.0, 1.9], [9.0, 0.0]])
    adv = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    assert select_flipped(clean, adv, torch.tensor([0, 0])).tolist() == [True, True]


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32), (1, 3, 3)])
def test_estimators_size_themselves_from_the_net(shape):
    c, s, _ = shape
    net = SmallCNN(in_channels=c, num_classes=7, image_size=s, mean=[0.5] * c, std=[0.5] * c)
    est = MIEstimator.for_net(net, shape, **EST)
    x = torch.rand(3, *shape)
    mi = est(x, net(x))
    assert mi.shape == (3,) and torch.isfinite(mi).all()
    assert est.local.out_size == {8: 2, 28: 7, 32: 8, 3: 3}[s]


def _save_classifier(net, path):
    torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}}, path)
    return str(path)


@pytest.mark.parametrize("objective", ["paper", "official"])
def test_stage1_freezes_the_classifier_and_trains_the_estimators(tmp_path, objective):
    trained = _toy_net(batchnorm=True)
    trained.train()
    trained(torch.rand(32, *SHAPE) * 3)  # non-default BN running statistics
    path = _save_classifier(trained, tmp_path / "clf.pt")
    defense = MIATEstimators(
        _toy_net(seed=5, batchnorm=True),
        **COMMON,
        inner=INNER,
        dependencies={"classifier": path},
        input_shape=SHAPE,
        estimator=EST,
        objective=objective,
    )
    net_before = copy.deepcopy(defense.net.state_dict())
    est_before = copy.deepcopy(defense.estimator_n.state_dict())
    assert all(torch.equal(net_before[k], v) for k, v in trained.state_dict().items())
    x, y = _data(32)
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    trainer = pl.Trainer(
        max_steps=3,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=1,
    )
    trainer.fit(defense, loader, loader)
    assert all(torch.equal(net_before[k], v) for k, v in defense.net.state_dict().items())
    assert not any(p.requires_grad for p in defense.net.parameters())
    changed = [
        not torch.equal(est_before[k], v) for k, v in defense.estimator_n.state_dict().items()
    ]
    assert any(changed)
    assert "val/mi_gap" in trainer.callback_metrics


def _stage1_checkpoint(path, net):
    state = {
        f"{name}.{k}": v
        for name in ("estimator_n", "estimator_a")
        for k, v in MIEstimator.for_net(net, SHAPE, **EST).state_dict().items()
    }
    torch.save({"state_dict": state}, path)
    return str(path)


BASES = {"pgd_at": (PGDAT, {}), "trades": (TRADES, {"beta": 6.0}), "mart": (MART, {"beta": 6.0})}


@pytest.mark.parametrize("base", sorted(BASES))
def test_alpha_zero_gives_exactly_the_base_loss(tmp_path, base):
    cls, extra = BASES[base]
    x, y = _data()
    miat = _miat(tmp_path, alpha=0.0, base=base)
    reference = cls(_toy_net(seed=3), **COMMON, inner=INNER, **extra)
    torch.manual_seed(7)
    loss_miat, _ = miat.training_loss(x, y)
    torch.manual_seed(7)
    loss_base, _ = reference.training_loss(x, y)
    assert torch.equal(loss_miat, loss_base)


def test_mi_term_reaches_the_net_and_not_the_estimators(tmp_path):
    ckpt = _stage1_checkpoint(tmp_path / "est.pt", _toy_net())
    miat = MIAT(
        _toy_net(seed=3),
        **COMMON,
        inner=INNER,
        dependencies={"estimators": ckpt},
        input_shape=SHAPE,
        estimator=EST,
    )
    x, y = _data()
    x_adv = x.flip(0)
    logits_clean = miat.net(x)
    mi = miat.mi_loss(x, x_adv, logits_clean, logits_clean.flip(0) * 3, y)
    assert mi.requires_grad and torch.isfinite(mi)
    mi.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in miat.net.parameters())
    assert all(p.grad is None for p in miat.estimator_n.parameters())
    assert not miat.train().estimator_n.training


def test_bad_base_loss_is_a_one_line_error(tmp_path):
    ckpt = _stage1_checkpoint(tmp_path / "est.pt", _toy_net())
    with pytest.raises(ValueError, match="base_loss='x' is not one of"):
        MIAT(
            _toy_net(),
            **COMMON,
            inner=INNER,
            dependencies={"estimators": ckpt},
            input_shape=SHAPE,
            estimator=EST,
            base_loss="x",
        )


@pytest.mark.slow
def test_full_chain_trains_classifier_estimators_and_miat(compose_cfg, tmp_path):
    from robustlab.run import run

    cfg = compose_cfg(
        "experiment=miat_quick",
        f"cache.dir={tmp_path / 'cache'}",
        "dataset.train_limit=128",
        "eval.n_examples=48",
        "trainer.max_epochs=1",
        "defense.warmup_epochs=0",
        "defense.dependencies.estimators.overrides.trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        "logger=none",
        "attack=[fgsm]",
    )
    records = run(cfg)
    cached = sorted(p.name.split("-")[2] for p in (tmp_path / "cache").glob("*.pt"))
    assert cached == ["miat", "miat_estimators", "pgd_at"]
    assert {r["defense"] for r in records} >= {"miat"}


def _miat(tmp_path, alpha, base="pgd_at"):
    ckpt = _stage1_checkpoint(tmp_path / "est.pt", _toy_net())
    extra = BASES[base][1]
    return MIAT(
        _toy_net(seed=3),
        **COMMON,
        inner=INNER,
        dependencies={"estimators": ckpt},
        input_shape=SHAPE,
        estimator=EST,
        base_loss=base,
        alpha=alpha,
        **extra,
    )


def _logged_training_loss(miat, x, y):
    """training_loss with self.log recorded: {name: value}."""
    logged = {}
    miat.log = lambda name, value, **_: logged.__setitem__(name, value)
    torch.manual_seed(7)
    loss, _ = miat.training_loss(x, y)
    return loss, logged


@pytest.mark.parametrize("base", sorted(BASES))
def test_mi_grad_ratio_is_the_ratio_of_the_two_terms_parameter_gradients(tmp_path, base):
    """train/mi_grad_ratio: ||d(alpha L_mi)/d params|| / ||d L_adv/d params|| of the net, computed
    here the long way (backward into .grad); it scales with alpha, leaves the loss as it was and is
    measured once per epoch."""
    x, y = _data()
    miat = _miat(tmp_path, 2.0, base)
    _, logged = _logged_training_loss(miat, x, y)
    torch.manual_seed(7)
    loss_adv, x_adv, logits_adv, logits_clean = miat.base_terms(x, y)
    if logits_clean is None:
        logits_clean = miat.net(x)
    loss_mi = miat.mi_loss(x, x_adv, logits_clean, logits_adv, y)
    assert loss_mi.requires_grad  # some example was selected: the ratio is defined

    def norm(loss):
        miat.net.zero_grad()
        loss.backward(retain_graph=True)
        return math.sqrt(sum(float((p.grad**2).sum()) for p in miat.net.parameters()))

    expected = norm(2.0 * loss_mi) / norm(loss_adv)
    assert float(logged["train/mi_grad_ratio"]) == pytest.approx(expected, rel=1e-5)
    doubled = _logged_training_loss(_miat(tmp_path, 4.0, base), x, y)[1]
    assert float(doubled["train/mi_grad_ratio"]) == pytest.approx(2 * expected, rel=1e-5)
    fresh = _miat(tmp_path, 2.0, base)
    loss, _ = _logged_training_loss(fresh, x, y)
    assert torch.equal(loss, loss_adv + 2.0 * loss_mi)
    assert "train/mi_grad_ratio" not in _logged_training_loss(fresh, x, y)[1]  # same epoch
    assert all(p.grad is None for p in fresh.net.parameters())


def test_no_mi_grad_ratio_without_the_mi_term(tmp_path):
    x, y = _data()
    assert "train/mi_grad_ratio" not in _logged_training_loss(_miat(tmp_path, 0.0), x, y)[1]


def test_the_grid_cell_runs_miat_at_the_digits_alpha_beside_its_stage1_classifier(compose_cfg):
    """conf/grid_cell/miat.yaml: alpha 0.25 (experiments/miat/README.md: at the paper's 5 the MI
    term outweighs the adversarial loss 3-10 times on digits), warm-up 2, and the compare_with
    PGD-AT is the stage-1 classifier (one cache entry)."""
    cfg = compose_cfg("experiment=grid_default", "grid_cell=miat")
    assert cfg.defense.name == "miat" and cfg.defense.alpha == 0.25
    plan = build_plan(cfg)
    estimators = dict(plan.cell.dependencies)["estimators"]
    classifier = dict(estimators.dependencies)["classifier"].config
    (baseline,) = plan.baselines
    assert classifier.defense.warmup_epochs == 2
    assert classifier.trainer.max_epochs == cfg.trainer.max_epochs == 12
    assert training_key(classifier) == training_key(baseline.config)
