"""The inner maximization of adversarial training: projection, ascent, modes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from robustlab.defenses.inner import InnerAttack, pgd
from robustlab.defenses.optim import build_optimizer, build_schedule
from robustlab.modes import eval_mode


def _toy(seed=0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 3))
    x = torch.rand(8, 1, 4, 4)
    y = torch.randint(0, 3, (8,))
    return net, x, y


@settings(max_examples=15, deadline=None)
@given(
    eps=st.floats(0.01, 0.5),
    steps=st.integers(1, 5),
    norm=st.sampled_from(["linf", "l2"]),
)
def test_pgd_stays_in_the_ball_and_in_pixel_range(eps, steps, norm):
    net, x, y = _toy()
    x_adv = pgd(net, x, y, InnerAttack(eps=eps, steps=steps, norm=norm))
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert (size <= eps + 1e-5).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_pgd_increases_the_loss():
    net, x, y = _toy()
    x_adv = pgd(net, x, y, InnerAttack(eps=0.3, steps=10, random_start=False))
    assert F.cross_entropy(net(x_adv), y) > F.cross_entropy(net(x), y)


def test_default_step_is_a_quarter_of_eps():
    assert InnerAttack(eps=8 / 255).alpha == pytest.approx(2 / 255)


def test_bad_norm_is_a_one_line_error():
    with pytest.raises(ValueError, match=r"norm='l3' is not one of \['linf', 'l2'\]"):
        InnerAttack(eps=0.1, norm="l3")


def test_eval_mode_restores_each_submodule_flag():
    net = nn.Sequential(nn.BatchNorm1d(3), nn.Dropout(0.5))
    net.train()
    net[1].eval()
    with eval_mode(net):
        assert not any(m.training for m in net.modules())
    assert net.training and net[0].training and not net[1].training


@pytest.mark.parametrize("name", ["none", "multistep", "cosine", "onecycle"])
def test_schedules_build(name):
    opt = build_optimizer(nn.Linear(2, 2).parameters(), {"name": "sgd", "lr": 0.1})
    sched = build_schedule(opt, {"name": name, "milestones": [1]}, total_steps=10)
    assert (sched is None) == (name == "none")


def test_unknown_optimizer_names_the_choices():
    with pytest.raises(ValueError, match="optimizer name='rmsprop' is not one of"):
        build_optimizer(nn.Linear(2, 2).parameters(), {"name": "rmsprop", "lr": 0.1})


def test_pgd_at_loss_uses_eval_mode_while_crafting():
    from robustlab.defenses.adversarial import PGDAT

    seen = []
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    net.register_forward_pre_hook(lambda m, i: seen.append(m.training))
    defense = PGDAT(
        net=net,
        name="pgd_at",
        num_classes=3,
        optimizer={"name": "sgd", "lr": 0.1},
        inner={"eps": 0.1, "steps": 3},
    )
    defense.train()
    _, x, y = _toy()
    defense.training_loss(x, y)
    assert seen == [False, False, False, True]
