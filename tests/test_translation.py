"""Translation defense (Amich & Eshete 2022): translator, gate, predictor, shifts, defense."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from robustlab.data.shifts import SHIFTS, apply_shift
from robustlab.defenses.translation.defense import Translation
from robustlab.defenses.translation.gate import Gate
from robustlab.defenses.translation.patchgan import PatchGAN
from robustlab.defenses.translation.unet import UNet
from robustlab.evaluation.natural import shift_records
from robustlab.inference.translation import TranslationPredictor


def tiny_net(bn: bool = False) -> nn.Module:
    torch.manual_seed(0)
    layers = [nn.Conv2d(1, 4, 3, padding=1)]
    layers += [nn.BatchNorm2d(4)] if bn else []
    layers += [nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10)]
    return nn.Sequential(*layers).eval()


def random_translator() -> UNet:
    """A U-Net that is not the identity (its zero-initialised head gets random weights)."""
    torch.manual_seed(1)
    unet = UNet(1, depth=2, width=4)
    nn.init.normal_(unet.head[1].weight, std=0.5)
    return unet.eval()


def predictor(gate: Gate, translator: nn.Module, net: nn.Module) -> TranslationPredictor:
    return TranslationPredictor(net, translator=translator, gate=gate).eval()


def test_identity_translator_leaves_predictions_unchanged():
    net, x = tiny_net(), torch.rand(16, 1, 8, 8)
    p = predictor(Gate(kind="always"), UNet(1, depth=3, width=4).eval(), net)
    with torch.no_grad():
        assert torch.equal(p(x), net(x))
    assert p.last_flags.all()


def test_passed_inputs_get_exactly_the_bare_classifier_output():
    net, x, y = tiny_net(), torch.rand(64, 1, 8, 8), torch.randint(10, (64,))
    gate = Gate(kind="score", score="energy", fpr=0.5)
    gate.calibrate(torch.rand(64, 1, 8, 8), net)
    p = predictor(gate, random_translator(), net)
    with torch.no_grad():
        out, bare = p(x), net(x)
    passed = ~p.last_flags
    assert 0 < int(passed.sum()) < len(x)
    assert torch.equal(out[passed], bare[passed])
    acc = (out.argmax(1) == y)[passed].float().mean()
    assert acc == (bare.argmax(1) == y)[passed].float().mean()
    assert not torch.equal(out[~passed], bare[~passed])


@settings(max_examples=25, deadline=None)
@given(
    fpr=st.floats(0.0, 0.9),
    n=st.integers(1, 80),
    score=st.sampled_from(["max_softmax", "energy"]),
    seed=st.integers(0, 1000),
)
def test_calibrated_gate_fpr_is_within_the_configured_rate(fpr, n, score, seed):
    torch.manual_seed(seed)
    x = (torch.rand(n, 1, 8, 8) * 4).round() / 4  # coarse pixels: tied scores happen
    net, gate = tiny_net(), Gate(kind="score", score=score, fpr=fpr)
    realized = gate.calibrate(x, net)
    assert realized <= fpr
    assert int(gate.flags(x, net).sum()) / n == realized


def test_detector_gate_is_calibrated_and_always_flags_everything():
    x = torch.rand(50, 1, 8, 8)
    detector = Gate(kind="detector", fpr=0.1)
    assert detector.calibrate(x, tiny_net()) <= 0.1
    assert Gate(kind="always").flags(x, tiny_net()).all()
    with pytest.raises(ValueError, match="gate kind='nope' is not one of"):
        Gate(kind="nope")


def test_bpda_gradients_flow_through_the_gate_decision():
    net, x = tiny_net(), torch.rand(32, 1, 8, 8)
    gate = Gate(kind="score", score="max_softmax", fpr=0.5)
    gate.calibrate(x, net)
    p = predictor(gate, random_translator(), net)
    xg = x.clone().requires_grad_(True)
    assert not p.decision(gate.score(xg, net)).requires_grad  # hard step: no gradient
    with p.bpda_enabled():
        m = p.decision(gate.score(xg, net))
        (grad_m,) = torch.autograd.grad(m.sum(), xg)
        assert torch.equal(m, gate.flags(x, net).float())
        (grad,) = torch.autograd.grad(p(xg).logsumexp(1).sum(), xg)
    assert grad_m.abs().sum() > 0 and grad.abs().sum() > 0
    # the decision term changes the gradient, not the value
    (plain,) = torch.autograd.grad(p(xg).logsumexp(1).sum(), xg)
    assert not torch.allclose(plain, grad)
    with torch.no_grad(), p.bpda_enabled():
        assert torch.equal(p(x), predictor(gate, p.translator, net)(x))


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    shape=st.sampled_from([(2, 1, 8, 8), (1, 3, 5, 7), (3, 1, 28, 28)]),
    name=st.sampled_from(sorted(SHIFTS)),
)
def test_natural_shifts_stay_in_unit_box_and_grow_with_severity(seed, shape, name):
    x = torch.rand(shape, generator=torch.Generator().manual_seed(seed))
    previous = torch.zeros_like(x)
    assert torch.equal(apply_shift(name, x, 0, seed), x)
    for severity in range(1, 6):
        out = apply_shift(name, x, severity, seed)
        assert out.min() >= 0 and out.max() <= 1
        dist = (out - x).abs()
        assert (dist >= previous - 1e-6).all()
        previous = dist


def test_shift_severity_errors_and_per_example_severity():
    x = torch.rand(3, 1, 8, 8)
    out = SHIFTS["darker"](x, torch.tensor([0, 1, 5]))
    assert torch.equal(out[0], x[0]) and torch.allclose(out[2], x[2] * 0.2)
    with pytest.raises(ValueError, match="severity=6 must be integers in 0..5"):
        apply_shift("darker", x, 6)
    with pytest.raises(ValueError, match="natural shifts \\['foggy'\\] unknown"):
        apply_shift("foggy", x, 1)


def test_shift_records_follow_the_record_contract():
    from robustlab.results.record import validate_record

    net, x, y = tiny_net(), torch.rand(20, 1, 8, 8), torch.randint(10, (20,))
    p = predictor(Gate(kind="always"), UNet(1, depth=2, width=4).eval(), net)
    meta = dict(
        run_id="r",
        config_hash="h",
        dataset="d",
        model="m",
        defense="translation",
        inference="translation",
        seed=0,
    )
    records = shift_records(p, net, x, y, meta, severities=[1, 3], shifts=["darker", "sharper"])
    assert len(records) == 8
    for r in records:
        validate_record(r)
        assert r["threat_model"] == "natural" and r["norm"] == "none"
    assert {r["attack"] for r in records} >= {"shift:darker@1", "shift:sharper@3"}
    assert {r["inference"] for r in records} == {"plain", "translation"}
    # an identity translator: the defended predictor equals the bare classifier
    by = {(r["attack"], r["inference"]): r["robust_acc"] for r in records}
    assert by[("shift:darker@3", "plain")] == by[("shift:darker@3", "translation")]


@pytest.mark.parametrize("side", [8, 28, 32, 64])
def test_unet_and_patchgan_keep_shapes(side):
    x = torch.rand(2, 3, side, side)
    assert UNet(3, depth=3, width=4)(x).shape == x.shape
    assert PatchGAN(3, layers=2, width=4)(x, x).shape[:2] == (2, 1)


def test_unet_too_deep_for_small_images_is_a_one_line_error():
    with pytest.raises(ValueError) as err:
        UNet(1, depth=4, width=4)(torch.rand(1, 1, 8, 8))
    assert str(err.value) == (
        "unet depth=4 does not fit 8x8 inputs: the bottleneck must be >= 1x1, so it must be in 1..3"
    )


class TinyData(pl.LightningDataModule):
    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.rand(32, 1, 8, 8, generator=g), torch.randint(10, (32,), generator=g)

    def tensors(self, split):
        return self.x, self.y

    def train_dataloader(self):
        return DataLoader(TensorDataset(self.x, self.y), batch_size=16)

    def val_dataloader(self):
        return DataLoader(TensorDataset(self.x, self.y), batch_size=16)


def translation_defense(net: nn.Module, gate_kind: str = "detector") -> Translation:
    return Translation(
        net=net,
        name="translation",
        num_classes=10,
        optimizer={"name": "adam", "lr": 0.01},
        in_channels=1,
        unet={"depth": 2, "width": 4},
        patchgan={"layers": 1, "width": 4},
        lambda_adv=0.01,
        gate={"kind": gate_kind, "fpr": 0.1, "detector_width": 4},
        train_attacks=[{"kind": "fgsm"}],
        val_attack={"eps": 0.1, "steps": 1},
    )


def test_defense_freezes_the_classifier_and_stores_the_calibrated_gate(tmp_path):
    net = tiny_net(bn=True)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    defense = translation_defense(net)
    trainer = pl.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=str(tmp_path),
    )
    unet_before = defense.translator.head[1].weight.clone()
    trainer.fit(defense, datamodule=TinyData())
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert not any(p.requires_grad for p in net.parameters())
    assert not torch.equal(defense.translator.head[1].weight, unet_before)
    assert torch.isfinite(defense.gate.threshold)
    fresh = translation_defense(tiny_net(bn=True))
    fresh.load_state_dict(defense.state_dict(), strict=True)
    assert torch.equal(fresh.gate.threshold, defense.gate.threshold)


def test_defense_rejects_bad_options():
    with pytest.raises(ValueError, match="shift_sources=\\['weird'\\]"):
        Translation(tiny_net(), "t", 10, {"name": "adam", "lr": 0.1}, 1, shift_sources=["weird"])
    with pytest.raises(ValueError, match="lack 'classifier'"):
        Translation(tiny_net(), "t", 10, {"name": "adam", "lr": 0.1}, 1, dependencies={"x": "p"})
