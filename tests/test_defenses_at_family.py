"""TRADES, MART, fast AT and M2AT: losses against direct computations, crafting, masks, configs."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from robustlab.defenses.adversarial import PGDAT
from robustlab.defenses.fast_at import FastAT
from robustlab.defenses.m2at import M2AT
from robustlab.defenses.mart import mart_loss
from robustlab.defenses.masks import cutmix_images, mix_labels, mixup_images
from robustlab.defenses.trades import TRADES, trades_loss
from robustlab.plan.compose import defense_option

EPS = 0.1
COMMON = dict(name="t", num_classes=3, optimizer={"name": "sgd", "lr": 0.1}, val_attack=None)


def _toy(seed=0, n=8):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 3))
    return net, torch.rand(n, 1, 4, 4), torch.randint(0, 3, (n,))


def _record(net):
    """Record (input, training flag) of every forward of ``net``."""
    calls = []
    net.register_forward_pre_hook(lambda m, args: calls.append((args[0].detach(), m.training)))
    return calls


def _inner(steps=2, **kw):
    return {"eps": EPS, "steps": steps, **kw}


LOGITS_CLEAN = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-0.5, 1.5, 0.0], [1.0, 1.0, 3.0]])
LOGITS_ADV = torch.tensor([[0.5, 1.0, -0.5], [0.3, -0.2, 0.9], [1.0, 0.5, 0.2], [2.0, 0.0, 1.0]])
LABELS = torch.tensor([0, 2, 1, 2])


def _softmax_row(row):
    e = [math.exp(v) for v in row]
    return [v / sum(e) for v in e]


def test_trades_loss_matches_a_direct_computation():
    beta, total_ce, total_kl = 6.0, 0.0, 0.0
    for lc, la, y in zip(LOGITS_CLEAN.tolist(), LOGITS_ADV.tolist(), LABELS.tolist()):
        p, q = _softmax_row(lc), _softmax_row(la)
        total_ce += -math.log(p[y])
        total_kl += sum(pk * (math.log(pk) - math.log(qk)) for pk, qk in zip(p, q))
    expected = torch.tensor((total_ce + beta * total_kl) / len(LABELS))
    torch.testing.assert_close(trades_loss(LOGITS_CLEAN, LOGITS_ADV, LABELS, beta), expected)


def test_mart_loss_matches_a_direct_computation():
    beta, total_bce, total_kl = 6.0, 0.0, 0.0
    for lc, la, y in zip(LOGITS_CLEAN.tolist(), LOGITS_ADV.tolist(), LABELS.tolist()):
        p, q = _softmax_row(lc), _softmax_row(la)
        runner_up = max((k for k in range(3) if k != y), key=lambda k: q[k])
        total_bce += -math.log(q[y]) - math.log(1.0001 - q[runner_up] + 1e-12)
        kl = sum(pk * (math.log(pk) - math.log(qk + 1e-12)) for pk, qk in zip(p, q))
        total_kl += kl * (1.0000001 - p[y])
    expected = torch.tensor((total_bce + beta * total_kl) / len(LABELS))
    torch.testing.assert_close(mart_loss(LOGITS_CLEAN, LOGITS_ADV, LABELS, beta), expected)


def test_trades_crafts_from_small_noise_in_eval_mode_within_eps():
    net, x, _ = _toy()
    defense = TRADES(net=net, inner=_inner(steps=3), **COMMON)
    net.train()
    calls = _record(net)
    torch.manual_seed(1)
    x_adv = defense.craft_kl(x)
    torch.manual_seed(1)
    expected_start = x + 0.001 * torch.randn_like(x)
    torch.testing.assert_close(calls[0][0], x)  # the clean target distribution
    torch.testing.assert_close(calls[1][0], expected_start)
    assert len(calls) == 4 and not any(training for _, training in calls)
    assert (x_adv - x).abs().max() <= EPS + 1e-6 and net.training


def test_fast_at_is_one_fgsm_step_inside_the_ball_and_pixel_range():
    net, x, y = _toy()
    defense = FastAT(net=net, inner=_inner(steps=1, eps=0.3), **COMMON)
    assert defense.inner.alpha == pytest.approx(1.25 * 0.3)
    calls = _record(net)
    x_adv = defense.craft(x, y)
    assert len(calls) == 1 and not calls[0][1]
    assert (x_adv - x).abs().max() <= 0.3 + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    defense.training_loss(x, y)
    assert len(calls) == 3


def test_fast_at_rejects_more_than_one_step():
    net, _, _ = _toy()
    with pytest.raises(ValueError, match=r"fast_at inner.steps=2 must be 1"):
        FastAT(net=net, inner=_inner(steps=2), **COMMON)


def _m2at(net, **options):
    return M2AT(net=net, inner=_inner(), **COMMON, **options)


@pytest.mark.parametrize("kind", ["box", "pixel"])
@pytest.mark.parametrize("mixing", ["mixup", "cutmix"])
def test_m2at_with_full_masks_and_weight_one_is_pgd_at(kind, mixing):
    net, x, y = _toy()
    torch.manual_seed(3)
    x_ref = PGDAT(net=net, inner=_inner(), **COMMON).craft(x, y)
    defense = _m2at(
        net, mask_kind=kind, mask_area="fixed", mask_ratio=1.0, mixing=mixing, mix_lam=1.0
    )
    torch.manual_seed(3)
    x_mix, soft = defense.mixed_batch(x, y)
    assert torch.equal(x_mix, x_ref)
    assert torch.equal(soft, F.one_hot(y, 3).float())


@pytest.mark.parametrize("kind", ["box", "pixel"])
def test_fixed_mask_area_holds_over_many_draws(kind):
    net, _, _ = _toy()
    torch.manual_seed(0)
    masks = _m2at(net, mask_kind=kind, mask_area="fixed", mask_ratio=0.3).masks(2000, 32, 32)
    assert masks.shape == (2000, 1, 32, 32) and masks.dtype == torch.bool
    assert abs(masks.float().mean().item() - 0.3) < 0.02


@pytest.mark.parametrize("kind", ["box", "pixel"])
def test_beta_mask_area_has_the_beta_mean(kind):
    net, _, _ = _toy()
    torch.manual_seed(0)
    defense = _m2at(net, mask_kind=kind, mask_area="beta", mask_alpha=2.0, mask_beta=5.0)
    areas = defense.masks(2000, 32, 32).float().mean(dim=(1, 2, 3))
    assert abs(areas.mean().item() - 2 / 7) < 0.02
    assert areas.std().item() > 0.1  # areas vary per mask (Beta(2, 5) std is 0.16)


@pytest.mark.parametrize("kind", ["box", "pixel"])
def test_complementary_masks_sum_to_one(kind):
    net, _, _ = _toy()
    defense = _m2at(net, mask_kind=kind, complementary_masks=True)
    m1, m2 = defense.mask_pair(50, 8, 8)
    assert torch.equal(m1.int() + m2.int(), torch.ones(50, 1, 8, 8, dtype=torch.int))


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 6),
    num_classes=st.integers(2, 7),
    side=st.integers(1, 9),
    lam=st.one_of(st.none(), st.floats(0.0, 1.0)),
    mixing=st.sampled_from(["mixup", "cutmix"]),
)
def test_mixed_labels_sum_to_one(n, num_classes, side, lam, mixing):
    lam = torch.rand(n) if lam is None else torch.full((n,), lam)
    x1, x2 = torch.rand(n, 2, side, side), torch.rand(n, 2, side, side)
    if mixing == "cutmix":
        _, lam = cutmix_images(x1, x2, lam)
    else:
        assert mixup_images(x1, x2, lam).shape == x1.shape
    y1, y2 = torch.randint(0, num_classes, (n,)), torch.randint(0, num_classes, (n,))
    soft = mix_labels(y1, y2, lam, num_classes)
    torch.testing.assert_close(soft.sum(1), torch.ones(n))
    assert (soft >= 0).all()


@pytest.mark.parametrize(
    ("kind", "area", "complementary", "mixing", "mix_lam"),
    [
        ("box", "fixed", False, "mixup", None),
        ("pixel", "beta", True, "cutmix", 0.7),
        ("box", "beta", True, "cutmix", None),
        ("pixel", "fixed", False, "mixup", 0.7),
    ],
)
def test_every_m2at_option_value_trains(kind, area, complementary, mixing, mix_lam):
    net, x, y = _toy()
    defense = _m2at(
        net,
        mask_kind=kind,
        mask_area=area,
        mask_ratio=0.4,
        complementary_masks=complementary,
        mixing=mixing,
        mix_lam=mix_lam,
    )
    x_mix, soft = defense.mixed_batch(x, y)
    assert x_mix.min() >= 0 and x_mix.max() <= 1
    torch.testing.assert_close(soft.sum(1), torch.ones(len(y)))
    loss, _ = defense.training_loss(x, y)
    loss.backward()
    assert torch.isfinite(loss)


@pytest.mark.parametrize(
    ("option", "value", "choices"),
    [
        ("mask_kind", "star", r"\['box', 'pixel'\]"),
        ("mask_area", "gauss", r"\['fixed', 'beta'\]"),
        ("mixing", "blend", r"\['mixup', 'cutmix'\]"),
    ],
)
def test_bad_m2at_option_is_a_one_line_error(option, value, choices):
    net, _, _ = _toy()
    with pytest.raises(ValueError, match=rf"^m2at {option}='{value}' is not one of {choices}$"):
        _m2at(net, **{option: value})


def test_m2at_fraction_out_of_range_is_an_error():
    net, _, _ = _toy()
    with pytest.raises(ValueError, match=r"m2at mask_ratio=1.5 must be in \[0, 1\]"):
        _m2at(net, mask_ratio=1.5)


@pytest.mark.parametrize("name", ["trades", "mart", "fast_at", "m2at"])
def test_defense_instantiates_from_its_yaml_and_trains(name):
    cfg = OmegaConf.create({"dataset": {"num_classes": 3, "eps": EPS}})
    cfg.defense = defense_option(name, "defense")
    net, x, y = _toy()
    defense = instantiate(cfg.defense, net=net, _convert_="all")
    assert defense.name == name and defense.inner.eps == EPS
    loss, _ = defense.training_loss(x, y)
    loss.backward()
    assert torch.isfinite(loss)


class _CountingPGDAT(PGDAT):
    """PGD-AT that counts the batches trained with its adversarial loss."""

    adversarial_batches = 0

    def training_loss(self, x, y):
        self.adversarial_batches += 1
        return super().training_loss(x, y)


@pytest.mark.parametrize(("warmup", "epochs", "adversarial"), [(1, 1, 0), (1, 2, 2), (0, 1, 2)])
def test_warmup_epochs_train_clean_first_then_the_defense_loss(warmup, epochs, adversarial):
    net, x, y = _toy(n=8)
    defense = _CountingPGDAT(net, **COMMON, inner=_inner(), warmup_epochs=warmup)
    before = [p.detach().clone() for p in net.parameters()]
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(defense, DataLoader(TensorDataset(x, y), batch_size=4))
    assert defense.adversarial_batches == adversarial
    assert any(not torch.equal(b, p) for b, p in zip(before, net.parameters()))


def test_warmup_loss_is_clean_cross_entropy():
    net, x, y = _toy()
    loss, logits = PGDAT(net, **COMMON, inner=_inner(), warmup_epochs=1).warmup_loss(x, y)
    assert torch.equal(logits, net(x))
    assert torch.equal(loss, F.cross_entropy(net(x), y))


def test_negative_warmup_is_a_one_line_error():
    net, _, _ = _toy()
    with pytest.raises(ValueError, match="warmup_epochs=-1 must be >= 0"):
        PGDAT(net, **COMMON, inner=_inner(), warmup_epochs=-1)


class _Outputs(pl.Callback):
    """Each training batch's loss and size."""

    def __init__(self):
        self.batches = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.batches.append((float(outputs["loss"]), len(batch[1])))


@pytest.mark.parametrize(("warmup", "metric"), [(0, "train/adv_acc"), (1, "train/clean_acc")])
def test_training_metrics_come_from_the_step_s_own_logits(warmup, metric):
    """PGD-AT runs inner steps + 1 forwards per batch (no clean forward for a metric); the epoch
    logs train/loss (the size-weighted mean of the batch losses) and the accuracy of the logits
    the loss was computed on: adversarial ones, or clean ones in a warm-up epoch."""
    net, x, y = _toy(n=10)
    calls = _record(net)
    defense = PGDAT(net, **COMMON, inner=_inner(steps=3), warmup_epochs=warmup)
    outputs = _Outputs()
    trainer = pl.Trainer(
        max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[outputs],
    )  # fmt: skip
    trainer.fit(defense, DataLoader(TensorDataset(x, y), batch_size=4))
    assert len(calls) == 3 * (1 if warmup else 4)  # 3 batches; PGD-3 + the training forward
    logged = {k: float(v) for k, v in trainer.logged_metrics.items()}
    assert set(logged) == {"train/loss", metric}
    losses = sum(loss * n for loss, n in outputs.batches) / 10
    assert logged["train/loss"] == pytest.approx(losses, rel=1e-6)
    assert round(logged[metric] * 10, 5) in range(11)  # a count of 10 examples
