"""Mixup and Interpolated AT training losses (Zhang et al. 2018; Lamb et al. 2019; Pang et al. 2020)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import robustlab.defenses.adversarial as adversarial
from robustlab.defenses.inner import InnerAttack, pgd
from robustlab.defenses.mixup import InterpolatedAT, Mixup, draw_mix, mix

COMMON = dict(name="t", num_classes=3, optimizer={"name": "adam", "lr": 1e-3})
INNER = dict(eps=0.1, steps=3, random_start=False)


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))


def _soft_ce(logits, target):
    return -(target * logits.log_softmax(1)).sum(1).mean()


def _batch():
    torch.manual_seed(1)
    return torch.rand(6, 1, 4, 4), torch.tensor([0, 1, 2, 0, 1, 2])


def test_mixup_with_lam_one_is_plain_cross_entropy():
    defense, (x, y) = Mixup(_net(), **COMMON), _batch()
    loss = defense.mixup_loss(x, y, (1.0, torch.randperm(6)))
    torch.testing.assert_close(loss, F.cross_entropy(defense.net(x), y))


def test_soft_labels_sum_to_one_and_mix_inputs():
    x, y = _batch()
    lam, perm = draw_mix(1.0, 6, x.device)
    x_mix, target = mix(x, y, 3, (lam, perm))
    torch.testing.assert_close(target.sum(1), torch.ones(6))
    torch.testing.assert_close(x_mix, lam * x + (1 - lam) * x[perm])
    assert 0 <= lam <= 1 and sorted(perm.tolist()) == list(range(6))


def test_training_loss_returns_loss_and_none():
    loss, logits = Mixup(_net(), alpha=0.4, **COMMON).training_loss(*_batch())
    assert loss.ndim == 0 and loss.requires_grad and logits is None


def test_bad_alpha_is_a_one_line_error():
    with pytest.raises(ValueError, match=r"alpha=0 must be > 0"):
        Mixup(_net(), alpha=0, **COMMON)


def test_iat_loss_is_half_mixed_adv_plus_half_mixed_clean():
    defense, (x, y) = InterpolatedAT(_net(), inner=INNER, **COMMON), _batch()
    adv_draw, clean_draw = (0.3, torch.randperm(6)), (0.8, torch.randperm(6))
    torch.manual_seed(5)
    x_adv, logits = defense.craft_on_predictions(x)
    loss = defense.interpolated_loss(x, x_adv, y, adv_draw, clean_draw)

    with torch.no_grad():
        torch.testing.assert_close(logits, defense.net(x))  # clean: the training accuracy's
        predicted = defense.net(x).argmax(1)
    expected_adv = pgd(defense.net, x, predicted, InnerAttack(**INNER))
    torch.testing.assert_close(x_adv, expected_adv)
    a_x, a_t = (0.3 * x_adv + 0.7 * x_adv[adv_draw[1]]), F.one_hot(y, 3).float()
    a_t = 0.3 * a_t + 0.7 * a_t[adv_draw[1]]
    c_x, c_t = (0.8 * x + 0.2 * x[clean_draw[1]]), F.one_hot(y, 3).float()
    c_t = 0.8 * c_t + 0.2 * c_t[clean_draw[1]]
    direct = 0.5 * _soft_ce(defense.net(a_x), a_t) + 0.5 * _soft_ce(defense.net(c_x), c_t)
    torch.testing.assert_close(loss, direct)


def test_iat_crafts_in_eval_mode_on_predicted_labels(monkeypatch):
    net = nn.Sequential(_net(), nn.Dropout(0.5))
    defense, (x, _) = InterpolatedAT(net, inner=INNER, **COMMON), _batch()
    net.train()
    with torch.no_grad():
        predicted = net.eval()(x).argmax(1)
    net.train()
    y = (predicted + 1) % 3  # true labels that differ from every prediction
    seen = {}

    def spy(model, x_, target, attack, **kwargs):
        seen.update(training=model.training, target=target.clone())
        return pgd(model, x_, target, attack, **kwargs)

    monkeypatch.setattr(adversarial, "pgd", spy)
    loss, _ = defense.training_loss(x, y)
    assert seen["training"] is False and net.training
    assert torch.equal(seen["target"], predicted)
    assert torch.isfinite(loss)
