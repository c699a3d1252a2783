"""The evaluation engine on toy models whose answers are known."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.attacks.autoattack import AutoAttack
from robustlab.attacks.factory import as_spec
from robustlab.evaluation.engine import (
    AttackOutcome,
    ShardResult,
    evaluate_shard,
    threat_models_for,
)
from robustlab.evaluation.evaluator import Evaluator
from robustlab.evaluation.summary import build_records, merge_shards
from robustlab.inference.base import Predictor
from robustlab.inference.bpda import bpda
from robustlab.inference.plain import Plain
from robustlab.results.record import WORST_CASE

META = {
    "run_id": "t",
    "config_hash": "h",
    "dataset": "toy",
    "model": "linear",
    "defense": "erm",
    "inference": "plain",
    "seed": 0,
    "versions": {},
    "started": "",
}


def pgd_spec(**kw):
    spec = {"name": "pgd", "kind": "pgd", "norm": "linf", "eps": [0.1], "steps": 10}
    spec.update(step_size=None, random_start=True, restarts=1, targeted=False)
    spec.update(kw)
    return spec


def evaluate(net, x, y, specs, predictor=None, **kw):
    predictor = predictor or Plain(net, name="plain")
    shard = evaluate_shard(
        predictor, x, y, torch.arange(len(x)), specs, num_classes=10, seed=0, progress=False, **kw
    )
    records = build_records(
        shard,
        META,
        randomized=predictor.randomized,
        needs_adaptive=predictor.needs_adaptive_tools(),
    )
    return shard, records


def plain_evaluator(output_dir, **kw) -> Evaluator:
    """An Evaluator of PGD on the plain wrapper, writing under ``output_dir``."""
    return Evaluator(
        specs=[pgd_spec()],
        inferences=[{"_target_": "robustlab.inference.plain.Plain", "name": "plain"}],
        meta={k: v for k, v in META.items() if k not in ("inference", "started")},
        num_classes=10,
        seed=0,
        output_dir=output_dir,
        progress=False,
        **kw,
    )


def test_eps_zero_gives_exactly_clean_accuracy(trained):
    net, x, y = trained
    _, records = evaluate(net, x, y, [pgd_spec(eps=[0.0])])
    assert all(r["robust_acc"] == r["clean_acc"] for r in records)
    assert records[0]["clean_acc"] > 0.9


def test_robust_never_above_clean_and_falls_with_eps(trained):
    net, x, y = trained
    _, records = evaluate(net, x, y, [pgd_spec(eps=[0.02, 0.05, 0.1, 0.3])])
    accs = [r["robust_acc"] for r in records if r["attack"] == "pgd"]
    assert all(a <= records[0]["clean_acc"] for a in accs)
    assert accs == sorted(accs, reverse=True)
    assert accs[-1] < 0.05


def test_pgd_accuracy_does_not_rise_with_steps(trained):
    net, x, y = trained
    specs = [pgd_spec(name=f"pgd{k}", steps=k, eps=[0.05]) for k in (1, 5, 20, 50)]
    _, records = evaluate(net, x, y, specs)
    accs = [r["robust_acc"] for r in records if r["kind"] == "attack"]
    assert all(later <= earlier for earlier, later in zip(accs, accs[1:]))
    assert not any("more_steps_higher_acc" in r["sanity_flags"] for r in records)


def test_pgd_agrees_with_an_independent_loop(trained):
    net, x, y = trained
    eps, steps, alpha = 0.05, 7, 0.01
    spec = pgd_spec(eps=[eps], steps=steps, step_size=alpha, random_start=False)
    shard, _ = evaluate(net, x, y, [spec])
    x_adv = x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(net(x_adv), y), x_adv)
        x_adv = x_adv.detach() + alpha * grad.sign()
        x_adv = (x + (x_adv - x).clamp(-eps, eps)).clamp(0, 1)
    expected = net(x_adv).argmax(1) == y
    assert torch.equal(shard.outcomes[0].adv_correct[:, 0], expected)  # deterministic: one draw


def test_worst_case_counts_a_point_robust_only_if_every_attack_failed(trained):
    net, x, y = trained
    specs = [{**pgd_spec(eps=[0.05]), "name": "fgsm", "kind": "fgsm"}, pgd_spec(eps=[0.05])]
    for spec in specs[:1]:
        for key in ("steps", "step_size", "random_start"):
            spec.pop(key)
    shard, records = evaluate(net, x, y, specs)
    worst = next(r for r in records if r["attack"] == WORST_CASE)
    both = (shard.clean_correct & shard.outcomes[0].adv_correct & shard.outcomes[1].adv_correct)[
        :, 0
    ]
    assert worst["n_robust"] == int(both.sum())


def test_merge_counts_each_example_once():
    def shard(idx, flags):
        idx = torch.tensor(idx)
        return ShardResult(idx, torch.tensor(flags), [], {})

    merged = merge_shards([shard([0, 2, 4], [1, 0, 1]), shard([1, 3, 4], [1, 1, 1])])
    assert merged.indices.tolist() == [0, 1, 2, 3, 4]
    assert merged.clean_correct.tolist() == [1, 1, 0, 1, 1]


def test_global_rng_untouched_by_evaluation(trained):
    net, x, y = trained
    torch.manual_seed(123)
    before = torch.get_rng_state()
    evaluate(net, x[:20], y[:20], [pgd_spec(steps=2)])
    assert torch.equal(torch.get_rng_state(), before)


class Rounding(Predictor):
    """Quantizes inputs to {0, 1} before the net: zero gradient without BPDA."""

    differentiable = False

    def forward(self, x):
        def quantize(t):
            return torch.round(t)

        return self.net(bpda(quantize, x) if self.use_bpda else quantize(x))


class Lattice(nn.Module):
    """Logit of class 1 = sum relu(z - 0.7) - sum relu(0.3 - z): only informative near {0, 1}."""

    def forward(self, z):
        score = (F.relu(z - 0.7) - F.relu(0.3 - z)).flatten(1).sum(1)
        return torch.stack([-score, score], dim=1) * 10


def rounding_case():
    y = torch.arange(40) % 2
    x = (0.4 + 0.2 * y.float()).view(-1, 1, 1, 1).expand(-1, 1, 4, 4).contiguous()
    return Rounding(Lattice(), name="rounding"), x, y


def test_rounding_predictor_oblivious_and_plain_gradients_fail_bpda_succeeds():
    """Pixels at 0.4 / 0.6 round to 0 / 1. The bare net has zero gradient there, so oblivious
    PGD stays put; round() has zero gradient, so PGD without BPDA stays put; with BPDA the
    gradient is taken at the rounded image, and eps 0.12 carries every pixel across 0.5."""
    predictor, x, y = rounding_case()
    spec = pgd_spec(eps=[0.12], steps=10, step_size=0.02, random_start=False)
    assert threat_models_for(predictor, "auto") == ["oblivious", "adaptive"]
    _, records = evaluate(predictor.net, x, y, [spec], predictor=predictor)
    acc = {r["threat_model"]: r["robust_acc"] for r in records if r["attack"] == "pgd"}
    assert records[0]["clean_acc"] == 1.0
    assert acc == {"oblivious": 1.0, "adaptive": 0.0}

    no_bpda, x, y = rounding_case()
    no_bpda.differentiable = True  # a predictor that hides its rounding: no BPDA is used
    _, records = evaluate(no_bpda.net, x, y, [spec], predictor=no_bpda)
    assert [r["robust_acc"] for r in records if r["attack"] == "pgd"] == [1.0]
    assert any("vanishing_gradients" in r["sanity_flags"] for r in records)


def record_of(attack, clean, adv_correct, **outcome_fields):
    """The attack record of a one-attack shard with these per-example flags."""
    outcome = AttackOutcome(
        attack=attack,
        threat_model="adaptive",
        norm="linf",
        eps=0.1,
        spec=as_spec({"name": attack, "kind": attack, "eps": 0.1}),
        params={},
        adv_correct=adv_correct,
        **outcome_fields,
    )
    zero_grad = {"adaptive": torch.zeros(len(clean), dtype=torch.bool)}
    shard = ShardResult(torch.arange(len(clean)), clean, [outcome], zero_grad)
    return build_records(shard, META, randomized=False, needs_adaptive=False)[0]


def test_autoattack_records_count_the_points_each_component_broke():
    t, f = True, False
    broken = {"apgd-ce": torch.tensor([t, f, f, f, f]), "square": torch.tensor([f, t, t, f, f])}
    clean, adv = torch.tensor([t, t, t, t, f]), torch.tensor([f, f, f, t, f])
    record = record_of("autoattack", clean, adv, component_broken=broken)
    assert record["broken_by_component"] == {"apgd-ce": 1, "square": 2}
    assert record["n_clean_correct"] - record["n_robust"] == 3
    assert "square_beats_whitebox" in record["sanity_flags"]


def test_autoattack_takes_points_per_call_points_a_call_and_batch_size_a_pass(
    trained, tmp_path, monkeypatch
):
    """A unit of AutoAttack is one call on points_per_call points (the reference runs its parts
    on all its points), its parts in passes of batch_size; a rerun finds every unit."""
    net, x, y = trained
    x, y = x[:40], y[:40]
    calls, passes = [], []
    original = AutoAttack.__call__

    def spy(self, xs, ys, seed):
        calls.append(len(xs))
        return original(self, xs, ys, seed)

    def part_spy(part):
        def run(model, xs, *args):
            passes.append(len(xs))
            return part(model, xs, *args)

        return run

    monkeypatch.setattr(AutoAttack, "__call__", spy)
    spec = {"kind": "autoattack", "eps": [0.2], "steps": 3, "queries": 10, "batch_size": 6}
    spec["points_per_call"] = 32
    original_init = AutoAttack.__init__

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self.components = {k: part_spy(v) for k, v in self.components.items()}

    monkeypatch.setattr(AutoAttack, "__init__", init)
    shard, records = evaluate(net, x, y, [spec], batch_size=8, state_dir=tmp_path)
    assert calls == [32, 8]
    assert passes and max(passes) <= 6
    params = records[0]["attack_params"]
    assert params["points_per_call"] == 32 and params["batch_size"] == 6
    # the clean units are batches (5), the attack's calls (2), the gradient check's (5)
    assert len(list(tmp_path.rglob("*.pt"))) == 5 + 2 + 5
    calls.clear()
    again, _ = evaluate(net, x, y, [spec], batch_size=8, state_dir=tmp_path)
    assert calls == [] and torch.equal(again.outcomes[0].adv_correct, shard.outcomes[0].adv_correct)
    calls.clear()
    evaluate(net, x, y, [{**spec, "points_per_call": None}], batch_size=8)
    assert calls == [40]


def test_an_attack_that_changes_nothing_is_not_robust_above_clean():
    """A constant predictor (measured: a collapsed MNIST net, 126 of 1000 right) keeps exactly its
    clean accuracy under attack; float32 rounding once made 0.126 look larger than 0.126."""
    clean = torch.zeros(1000, dtype=torch.bool)
    clean[:126] = True
    record = record_of("pgd", clean, clean.clone())
    assert record["adv_acc"] == record["clean_acc"] == 0.126
    assert "robust_above_clean" not in record["sanity_flags"]


def test_evaluator_flags_a_constant_net_and_not_a_trained_one(trained, tmp_path):
    net, x, y = trained
    constant = nn.Sequential(nn.Flatten(), nn.Linear(16, 10))
    with torch.no_grad():
        constant[1].weight.zero_()
        constant[1].bias.copy_(torch.arange(10.0))  # always class 9: 20 of the 200 labels
    evaluator = plain_evaluator(tmp_path)
    collapsed = evaluator.evaluate(constant, x, y, write=False)
    assert collapsed[0]["clean_acc"] == collapsed[0]["majority_class_acc"] == 0.1
    assert all("clean_at_chance" in r["sanity_flags"] for r in collapsed)
    assert not any(
        "clean_at_chance" in r["sanity_flags"] for r in evaluator.evaluate(net, x, y, write=False)
    )


def test_the_gradient_check_runs_on_the_first_grad_check_points_points(trained, tmp_path):
    """eval.grad_check_points: the check's masks cover the first N points of the shard (across
    batch boundaries), agree with the full check there, and the share is taken over them; the
    attack's verdicts do not change. A net whose input gradient vanishes on every point (a
    ReLU cut at zero) is still flagged from the sample."""
    net, x, y = trained
    full, full_records = evaluate(net, x, y, [pgd_spec()], batch_size=64)
    part, part_records = evaluate(
        net, x, y, [pgd_spec()], batch_size=64, grad_check_points=70, state_dir=tmp_path
    )
    assert len(full.zero_grad["adaptive"]) == len(x)
    assert torch.equal(part.zero_grad["adaptive"], full.zero_grad["adaptive"][:70])
    assert [r["robust_acc"] for r in part_records] == [r["robust_acc"] for r in full_records]
    assert {r["zero_grad_points"] for r in part_records if r["kind"] == "attack"} == {70}
    # the partial batch is its own unit: a rerun with every point checked does not reuse it
    again, _ = evaluate(net, x, y, [pgd_spec()], batch_size=64, state_dir=tmp_path)
    assert torch.equal(again.zero_grad["adaptive"], full.zero_grad["adaptive"])
    # two ranks' shards (every other point): each checks its own first points; merged, the masks
    # are those of the full check at the checked test indices
    halves = [
        evaluate_shard(
            Plain(net, name="plain"), x[r::2], y[r::2], torch.arange(len(x))[r::2], [pgd_spec()],
            num_classes=10, seed=0, progress=False, batch_size=64, grad_check_points=30,
        )
        for r in (0, 1)
    ]  # fmt: skip
    merged = merge_shards(halves)
    assert torch.equal(merged.zero_grad["adaptive"], full.zero_grad["adaptive"][:60])
    # through the evaluator (which merges its shard): more points than the sample
    evaluator = plain_evaluator(tmp_path / "evaluator", grad_check_points=50)
    (pgd,) = [r for r in evaluator.evaluate(net, x, y, write=False) if r["attack"] == "pgd"]
    assert pgd["zero_grad_points"] == 50 and pgd["n_examples"] == len(x)
    expected = int(full.zero_grad["adaptive"][:50].sum()) / 50
    assert pgd["zero_grad_share"] == expected
    dead = nn.Sequential(net, nn.ReLU(), nn.Hardtanh(-1.0, -0.5))  # constant output: no gradient
    _, records = evaluate(dead, x, y, [pgd_spec()], grad_check_points=10)
    (attack,) = [r for r in records if r["kind"] == "attack"]
    assert attack["zero_grad_share"] == 1.0 and "vanishing_gradients" in attack["sanity_flags"]


def test_merged_gradient_masks_follow_the_test_indices_they_checked():
    """Each shard checked its own first points: merged, every checked test index keeps its own
    mask value (a pattern that a wrong order would break), once, sorted by index; a padded
    duplicate index (DistributedSampler) counts once, a shard shorter than the sample entirely."""

    def shard(indices, checked):
        indices = torch.tensor(indices)
        mask = indices[:checked] % 3 == 0  # the value each index must carry
        clean = torch.ones(len(indices), 1, dtype=torch.bool)
        return ShardResult(indices, clean, [], {"adaptive": mask})

    merged = merge_shards([shard([0, 2, 4, 6, 8], 3), shard([1, 3, 5, 7, 0], 3), shard([9], 3)])
    assert merged.indices.tolist() == list(range(10))
    # checked: 0, 2, 4 (first shard), 1, 3, 5 (second), 9 (the short third)
    assert merged.zero_grad["adaptive"].tolist() == [i % 3 == 0 for i in (0, 1, 2, 3, 4, 5, 9)]
    duplicate = merge_shards([shard([0, 3, 6], 3), shard([1, 4, 0], 3)])  # 0 padded twice
    assert duplicate.zero_grad["adaptive"].tolist() == [i % 3 == 0 for i in (0, 1, 3, 4, 6)]


def test_resumable_units_of_the_two_memory_formats_are_kept_apart(tmp_path):
    """The memory format is not in the cell's hash (as the device is not), but its floats
    differ: a run resumed in the other format must not reuse the first one's units."""
    evaluator = plain_evaluator(tmp_path)
    (wrapper,) = evaluator.inferences
    contiguous, channels_last = (
        evaluator._state_dir(wrapper, META, 0, 1, layout)
        for layout in ("contiguous", "channels_last")
    )
    assert contiguous != channels_last
    assert contiguous == evaluator._state_dir(wrapper, META, 0, 1)  # as before the option
