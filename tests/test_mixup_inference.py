"""Mixup Inference (Pang, Xu, Zhu, ICLR 2020): partner rules, the pool, batched forward, routing."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustlab.inference.mixup_inference import MixupInference

C = 4  # classes
VAL, TEST = 0.25, 0.75  # marker pixel telling pool images of the val and test splits apart


def _split(marker: float, per_class: int = 5, classes=range(C)):
    """Images whose pixel (0,0,0) encodes the label and pixel (0,0,1) the split."""
    y = torch.tensor([c for c in classes for _ in range(per_class)])
    x = torch.rand(len(y), 1, 4, 4)
    x[:, 0, 0, 0] = y / 10
    x[:, 0, 0, 1] = marker
    return x, y


class FakeData:
    """The datamodule surface the pool uses: ``setup`` and ``tensors(split)``."""

    def __init__(self, classes=range(C)):
        torch.manual_seed(0)
        val, test = _split(VAL, classes=classes), _split(TEST)
        self.splits = {"train": val, "val": val, "test": test}
        self.stages = []

    def prepare_data(self):
        pass

    def setup(self, stage=None):
        self.stages.append(stage)

    def tensors(self, split):
        return self.splits[split]


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.Tanh(), nn.Linear(12, C)).eval()


def _mi(mode="ol", data=None, **kwargs):
    return MixupInference(_net(), data or FakeData(), name=f"mi_{mode}", mode=mode, **kwargs)


def _labels(images):
    return (images[..., 0, 0, 0] * 10).round().long()


def _x(b=6):
    torch.manual_seed(3)
    return torch.rand(b, 1, 4, 4)


def test_pl_partners_share_the_predicted_class():
    mi, x = _mi("pl", n_pl=7), _x()
    logits = torch.eye(C)[[0, 1, 2, 3, 3, 1]] * 5
    partners = mi.draw_partners(x, logits)["pl"]
    assert partners.shape == (6, 7, 1, 4, 4)
    assert (_labels(partners) == logits.argmax(1)[:, None]).all()


def test_ol_partners_avoid_the_predicted_class_and_cover_the_others_uniformly():
    mi, x = _mi("ol", n_ol=3000), _x(2)
    logits = torch.eye(C)[[0, 2]]
    labels = _labels(mi.draw_partners(x, logits)["ol"])
    for row, y_hat in zip(labels, (0, 2)):
        assert (row != y_hat).all()
        freq = torch.bincount(row, minlength=C).float() / len(row)
        others = [c for c in range(C) if c != y_hat]
        torch.testing.assert_close(freq[others], torch.full((C - 1,), 1 / 3), atol=0.04, rtol=0)


def test_pool_defaults_to_heldout_data():
    data = FakeData()
    mi = _mi("combined", data=data, pool_size=6)
    assert data.stages == ["fit"] and len(mi.pool) == 6
    assert (mi.pool.images[:, 0, 0, 1] == VAL).all()
    test_pool = _mi("ol", pool="test").pool
    assert (test_pool.images[:, 0, 0, 1] == TEST).all()


def test_other_pool_draws_from_another_datamodule():
    cfg = {"_target_": f"{__name__}.FakeData", "classes": [0, 1]}
    mi = _mi("ol", pool="other", pool_dataset=cfg)
    labels = _labels(mi.draw_partners(_x(), torch.eye(C)[[0] * 6])["ol"])
    assert set(labels.flatten().tolist()) <= {0, 1}
    with pytest.raises(ValueError, match=r"only mode=ol can use it, not 'pl'"):
        _mi("pl", pool="other", pool_dataset=cfg)


def test_a_pool_missing_a_class_is_a_one_line_error():
    mi = _mi("pl", data=FakeData(classes=[0, 1, 3]))
    with pytest.raises(ValueError, match=r"pool 'heldout' \(15 images\) has no image of class 2"):
        mi(_x())


def test_bad_mode_and_pool_are_one_line_errors():
    with pytest.raises(ValueError, match=r"mode='xl' is not one of \['pl', 'ol', 'combined'\]"):
        _mi("xl")
    with pytest.raises(ValueError, match=r"pool='train' is not one of"):
        _mi("ol", pool="train")


@pytest.mark.parametrize("mode", ["pl", "ol"])
def test_lam_one_is_the_bare_model(mode):
    mi, x = _mi(mode, lam_pl=1.0, lam_ol=1.0, n_pl=3, n_ol=5), _x()
    torch.testing.assert_close(mi(x), mi.net(x).log_softmax(1), atol=1e-6, rtol=0)


def test_batched_equals_looped_and_chunking_changes_nothing():
    mi, x = _mi("combined", threshold=0.05), _x()
    partners = mi.draw_partners(x, mi.net(x))
    batched = mi._forward_fixed(x, partners)[:, 0]
    torch.testing.assert_close(batched, mi._forward_looped(x, partners))
    mi.chunk_size = 7
    torch.testing.assert_close(mi._forward_fixed(x, partners)[:, 0], batched)


def test_output_is_log_probabilities_with_gradients():
    mi, x = _mi("ol"), _x().requires_grad_(True)
    out = mi(x)
    torch.testing.assert_close(out.logsumexp(1), torch.zeros(6), atol=1e-5, rtol=0)
    (grad,) = torch.autograd.grad(out[:, 0].sum(), x)
    assert grad.abs().sum() > 0
    assert mi.randomized and mi.differentiable and mi.output == "log_probs"
    assert not _mi("combined").differentiable and not _mi("pl").differentiable  # BPDA


def test_fresh_partners_every_forward_and_seeded_reproducibility():
    mi, x = _mi("ol", n_ol=2), _x()
    torch.manual_seed(11)
    first, second = mi(x), mi(x)
    torch.manual_seed(11)
    assert not torch.allclose(first, second)
    torch.testing.assert_close(mi(x), first, atol=0, rtol=0)


def test_combined_routes_each_example_by_the_gap():
    mi, x = _mi("combined"), _x()
    logits = mi.net(x)
    partners = mi.draw_partners(x, logits)
    pl = mi._mix_batched(x, partners["pl"], mi.lam["pl"], 1)[:, 0]
    ol = mi._mix_batched(x, partners["ol"], mi.lam["ol"], 1)[:, 0]
    gap = logits.softmax(1).amax(1) - pl.exp().amax(1)
    assert gap.unique().numel() > 1
    for threshold in (float("inf"), float("-inf"), gap.median().item()):
        mi.threshold = threshold
        below = (gap < threshold)[:, None]
        out = mi._forward_fixed(x, partners, logits)[:, 0]
        torch.testing.assert_close(out, torch.where(below, pl, ol))
    assert below.any() and not below.all()


@pytest.mark.parametrize("mode", ["pl", "ol", "combined"])
def test_batched_draws_are_independent_single_draws(mode):
    """D draws in one batched forward give, draw by draw, what D single forwards give on the
    same partners: EOT in one forward is the same expectation."""
    mi, x, draws = _mi(mode, n_pl=3, n_ol=4, threshold=0.05), _x(), 5
    logits = mi.net(x)
    partners = mi.draw_partners(x, logits, draws)
    per_draw = mi._forward_fixed(x, partners, logits, draws)
    assert per_draw.shape == (6, draws, C)
    for d in range(draws):
        one = {b: p.view(6, draws, -1, *p.shape[2:])[:, d] for b, p in partners.items()}
        torch.testing.assert_close(per_draw[:, d], mi._forward_looped(x, one))


def test_eot_runs_the_net_on_x_once_per_gradient():
    from robustlab.attacks.adaptive import EOT
    from robustlab.attacks.costs import count_passes

    mi, x = _mi("ol", n_ol=4), _x()
    with count_passes(mi.net) as counter:
        out = EOT(mi, 7)(x)
    assert counter.forward_rows == 6 + 6 * 7 * 4  # F(x) once, then every mix of every draw
    torch.testing.assert_close(out.exp().sum(1), torch.ones(6))


def test_combined_crafts_on_a_smooth_approximation_and_scores_the_real_switch():
    """Outside BPDA: the hard switch. Under BPDA (crafting, adaptive threat model): the smooth
    blend of log F(x) (what MI-PL follows) and MI-OL by the real gap, whose gradient reaches
    the detector."""
    mi, x = _mi("combined", threshold=0.05), _x().requires_grad_(True)
    logits = mi.net(x)
    partners = mi.draw_partners(x, logits)
    hard = mi._forward_fixed(x, partners, logits)
    with mi.bpda_enabled():
        crafted = mi._forward_fixed(x, partners, logits)
    pl = mi._mix_batched(x, partners["pl"], mi.lam["pl"], 1)
    ol = mi._mix_batched(x, partners["ol"], mi.lam["ol"], 1)
    gap = logits.softmax(1).amax(1)[:, None] - pl.exp().amax(2)
    torch.testing.assert_close(hard, torch.where((gap < mi.threshold)[..., None], pl, ol))
    share = torch.sigmoid((mi.threshold - gap) / mi.bpda_temperature)[..., None]
    torch.testing.assert_close(crafted, share * logits.log_softmax(1)[:, None] + (1 - share) * ol)
    (g_share,) = torch.autograd.grad(share.sum(), x)
    assert g_share.abs().sum() > 0  # the detector is attacked


@pytest.mark.parametrize(
    "defense, flagged, said",
    [("erm", True, "warning"), ("mixup", False, None), ("external", False, "note")],
)
def test_mi_on_a_net_trained_otherwise_is_said_and_flagged(
    defense, flagged, said, tmp_path, capsys
):
    from robustlab.evaluation.evaluator import Evaluator

    meta = {"run_id": "t", "config_hash": "h", "dataset": "toy", "model": "mlp", "seed": 0}
    evaluator = Evaluator(
        specs=[{"kind": "fgsm", "name": "fgsm", "eps": 0.1}],
        inferences=[
            {
                "_target_": "robustlab.inference.mixup_inference.MixupInference",
                "name": "mi_ol",
                "mode": "ol",
                "n_ol": 2,
            }
        ],
        meta={**meta, "versions": {}, "defense": defense},
        num_classes=C,
        seed=0,
        output_dir=tmp_path,
        datamodule=FakeData(),
        progress=False,
        score_draws=2,
    )
    x, y = FakeData().splits["test"]
    records = evaluator.evaluate(_net(), x, y, write=False)
    err = capsys.readouterr().err
    assert all(
        ("inference_expects_other_training" in r["sanity_flags"]) == flagged for r in records
    )
    assert (said is None and "mi_ol" not in err) or f"robustlab: {said}: inference=mi_ol" in err


def test_chunk_size_null_is_by_device_and_zero_is_refused():
    """chunk_size only splits the mixes into net calls; null picks the size by device and, on a
    CPU, by the net's memory format."""
    from robustlab.inference.mixup_inference import CPU_CHUNK, CPU_CHUNK_CHANNELS_LAST
    from robustlab.precision import evaluation_layout

    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Flatten(), nn.Linear(32, C)).eval()
    mi, calls = MixupInference(conv, FakeData(), name="mi_ol", mode="ol", n_ol=100), []
    conv.register_forward_pre_hook(lambda _m, args: calls.append(len(args[0])))
    with torch.no_grad():
        mi(_x(3))
        assert max(calls) == CPU_CHUNK
        calls.clear()
        with evaluation_layout(conv, True) as memory_format:
            mi(_x(3))
        assert memory_format == "channels_last" and max(calls) == CPU_CHUNK_CHANNELS_LAST
        calls.clear()
        mlp = _mi("ol", n_ol=100)  # no convolution: stays contiguous, the contiguous chunk
        mlp.net.register_forward_pre_hook(lambda _m, args: calls.append(len(args[0])))
        with evaluation_layout(mlp.net, True):
            mlp(_x(3))
        assert max(calls) == CPU_CHUNK
    with pytest.raises(ValueError, match="chunk_size=0 must be >= 1"):
        _mi("ol", chunk_size=0)
