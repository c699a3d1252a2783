"""robustlab's fast AutoAttack against the reference (pyautoattack 0.2.0, fra31's code): the same
iterates where the seeds agree, the same verdicts per component, and the same verdicts however the
(point, target) rows are batched or stopped."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torchattacks import FAB

from robustlab.attacks.apgd_rows import apgd_rows
from robustlab.attacks.autoattack import AutoAttack
from robustlab.attacks.fab_rows import fab_targeted_rows
from robustlab.attacks.targeted_rows import run_in_waves, target_labels

ref = pytest.importorskip("pyautoattack", reason="the reference AutoAttack (pip extra 'dev')")
from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted  # noqa: E402


def mlp_problem(n: int = 48, num_classes: int = 10):
    """Gaussian class clusters in [0,1]^(1x4x4) and a small ReLU net fitted to them (seeded)."""
    g = torch.Generator().manual_seed(0)
    mu = 0.2 + 0.6 * torch.rand(num_classes, 16, generator=g)
    y = torch.arange(n) % num_classes
    x = (mu[y] + 0.1 * torch.randn(n, 16, generator=g)).clamp(0, 1).view(n, 1, 4, 4)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, num_classes))
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    for p in net.parameters():
        p.requires_grad_(False)
    net.eval()
    with torch.no_grad():
        right = net(x).argmax(1) == y
    return net, x[right], y[right]


@pytest.fixture(scope="module")
def problem():
    return mlp_problem()


def wrong(model, x, y):
    with torch.no_grad():
        return model(x).argmax(1) != y


@pytest.mark.parametrize("loss", ["ce", "dlr"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_apgd_rows_are_the_reference_iterates(problem, loss, norm):
    model, x, y = problem
    eps = 0.15 if norm == "linf" else 0.3
    reference = APGDAttack(
        model,
        n_restarts=1,
        n_iter=30,
        eps=eps,
        norm={"linf": "Linf", "l2": "L2"}[norm],
        seed=3,
        loss=loss,
        rho=0.75,
        device="cpu",
    )
    adv_ref = reference.perturb(x, y)
    broken_ref = wrong(model, adv_ref, y)
    torch.manual_seed(3)
    start = 2 * torch.rand(x.shape) - 1 if norm == "linf" else torch.randn(x.shape)
    for stop_early in (False, True):
        adv, broken = apgd_rows(
            model,
            x,
            y,
            eps=eps,
            norm=norm,
            steps=30,
            loss=loss,
            start=start,
            stop_early=stop_early,
        )
        assert torch.equal(broken, broken_ref)
        assert torch.equal(wrong(model, adv, y), broken)
        if not stop_early:  # the last misclassified iterate, as the reference keeps it
            assert torch.equal(adv[broken], adv_ref[broken])
    assert 0 < broken_ref.sum() < len(y)  # the comparison covers both verdicts


def test_apgd_targeted_rows_are_the_reference_first_target(problem):
    model, x, y = problem
    reference = APGDAttack_targeted(
        model,
        n_restarts=1,
        n_iter=30,
        eps=0.12,
        norm="Linf",
        seed=5,
        rho=0.75,
        device="cpu",
        n_target_classes=1,
    )
    adv_ref = reference.perturb(x, y)
    torch.manual_seed(5)
    start = 2 * torch.rand(x.shape) - 1
    with torch.no_grad():
        target = target_labels(model(x), 1)[:, 0]
    adv, broken = apgd_rows(
        model,
        x,
        y,
        eps=0.12,
        norm="linf",
        steps=30,
        loss="dlr",
        start=start,
        target=target,
        stop_early=False,
    )
    assert torch.equal(broken, wrong(model, adv_ref, y))
    assert torch.equal(adv[broken], adv_ref[broken])


def test_fab_rows_are_torchattacks_fab_iterates(problem):
    model, x, y = problem
    with torch.no_grad():
        target = target_labels(model(x), 2)[:, 1]  # the 3rd largest logit
    fab = FAB(model, norm="Linf", eps=0.12, steps=30, n_classes=10)
    fab.device, fab.target_class = "cpu", target
    adv_ref = fab.attack_single_run_targeted(x, y, use_rand_start=False)
    broken_ref = wrong(model, adv_ref, y) & ((adv_ref - x).flatten(1).abs().amax(1) <= 0.12)
    for stop_early in (False, True):
        adv, broken = fab_targeted_rows(
            model, x, y, target, eps=0.12, norm="linf", steps=30, stop_early=stop_early
        )
        assert torch.equal(broken, broken_ref)
        if not stop_early:  # the same smallest adversarial; outside the ball: the clean point
            assert torch.equal(adv[broken], adv_ref[broken])
            assert torch.equal(adv[~broken], x[~broken])
    assert 0 < broken_ref.sum() < len(y)


def reference_breaks(model, x, y, eps, batch_size=None):
    """Per component of the reference, the points (indices into ``x``) it broke, its parts run
    ``batch_size`` points a pass (None: all)."""
    aa = ref.AutoAttack(model, norm="Linf", eps=eps, version="standard", seed=0, device="cpu")
    for apgd in (aa.apgd, aa.apgd_targeted):  # the schedule follows n_iter at construction
        apgd.n_iter = apgd.n_iter_orig = 30
        apgd.n_iter_2, apgd.n_iter_min, apgd.size_decr = 6, 1, 1
    aa.fab.n_iter = 30
    aa.square.n_queries = 300
    aa.logger.disabled = True
    broke = {}
    parts = {"apgd_ce": aa.apgd, "apgd_t": aa.apgd_targeted, "fab_t": aa.fab, "square": aa.square}
    for name, attack in parts.items():

        def perturb(xs, ys, name=name, run=attack.perturb):
            adv = run(xs, ys)
            rows = (xs.flatten(1)[:, None] == x.flatten(1)[None]).all(-1).float().argmax(1)
            broke[name] = torch.cat([broke.get(name, rows[:0]), rows[wrong(model, adv, ys)]])
            return adv

        attack.perturb = perturb
    adv, _ = aa.run_standard_evaluation(x, y, batch_size=batch_size or len(x))
    return broke, ~wrong(model, adv, y)


def test_verdicts_per_component_are_the_reference_ones(problem):
    """Each part breaks the points the reference's same part breaks; the rows of APGD-T and
    FAB-T run in one wave here, one target after another there."""
    model, x, y = problem
    eps = 0.1
    ours = AutoAttack(model, norm="linf", eps=eps, num_classes=10, steps=30, queries=300)
    x_adv = ours(x, y, seed=0)
    broke, robust_ref = reference_breaks(model, x, y, eps)
    for name, flags in ours.last_component_success.items():
        assert flags.nonzero().flatten().tolist() == sorted(broke.get(name, []).tolist()), name
    assert torch.equal(robust_ref, ~wrong(model, x_adv, y))
    assert 0 < robust_ref.sum() < len(y)
    assert len(broke["apgd_ce"]) and len(broke["apgd_t"])  # more than one part is compared


def test_passes_of_batch_size_points_are_the_reference_batches(problem):
    """Each part on the points still robust, ``batch_size`` a pass and reseeded per pass, as the
    reference's ``run_standard_evaluation`` batches them: the same points break per part."""
    model, x, y = problem
    eps, batch_size = 0.1, 7
    ours = AutoAttack(
        model, norm="linf", eps=eps, num_classes=10, steps=30, queries=300, batch_size=batch_size
    )
    passes = []
    apgd_ce = ours.components["apgd_ce"]

    def counted(model, xs, *args):
        passes.append(len(xs))
        return apgd_ce(model, xs, *args)

    ours.components["apgd_ce"] = counted
    x_adv = ours(x, y, seed=0)
    broke, robust_ref = reference_breaks(model, x, y, eps, batch_size)
    none = torch.zeros(0, dtype=torch.long)
    for name, flags in ours.last_component_success.items():
        assert flags.nonzero().flatten().tolist() == sorted(broke.get(name, none).tolist()), name
    assert torch.equal(robust_ref, ~wrong(model, x_adv, y))
    assert len(broke["apgd_ce"]) and len(broke["apgd_t"])
    assert len(passes) > 2 and max(passes) == batch_size  # APGD-CE ran in several passes
    one_pass, _ = reference_breaks(model, x, y, eps)  # the passes decide which points break
    assert sorted(one_pass["apgd_ce"].tolist()) != sorted(broke["apgd_ce"].tolist())


@settings(max_examples=4, deadline=None)
@given(target_rows=st.integers(1, 80))
def test_waves_do_not_change_verdicts(problem, target_rows):
    """However many (point, target) rows share a pass, the same points break (the starts are
    drawn per point and target, before any wave)."""
    model, x, y = problem
    kwargs = dict(norm="linf", eps=0.08, num_classes=10, steps=10, queries=20)
    one_wave = AutoAttack(model, **kwargs, target_rows=10_000)
    waves = AutoAttack(model, **kwargs, target_rows=target_rows)
    one_wave(x, y, seed=1)
    waves(x, y, seed=1)
    for name, flags in one_wave.last_component_success.items():
        assert torch.equal(flags, waves.last_component_success[name]), name


def test_waves_skip_broken_points_only_on_a_deterministic_model():
    """Without a judge a point's later slots are skipped once it broke and of two rows breaking
    it in one wave the first slot's is kept; with a judge (a randomized model) every row runs and
    the candidate judged right least often is kept."""
    x = torch.zeros(3, 1, 1, 1)
    calls = []

    def run(point, slot):
        calls.extend(zip(point.tolist(), slot.tolist()))
        adv = (10 * point + slot).float().view(-1, 1, 1, 1)
        return adv, point == 0  # point 0 breaks on every slot, the others never

    adv, broken = run_in_waves(x, 3, 3, run)
    assert broken.tolist() == [True, False, False] and adv[0].item() == 0
    assert (0, 1) not in calls and (0, 2) not in calls and len(calls) == 7
    adv, _ = run_in_waves(x, 3, 4, run)  # (0, 0) and (0, 1) break point 0 in the first wave
    assert adv[0].item() == 0  # the first slot's
    calls.clear()
    adv, broken = run_in_waves(x, 3, 4, run, judge=lambda cand, pts: 5 - cand.flatten() % 10)
    assert len(calls) == 9 and broken.tolist() == [False, False, False]
    assert adv.flatten().tolist() == [2, 12, 22]  # the last slot is judged right least often
