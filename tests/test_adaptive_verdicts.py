"""Verdicts an adaptive attacker cannot inflate: the transfer floor, the randomized protocol,
selection over several draws, and the flags, each with real attacks on small nets."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchattacks import APGD

from robustlab.attacks.crafting import plain, restarted
from robustlab.attacks.kinds import AttackSpec
from robustlab.attacks.kinds.base import as_numbers
from robustlab.attacks.selection import SELECTION_DRAWS, correct_counts
from robustlab.evaluation.engine import evaluate_shard
from robustlab.evaluation.summary import build_records
from robustlab.inference.base import Predictor
from robustlab.inference.plain import Plain

META = {
    "run_id": "t",
    "config_hash": "h",
    "dataset": "toy",
    "model": "mlp",
    "defense": "erm",
    "inference": "x",
    "seed": 0,
    "versions": {},
    "started": "",
}
BOTH = ["oblivious", "adaptive"]


class Saturated(Predictor):
    """Gradient masking by saturation (as defensive distillation does): logits scaled so far that
    the softmax of a confident point is exactly one-hot and its cross-entropy gradient is 0. Its
    decisions are the net's, so transfer from the bare net breaks it; gradient attacks do not."""

    def forward(self, x):
        return self.net(x) * 1e4


class Flaky(Predictor):
    """Randomized: the net's answer, replaced by a wrong class with probability ``p_wrong`` per
    example and forward."""

    randomized = True

    def __init__(self, net, p_wrong):
        super().__init__(net, "flaky")
        self.p_wrong = p_wrong

    def forward(self, x):
        logits = self.net(x)
        flip = torch.rand(len(x), device=x.device) < self.p_wrong
        wrong = F.one_hot((logits.argmax(1) + 1) % logits.shape[1], logits.shape[1]) * 1e3
        return torch.where(flip[:, None], wrong.to(logits.dtype), logits)


def pgd(eps=0.3, steps=10, **kw):
    return {"kind": "pgd", "name": "pgd", "eps": eps, "steps": steps, **kw}


def records_of(predictor, x, y, specs, **kw):
    shard = evaluate_shard(
        predictor, x, y, torch.arange(len(x)), specs, num_classes=10, seed=0, progress=False, **kw
    )
    meta = {**META, "inference": predictor.name}
    return build_records(shard, meta, randomized=predictor.randomized, needs_adaptive=True)


def pick(records, attack="pgd", tm="adaptive"):
    return next(r for r in records if r["attack"] == attack and r["threat_model"] == tm)


def test_adaptive_verdict_keeps_the_transfer_candidate(trained):
    """The saturated predictor defeats gradient PGD (its raw adaptive number is near clean), but
    the transfer example from the bare net breaks it; the adaptive verdict takes it."""
    net, x, y = trained
    records = records_of(Saturated(net, "saturated"), x, y, [pgd()], threat_models=BOTH)
    adaptive, oblivious = pick(records), pick(records, tm="oblivious")
    assert oblivious["robust_acc"] < 0.3
    assert adaptive["robust_acc_without_transfer"] > oblivious["robust_acc"] + 0.4
    assert adaptive["robust_acc"] <= oblivious["robust_acc"]
    assert adaptive["transfer_share"] > 0.4
    worst = {r["threat_model"]: r["robust_acc"] for r in records if r["kind"] == "worst_case"}
    assert worst["adaptive"] <= worst["oblivious"]
    assert not any("adaptive_weaker_than_transfer" in r["sanity_flags"] for r in records)


def test_without_the_floor_a_weaker_adaptive_attack_is_flagged(trained):
    net, x, y = trained
    records = records_of(
        Saturated(net, "saturated"), x, y, [pgd()], threat_models=BOTH, keep_transfer=False
    )
    adaptive = pick(records)
    assert adaptive["robust_acc"] > pick(records, tm="oblivious")["robust_acc"]
    assert "adaptive_weaker_than_transfer" in adaptive["sanity_flags"]
    assert "transfer_share" not in adaptive
    worst = next(
        r for r in records if r["kind"] == "worst_case" and r["threat_model"] == "adaptive"
    )
    assert "adaptive_weaker_than_transfer" in worst["sanity_flags"]


def test_the_floor_of_a_randomized_predictor_uses_the_oblivious_draws(trained):
    """Randomized and gradient-masked: per example the adaptive verdict is either its own draws or
    exactly the oblivious record's draws, so worst-of-k and majority-of-k never exceed them."""
    net, x, y = trained
    shard = evaluate_shard(
        Flaky(Saturated(net, "s"), 0.05),
        x,
        y,
        torch.arange(len(x)),
        [pgd()],
        num_classes=10,
        seed=0,
        progress=False,
        threat_models=BOTH,
        score_draws=10,
    )
    oblivious, adaptive = shard.outcomes
    took = adaptive.from_transfer
    assert took.float().mean() > 0.2
    assert torch.equal(adaptive.adv_correct[took], oblivious.adv_correct[took])
    assert torch.equal(adaptive.adv_correct[~took], adaptive.own_correct[~took])
    for rule in (lambda d: d.all(1), lambda d: d.sum(1) * 2 > 10):
        assert not (rule(adaptive.adv_correct) & ~rule(oblivious.adv_correct)).any()


def test_randomized_predictor_reports_three_protocols(trained):
    """Right on each draw with probability 0.9 (times the net's accuracy): one draw ~0.9,
    majority of 10 ~1, all 10 ~0.35 of the net's clean accuracy; the headline is worst-of-k."""
    net, x, y = trained
    records = records_of(Flaky(net, 0.1), x, y, [pgd(eps=0.0)], score_draws=10)
    r = pick(records)
    base = float((net(x).argmax(1) == y).float().mean())
    assert r["score_draws"] == 10 and r["protocol"] == "worst_of_k"
    assert r["clean_acc"] == r["clean_acc_worst_of_k"]
    assert abs(r["clean_acc_one_draw"] - 0.9 * base) < 0.07
    assert abs(r["clean_acc_majority_of_k"] - base) < 0.03
    assert abs(r["clean_acc_worst_of_k"] - 0.9**10 * base) < 0.1
    for protocol in ("one_draw", "majority_of_k", "worst_of_k"):
        assert r[f"robust_acc_{protocol}"] <= r[f"clean_acc_{protocol}"]
    assert r["robust_acc_worst_of_k"] <= r["robust_acc_majority_of_k"]


def test_a_deterministic_predictor_writes_only_the_headline(trained):
    net, x, y = trained
    r = pick(records_of(Plain(net, "plain"), x, y, [pgd()], score_draws=10))
    assert "score_draws" not in r and "robust_acc_one_draw" not in r


def test_restarts_keep_the_candidate_right_on_fewest_draws():
    """Candidate A fools a randomized model on 30% of draws, B on all of them. Judged on one
    draw, A is taken as broken on ~30% of points and B is never tried there; judged on several
    draws, every point goes on to B."""

    class Coin(nn.Module):
        randomized = True

        def forward(self, z):
            fooled = torch.rand(len(z)) < z.flatten(1)[:, 0]  # z encodes P(wrong)
            return F.one_hot(fooled.long(), 2).float()

    calls, seeds = [], []

    def craft(x, y, seed):
        calls.append(len(x))
        seeds.append(seed)
        return torch.full_like(x, 0.3 if len(calls) == 1 else 1.0)

    x, y = torch.zeros(500, 1, 1, 1), torch.zeros(500, dtype=torch.long)
    torch.manual_seed(0)
    x_adv = restarted(craft, Coin(), restarts=2)(x, y, 0)
    assert (x_adv == 1.0).float().mean() > 0.99
    # the restart draws its own starts: the call's seed again would replay the first run
    assert seeds[0] == 0 and len(set(seeds)) == len(seeds) == 2
    counts = correct_counts(Coin(), torch.full_like(x, 0.3), y)
    assert counts.max() <= SELECTION_DRAWS and counts.float().mean() > 0.6 * SELECTION_DRAWS


def test_square_beating_apgd_is_flagged_from_the_attack_kinds(trained):
    """attack=[apgd_ce, square] on the saturated predictor: APGD's gradients vanish, Square's
    queries do not; names differ from kinds, so the flag must come from the kinds."""
    net, x, y = trained
    specs = [
        {
            "_target_": "robustlab.attacks.kinds.apgd.APGDSpec",
            "name": "apgd_ce",
            "eps": 0.3,
            "steps": 10,
        },
        {
            "_target_": "robustlab.attacks.kinds.square.SquareSpec",
            "name": "square",
            "eps": 0.3,
            "queries": 300,
        },
    ]
    records = records_of(Saturated(net, "saturated"), x[:100], y[:100], specs)
    square, apgd = pick(records, "square"), pick(records, "apgd_ce")
    assert square["robust_acc"] < apgd["robust_acc"]
    assert "square_beats_whitebox" in square["sanity_flags"]
    plain = records_of(Plain(net, "plain"), x[:100], y[:100], specs)
    assert not any("square_beats_whitebox" in r["sanity_flags"] for r in plain)


@dataclass(frozen=True)
class UncheckedAPGDSpec(AttackSpec):
    """torchattacks' APGD built without robustlab's checks, so ``restarts=0`` reaches it: the
    failure the issue found (APGD and AutoAttack silently returned the clean input)."""

    kind = "test_unchecked_apgd"

    def __post_init__(self) -> None:  # no check_positive("restarts")
        object.__setattr__(self, "name", self.name or self.kind)
        object.__setattr__(self, "eps", as_numbers("eps", self.eps))

    def craft(self, model, p, num_classes):
        return plain(APGD(model, eps=p["eps"], steps=10, n_restarts=p["restarts"]), False, 10)


def test_an_attack_that_took_no_gradient_step_is_flagged(trained):
    net, x, y = trained
    specs = [
        UncheckedAPGDSpec(eps=0.3, name="apgd_r0", restarts=0),
        UncheckedAPGDSpec(eps=0.3, name="apgd_r1", restarts=1),
    ]
    records = records_of(Plain(net, "plain"), x[:50], y[:50], specs)
    noop, real = pick(records, "apgd_r0"), pick(records, "apgd_r1")
    assert noop["robust_acc"] == noop["clean_acc"] > real["robust_acc"]  # it did nothing
    assert noop["backward_passes"] == 0 and "no_gradient_steps" in noop["sanity_flags"]
    assert real["backward_passes"] > 0 and "no_gradient_steps" not in real["sanity_flags"]
    at_zero = records_of(
        Plain(net, "plain"), x[:50], y[:50], [UncheckedAPGDSpec(eps=0.0, name="z", restarts=0)]
    )
    assert "no_gradient_steps" not in pick(at_zero, "z")["sanity_flags"]


def test_natural_shift_records_of_a_randomized_predictor_use_the_protocols(trained):
    from robustlab.evaluation.natural import shift_records

    net, x, y = trained
    records = shift_records(
        Flaky(net, 0.1), net, x, y, META | {"inference": "flaky"}, [1], ["darker"], 64, 10
    )
    flaky = next(r for r in records if r["inference"] == "flaky")
    plain = next(r for r in records if r["inference"] == "plain")
    assert flaky["score_draws"] == 10 and flaky["clean_acc"] == flaky["clean_acc_worst_of_k"]
    assert flaky["clean_acc_worst_of_k"] < flaky["clean_acc_one_draw"]
    assert "score_draws" not in plain


def test_restarts_on_a_randomized_model_are_judged_by_robustlab(trained):
    """torchattacks judges its own restarts on one forward: on a randomized model robustlab runs
    them (each candidate judged on several draws); on a deterministic one torchattacks does, as
    the reference."""
    from robustlab.attacks.autoattack import AutoAttack
    from robustlab.attacks.crafting import restart_split

    net, _, _ = trained
    flaky, plain_net = Flaky(net, 0.1), Plain(net, "plain")
    assert restart_split(flaky, 3) == (1, 3) and restart_split(plain_net, 3) == (3, 1)
    for model, inner, rounds in ((flaky, 1, 2), (plain_net, 2, 1)):
        aa = AutoAttack(model, norm="linf", eps=0.1, num_classes=10, version="rand", restarts=2)
        assert aa.rounds == rounds
        assert all(part.attack.n_restarts == inner for part in aa.components.values())
        standard = AutoAttack(model, norm="linf", eps=0.1, num_classes=10, restarts=2)
        assert standard.rounds == rounds and standard.deterministic == (model is plain_net)
        parts = standard.components
        assert parts["apgd_ce"].restarts == parts["fab_t"].restarts == inner
    # the standard version on a randomized model: nothing stops on one draw, draws judge it
    x, y = trained[1][:12], trained[2][:12]
    aa = AutoAttack(flaky, norm="linf", eps=0.1, num_classes=10, steps=5, queries=20)
    with torch.enable_grad():
        x_adv = aa(x, y, seed=0)
    credited = torch.stack(list(aa.last_component_success.values())).sum(0)
    assert credited.max() <= 1 and (x_adv - x).abs().max() <= 0.1 + 1e-6


def test_autoattack_rounds_on_a_randomized_model_draw_their_own_starts_pass_by_pass(trained):
    """On a randomized model the restarts are robustlab's rounds: each round calls a part with a
    seed of its own (the same seed would replay the previous round's starts and draws), over the
    points still robust in passes of at most batch_size."""
    from robustlab.attacks.autoattack import AutoAttack

    net, x, y = trained
    x, y = x[:12], y[:12]
    aa = AutoAttack(
        Flaky(net, 0.3), norm="linf", eps=0.05, num_classes=10, steps=3, queries=5,
        restarts=2, batch_size=5,
    )  # fmt: skip
    calls = []
    part = aa.components["apgd_ce"]

    def spy(model, xs, ys, seed, *args):
        calls.append((len(xs), seed))
        return part(model, xs, ys, seed, *args)

    aa.components["apgd_ce"] = spy
    with torch.enable_grad():
        x_adv = aa(x, y, seed=0)
    assert aa.rounds == 2 and max(n for n, _ in calls) <= 5 and len(calls) > 2  # passes
    seeds = [seed for _, seed in calls]
    assert len(set(seeds)) == 2 and seeds[0] == 0  # one per round, the first the call's own
    credited = torch.stack(list(aa.last_component_success.values())).sum(0)
    assert credited.max() <= 1 and (x_adv - x).abs().max() <= 0.05 + 1e-6
