"""AutoAttack: reference parameters by default, and sane numbers on a toy linear classifier."""

import pytest
import torch
from torch import nn

from robustlab.attacks import AutoAttack, build_attack
from robustlab.attacks.autoattack import REFERENCE

QUICK = {"steps": 10, "queries": 100}


def toy_problem(n: int = 64, num_classes: int = 10):
    """Gaussian class clusters in [0,1]^16 and their nearest-mean linear classifier."""
    g = torch.Generator().manual_seed(0)
    mu = 0.2 + 0.6 * torch.rand(num_classes, 16, generator=g)
    y = torch.arange(n) % num_classes
    x = (mu[y] + 0.08 * torch.randn(n, 16, generator=g)).clamp(0, 1).view(n, 1, 4, 4)
    linear = nn.Linear(16, num_classes)
    with torch.no_grad():
        linear.weight.copy_(20 * mu)
        linear.bias.copy_(-10 * (mu**2).sum(1))
    return nn.Sequential(nn.Flatten(), linear).eval(), x, y


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def test_standard_defaults_are_the_reference():
    model, _, _ = toy_problem()
    aa = AutoAttack(model, norm="linf", eps=8 / 255, num_classes=10)
    ce, t, fab, sq = (aa.components[k] for k in ("apgd_ce", "apgd_t", "fab_t", "square"))
    assert list(aa.components) == ["apgd_ce", "apgd_t", "fab_t", "square"]
    assert ce.loss == "ce" and t.loss == "dlr" and ce.steps == t.steps == fab.steps == 100
    assert ce.restarts == t.restarts == fab.restarts == sq.attack.n_restarts == 1
    assert ce.rho == t.rho == 0.75 and ce.n_target_classes == 0
    assert t.n_target_classes == fab.n_target_classes == 9
    sq = sq.attack
    assert sq.n_queries == 5000 and sq.p_init == 0.8 and sq.loss == "margin"
    assert not sq.rescale_schedule
    assert sq.eps == 8 / 255 and sq.norm == "Linf"
    assert all(p.eps == 8 / 255 and p.norm == "linf" for p in (ce, t, fab))


def test_target_classes_capped_and_params_recorded():
    model, _, _ = toy_problem(num_classes=100)
    aa = AutoAttack(model, norm="l2", eps=0.5, num_classes=100)
    assert aa.components["apgd_t"].n_target_classes == aa.components["fab_t"].n_target_classes == 9
    model, _, _ = toy_problem(num_classes=5)
    runner = build_attack({"kind": "autoattack"}, model, seed=0, num_classes=5, eps=0.1)
    assert runner.params["n_target_classes"] == 4
    assert runner.params["steps"] == REFERENCE["steps"] and runner.params["queries"] == 5000


def test_rand_version_is_apgd_ce_and_dlr_with_eot_20():
    model, _, _ = toy_problem()
    aa = AutoAttack(model, norm="linf", eps=0.1, num_classes=10, version="rand")
    assert {
        k: (a.attack.loss, a.attack.eot_iter, a.attack.steps) for k, a in aa.components.items()
    } == {
        "apgd_ce": ("ce", 20, 100),
        "apgd_dlr": ("dlr", 20, 100),
    }


def test_too_few_classes_raise():
    model, _, _ = toy_problem(num_classes=3)
    with pytest.raises(ValueError, match="4 classes"):
        AutoAttack(model, norm="linf", eps=0.1, num_classes=3)


def test_autoattack_at_most_pgd_and_at_most_clean():
    model, x, y = toy_problem()
    eps = 0.1
    clean = accuracy(model, x, y)
    pgd = build_attack({"kind": "pgd", "steps": 20}, model, seed=0, num_classes=10, eps=eps)
    aa = build_attack({"kind": "autoattack", **QUICK}, model, seed=0, num_classes=10, eps=eps)
    x_aa = aa(x, y)
    robust_pgd, robust_aa = accuracy(model, pgd(x, y), y), accuracy(model, x_aa, y)
    assert 0 < robust_aa <= robust_pgd < clean
    broken = torch.stack(list(aa.last_component_success.values())).sum(0)
    assert broken.max() <= 1  # each point is credited to the first part that broke it
    assert torch.equal(broken.bool(), (model(x).argmax(1) == y) & (model(x_aa).argmax(1) != y))


def test_eps_zero_is_clean_accuracy():
    model, x, y = toy_problem()
    aa = build_attack({"kind": "autoattack", **QUICK}, model, seed=0, num_classes=10, eps=0.0)
    assert accuracy(model, aa(x, y), y) == accuracy(model, x, y)
    assert aa.last_component_success == {}


def test_target_rows_is_checked_and_only_changes_speed():
    model, x, y = toy_problem(n=20)
    with pytest.raises(ValueError, match=r"attack\.autoattack\.target_rows=0 must be a positive"):
        build_attack(
            {"kind": "autoattack", "target_rows": 0}, model, seed=0, num_classes=10, eps=0.1
        )
    runs = [
        build_attack(
            {"kind": "autoattack", **QUICK, "target_rows": rows},
            model,
            seed=0,
            num_classes=10,
            eps=0.1,
        )
        for rows in (3, None)
    ]
    verdicts = [model(run(x, y, call=0)).argmax(1) == y for run in runs]
    assert torch.equal(verdicts[0], verdicts[1])
    assert "target_rows" not in runs[0].params


def test_a_null_batch_size_takes_the_callers_batch():
    """A spec built outside Hydra (batch_size null) passes the evaluation's batch, not all of a
    call's points at once; its own value wins."""
    model, _, _ = toy_problem()
    for own, caller, expected in ((None, 16, 16), (8, 16, 8), (None, None, None)):
        spec = {"kind": "autoattack", **QUICK, "batch_size": own}
        run = build_attack(spec, model, seed=0, num_classes=10, eps=0.1, batch_size=caller)
        assert run.params["batch_size"] == expected and run._composite.batch_size == expected
