"""The attack factory: every spec builds and stays in its ball; eps 0, errors, side effects, costs."""

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from robustlab.attacks import attack_rng, build_attack, count_passes, derive_seed
from robustlab.attacks.rng import random_targets

CONF = Path(__file__).resolve().parents[1] / "conf" / "attack"
NAMES = [
    "fgsm", "pgd", "pgd_l2", "cw", "apgd_ce", "apgd_dlr", "apgd_t", "fab", "square", "eot_pgd",
    "autoattack", "autoattack_rand",
]  # fmt: skip
EPS = {"linf": 0.1, "l2": 0.5}
QUICK = {"steps": 3, "queries": 20, "eot_iter": 2}


def spec(name: str, **quick) -> dict:
    """conf/attack/NAME.yaml (a base config, no defaults list) as a plain dict, named NAME."""
    cfg = OmegaConf.merge(
        {"threat": {"eps": 0.1, "eps_l2": 0.5}}, {"a": OmegaConf.load(CONF / f"{name}.yaml")}
    )
    s = OmegaConf.to_container(cfg, resolve=True)["a"]
    s.update({k: v for k, v in quick.items() if k in s})
    return {**s, "name": name}


def toy(num_classes: int = 10) -> nn.Module:
    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, num_classes))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return net.eval()


def data(n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 1, 4, 4, generator=g), torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize("name", NAMES)
def test_every_spec_builds_and_stays_in_ball(name):
    model, (x, y) = toy(), data()
    s = spec(name, **QUICK)
    eps = EPS[s["norm"]]
    runner = build_attack(s, model, seed=0, num_classes=10, eps=eps)
    x_adv = runner(x, y)
    assert runner.name == name and runner.norm == s["norm"] and runner.params["eps"] == eps
    assert x_adv.shape == x.shape and not x_adv.requires_grad
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    delta = (x_adv - x).flatten(1)
    norm = delta.abs().amax(1) if s["norm"] == "linf" else delta.norm(dim=1)
    assert (norm <= eps + 1e-6).all()


@pytest.mark.parametrize("name", ["cw", "fab", "autoattack"])
def test_model_flags_grads_and_mode_untouched(name):
    model = toy()
    model[1].weight.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    model.train()
    build_attack(spec(name, **QUICK), model, seed=0, num_classes=10, eps=EPS[spec(name)["norm"]])(
        *data()
    )
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert model.training


def test_eps_zero_returns_input_without_any_pass():
    model, (x, y) = toy(), data()
    with count_passes(model) as c:
        out = build_attack(spec("pgd"), model, seed=0, num_classes=10, eps=0.0)(x, y)
    assert out is x and c.forward_rows == 0


def test_unknown_kind_and_key_raise():
    with pytest.raises(ValueError, match=r"'nope'; valid kinds: \['apgd', 'autoattack'"):
        build_attack({"kind": "nope"}, toy(), seed=0, num_classes=10, eps=0.1)
    with pytest.raises(ValueError, match="stepz"):
        build_attack({"kind": "pgd", "stepz": 3}, toy(), seed=0, num_classes=10, eps=0.1)
    with pytest.raises(ValueError, match="norm='l2' is not one of"):
        build_attack({"kind": "fgsm", "norm": "l2"}, toy(), seed=0, num_classes=10, eps=0.1)


def test_effective_params_recorded():
    r = build_attack(spec("pgd"), toy(), seed=0, num_classes=10, eps=0.1)
    assert r.params["steps"] == 20 and r.params["step_size"] == pytest.approx(2.5 * 0.1 / 20)
    r = build_attack(spec("apgd_t"), toy(4), seed=0, num_classes=4, eps=0.1)
    assert r.params["n_target_classes"] == 3 and r.params["targeted"]


def test_cw_rejects_outside_ball():
    model, (x, y) = toy(), data()
    x_adv = build_attack(spec("cw", steps=20), model, seed=0, num_classes=10, eps=1e-3)(x, y)
    changed = (x_adv != x).flatten(1).any(1)
    assert ((x_adv - x).flatten(1).norm(dim=1)[changed] <= 1e-3).all()


def test_targeted_pgd_reaches_its_seeded_random_targets():
    model, (x, y) = toy(), data(32)
    runner = build_attack(
        spec("pgd", targeted=True, steps=30), model, seed=0, num_classes=10, eps=1.0
    )
    x_adv = runner(x, y)
    with attack_rng(derive_seed(0, "pgd", 1.0, 0)):
        targets = random_targets(y, 10)
    assert (targets != y).all()
    assert (model(x_adv).argmax(1) == targets).float().mean() > 0.7  # chance: 0.1


def test_count_passes_pgd_exact_and_hooks_removed():
    model, (x, y) = toy(), data(8)
    k = 5
    with count_passes(model) as c:
        build_attack(spec("pgd", steps=k), model, seed=0, num_classes=10, eps=0.1)(x, y)
    # torchattacks PGD: one forward and one backward per step, none for the random start
    assert (c.forward_rows, c.backward_rows) == (k * 8, k * 8)
    assert not model._forward_pre_hooks and not model._forward_hooks


def test_restarts_never_weaker_than_one_run():
    model, (x, y) = toy(), data(32)
    one = build_attack(spec("pgd", steps=2), model, seed=0, num_classes=10, eps=0.05)
    five = build_attack(
        {**spec("pgd", steps=2), "restarts": 5}, model, seed=0, num_classes=10, eps=0.05
    )
    fooled = [(model(r(x, y)).argmax(1) != y).sum() for r in (one, five)]
    assert fooled[1] >= fooled[0]
