"""RNG hygiene: attacks leave the global generator as they found it and draw from the cell seed."""

import pytest
import torch
from torch import nn

from robustlab.attacks import attack_rng, build_attack, derive_seed
from robustlab.attacks.rng import random_targets

QUICK = {"steps": 3, "queries": 20, "eot_iter": 2}
SPECS = {
    "fgsm": {"kind": "fgsm", "targeted": True},
    "pgd": {"kind": "pgd", "targeted": True},
    "pgd_l2": {"kind": "pgd", "norm": "l2"},
    "cw": {"kind": "cw", "norm": "l2", "steps": 3},
    "apgd_ce": {"kind": "apgd", "steps": 3},
    "apgd_dlr": {"kind": "apgd", "loss": "dlr", "steps": 3, "eot_iter": 2},
    "apgd_t": {"kind": "apgd", "loss": "dlr", "targeted": True, "steps": 3},
    "fab": {"kind": "fab", "targeted": True, "steps": 3},
    "square": {"kind": "square", "queries": 20, "targeted": True},
    "eot_pgd": {"kind": "eot_pgd", "steps": 3, "eot_iter": 2},
    "autoattack": {"kind": "autoattack", "steps": 3, "queries": 20},
    "autoattack_rand": {"kind": "autoattack", "version": "rand", "steps": 3, "eot_iter": 2},
}


def toy() -> nn.Module:
    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 10))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return net.eval()


def data(n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 1, 4, 4, generator=g), torch.randint(0, 10, (n,), generator=g)


def run(name: str, seed: int = 0, calls: int = 1, model: nn.Module | None = None) -> list:
    s = {"name": name, **SPECS[name]}
    model = model or toy()
    runner = build_attack(s, model, seed=seed, num_classes=10, eps=0.5 if "l2" in name else 0.1)
    x, y = data()
    return [runner(x, y) for _ in range(calls)]


@pytest.mark.parametrize("name", list(SPECS))
def test_global_rng_state_untouched(name):
    model = toy()  # building a layer draws from the global generator: do it before the snapshot
    torch.manual_seed(123)
    torch.rand(3)
    before = torch.get_rng_state()
    run(name, model=model)
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize("name", ["pgd", "apgd_ce", "square", "autoattack"])
def test_same_seed_same_result(name):
    torch.manual_seed(1)
    a = run(name, seed=7)[0]
    torch.manual_seed(2)  # the caller's global state must not matter
    b = run(name, seed=7)[0]
    assert torch.equal(a, b)


def test_different_seeds_and_batches_get_different_random_starts():
    spec = {"kind": "pgd", "steps": 1}
    x, y = data()

    def start(seed):
        return build_attack(spec, toy(), seed=seed, num_classes=10, eps=0.1)(x, y)

    assert not torch.equal(start(0), start(1))
    first, second = run("pgd", calls=2)
    assert not torch.equal(first, second)


def test_attack_rng_restores_and_is_deterministic():
    before = torch.get_rng_state()
    with attack_rng(5):
        a = torch.rand(4)
    with attack_rng(5):
        b = torch.rand(4)
    assert torch.equal(a, b) and torch.equal(torch.get_rng_state(), before)


def test_derive_seed_stable_and_distinct():
    assert derive_seed(0, "pgd", 0.1, 0) == derive_seed(0, "pgd", 0.1, 0)
    seeds = {derive_seed(0, "pgd", 0.1, k) for k in range(50)}
    assert len(seeds) == 50 and all(0 <= s < 2**31 for s in seeds)


def test_random_targets_are_wrong_and_cover_all_other_classes():
    y = torch.zeros(2000, dtype=torch.long)
    with attack_rng(0):
        t = random_targets(y, 10)
    assert (t != y).all() and set(t.tolist()) == set(range(1, 10))
