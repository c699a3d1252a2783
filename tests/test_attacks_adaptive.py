"""EOT and BPDA on toy predictors whose right answers are known by construction."""

import torch
from torch import nn

from robustlab.attacks import EOT, adaptive_model, build_attack
from robustlab.inference.base import Predictor
from robustlab.inference.bpda import bpda


def majority_net() -> nn.Module:
    """Class 0 iff more than half of the 16 pixels are 1 (on binary inputs)."""
    linear = nn.Linear(16, 2)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[1.0] * 16, [-1.0] * 16]))
        linear.bias.copy_(torch.tensor([-8.0, 8.0]))
    return nn.Sequential(nn.Flatten(), linear).eval()


class Rounded(Predictor):
    """Binarizes pixels with ``torch.round`` (no gradient) before the net; BPDA: straight-through."""

    differentiable = False

    def forward(self, x):
        q = bpda(torch.round, x) if self.use_bpda else torch.round(x)
        return self.net(q)


def binary_points(margin: float, n: int = 32):
    """Pixels at 0.5 +- margin; labels from the majority of rounded pixels (never a tie)."""
    g = torch.Generator().manual_seed(0)
    ones = torch.where(torch.arange(n) % 2 == 0, 9, 7)
    bits = (torch.rand(n, 16, generator=g).argsort(1) < ones[:, None]).float()
    x = (0.5 + margin * (2 * bits - 1)).view(n, 1, 4, 4)
    return x, (ones < 8).long()


def pgd(model, eps):
    spec = {"kind": "pgd", "steps": 10, "random_start": False}
    return build_attack(spec, model, seed=0, num_classes=2, eps=eps)


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def test_bpda_needed_to_break_rounding():
    x, y = binary_points(margin=0.05)
    pred = Rounded(majority_net())
    assert accuracy(pred, x, y) == 1.0
    x_plain = pgd(pred, eps=0.1)(x, y)  # zero gradient through round: no step is taken
    assert torch.equal(x_plain, x)
    model, ctx = adaptive_model(pred, eot_draws=1)
    assert model is pred
    with ctx():
        assert pred.use_bpda
        x_bpda = pgd(model, eps=0.1)(x, y)
    assert not pred.use_bpda  # scoring uses the real forward
    assert accuracy(pred, x_bpda, y) <= 0.1


def test_oblivious_cannot_beat_rounding_that_absorbs_eps():
    x, y = binary_points(margin=0.3)  # pixels at 0.2 / 0.8: eps 0.1 never crosses 0.5
    pred = Rounded(majority_net())
    x_adv = pgd(pred.net, eps=0.1)(x, y)  # crafted on the bare net
    assert accuracy(pred.net, x_adv, y) <= 0.1  # the bare net is fooled...
    assert accuracy(pred, x_adv, y) == 1.0  # ...the rounding absorbs it


class Noisy(Predictor):
    """Gaussian input noise on every forward."""

    randomized = True

    def forward(self, x):
        return self.net(x + 0.3 * torch.randn_like(x))


def test_eot_averages_draws_and_passes_gradients():
    torch.manual_seed(0)
    pred = Noisy(nn.Sequential(nn.Flatten(), nn.Linear(16, 3)))
    x = torch.rand(4, 1, 4, 4)
    model, ctx = adaptive_model(pred, eot_draws=20)
    assert isinstance(model, EOT) and model.output == "log_probs"
    assert not torch.equal(model(x), model(x))
    assert torch.allclose(model(x).exp().sum(1), torch.ones(4))
    var_one = torch.stack([EOT(pred, 1)(x) for _ in range(20)]).var(0).mean()
    var_many = torch.stack([model(x) for _ in range(20)]).var(0).mean()
    assert var_many < var_one / 5
    x.requires_grad_(True)
    with ctx():
        model(x)[:, 0].sum().backward()
    assert x.grad.abs().sum() > 0


def test_bpda_is_straight_through():
    x = torch.rand(3, 5, requires_grad=True)
    out = bpda(torch.round, x)
    assert torch.equal(out, torch.round(x))
    (out * torch.arange(5.0)).sum().backward()
    assert torch.equal(x.grad, torch.arange(5.0).expand(3, 5))
