"""Opt-in precision and compilation (robustlab.precision): bf16 attacks agree with fp32 ones on a
trained digits net, records say when an attack ran in bf16, the options reach the cell's hash and
(the net's) the training key, bad values fail in one line, and the GPU benchmark script starts."""

from __future__ import annotations

import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import open_dict
from test_bad_input import robustlab

from robustlab.cache import training_key
from robustlab.config import config_hash, seed_group
from robustlab.evaluation.engine import evaluate_shard
from robustlab.evaluation.summary import build_records
from robustlab.inference.plain import Plain
from robustlab.plan.checks import attack_specs
from robustlab.precision import (
    attack_autocast,
    evaluates_channels_last,
    evaluation_layout,
    prepare_net,
)
from robustlab.results.record import WORST_CASE
from robustlab.run import run

ROOT = Path(__file__).resolve().parents[1]
# a short AutoAttack-free set at eps 0.1, where the ERM net keeps about half its points under PGD
# (at digits' eps 0.2 almost nothing survives, and agreement would say little)
ATTACKS = (
    "attack=[fgsm,pgd,apgd_ce,square]",
    "threat.eps=0.1",
    "attack.apgd_ce.steps=10",
    "attack.square.queries=100",
)
N_POINTS = 240  # of the 360 test digits


@pytest.fixture(scope="module")
def one_thread_module():
    """Small nets and batches: one thread is as fast, and does not stall on a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits_erm(one_thread_module):
    """The digits smallcnn trained with plain cross-entropy (6 epochs, ~96% clean), the first
    N_POINTS test points and the attack specs: (cfg, net, x, y, specs)."""
    from hydra import compose, initialize_config_dir

    from robustlab.paths import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["output_dir=unused", *ATTACKS])
    datamodule = instantiate(cfg.dataset)
    datamodule.setup("fit")
    x_train, y_train = datamodule.tensors("train")
    datamodule.setup("test")
    x, y = datamodule.tensors("test")
    x, y = x[:N_POINTS], y[:N_POINTS]
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = instantiate(cfg.model)
        optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
        for _ in range(6):
            order = torch.randperm(len(x_train))
            for i in range(0, len(x_train), 64):
                batch = order[i : i + 64]
                loss = F.cross_entropy(net(x_train[batch]), y_train[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    return cfg, net.eval(), x, y, attack_specs(cfg)


META = {
    "run_id": "t",
    "config_hash": "h",
    "dataset": "digits",
    "model": "smallcnn",
    "defense": "erm",
    "inference": "plain",
    "seed": 0,
}


def shard(net, x, y, specs, precision):
    return evaluate_shard(
        Plain(net, name="plain"),
        x,
        y,
        torch.arange(len(x)),
        list(specs),
        num_classes=10,
        seed=0,
        progress=False,
        attack_precision=precision,
    )


def test_bf16_attacks_agree_with_fp32_on_a_trained_digits_net(digits_erm):
    """Per example, an attack crafted in bf16 reaches the fp32 attack's verdict on >= 95% of the
    test points, and its robust accuracy is within 3 points (measured: 99-100% agreement, at
    most a 1-point difference; verdicts are fp32 either way, so clean accuracy is the same)."""
    _, net, x, y, specs = digits_erm
    full, half = (shard(net, x, y, specs, p) for p in ("fp32", "bf16"))
    assert torch.equal(full.clean_correct, half.clean_correct)
    clean = full.clean_correct[:, 0]
    assert clean.float().mean() > 0.9
    seen = []
    for a, b in zip(full.outcomes, half.outcomes):
        assert (a.attack, a.precision, b.precision) == (b.attack, "fp32", "bf16")
        robust_full, robust_half = clean & a.adv_correct[:, 0], clean & b.adv_correct[:, 0]
        agreement = (robust_full == robust_half).float().mean().item()
        acc_full, acc_half = robust_full.float().mean().item(), robust_half.float().mean().item()
        seen.append(f"{a.attack}: agree {agreement:.3f}, fp32 {acc_full:.3f}, bf16 {acc_half:.3f}")
        assert agreement >= 0.95, seen
        assert abs(acc_full - acc_half) <= 0.03, seen
    pgd = next(o for o in full.outcomes if o.attack == "pgd")
    assert 0.2 < (clean & pgd.adv_correct[:, 0]).float().mean() < 0.8, seen  # not trivial
    print("\n".join(seen))


def test_records_say_the_attack_precision(digits_erm):
    _, net, x, y, specs = digits_erm
    x, y = x[:32], y[:32]
    for precision in ("fp32", "bf16"):
        records = build_records(
            shard(net, x, y, specs[:2], precision), META, randomized=False, needs_adaptive=False
        )
        assert {r["attack"] for r in records} == {"fgsm", "pgd", WORST_CASE}
        assert {r["attack_precision"] for r in records} == {precision}


def test_the_table_and_the_report_keep_bf16_attacks_apart():
    from records_fixture import make_record

    from robustlab.results.report import build_grid
    from robustlab.results.table import format_cell_table

    full = make_record(robust_acc=0.10)
    half = make_record(robust_acc=0.12, attack_precision="bf16", config_hash="h-bf16")
    assert "bf16" not in format_cell_table([full]).splitlines()[0]
    assert "attacks crafted in bf16 autocast" in format_cell_table([half]).splitlines()[0]
    grid = build_grid("digits", [full, half])
    assert grid.rows == ["erm", "erm [bf16 attacks]"] and grid.shadowed == 0


def test_bf16_crafting_keeps_fp32_inputs_outputs_and_gradients(digits_erm):
    _, net, x, y, _ = digits_erm
    xb = x[:8].clone().requires_grad_(True)
    with attack_autocast(net, "bf16", "cpu"):
        assert torch.is_autocast_enabled("cpu")
        logits = net(xb)
        assert logits.dtype == torch.float32  # cast back at the net's boundary
        (grad,) = torch.autograd.grad(F.cross_entropy(logits, y[:8]), xb)
    assert grad.dtype == torch.float32 and grad.abs().sum() > 0
    assert not torch.is_autocast_enabled("cpu") and not net._forward_hooks  # hook removed
    assert net(x[:8]).dtype == torch.float32


def test_channels_last_and_compiled_net_give_the_plain_verdicts(digits_erm, monkeypatch):
    """The net in channels_last, its forward compiled (the eager backend here: inductor would
    compile C++ for a minute on this CPU), under the attacks' hooks: the same verdicts."""
    cfg, net, x, y, specs = digits_erm
    monkeypatch.setattr(torch, "compile", partial(torch.compile, backend="eager"))
    fast = prepare_net(instantiate(cfg.model), channels_last=True, compile=True)
    assert list(fast.state_dict()) == list(net.state_dict())  # keys unchanged by compile
    fast.load_state_dict(net.state_dict())
    fast.eval()
    conv = fast.features[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(fast(x[:64]), net(x[:64]), atol=1e-5)
    x, y = x[:96], y[:96]
    plain, other = (shard(n, x, y, specs[:2], "fp32") for n in (net, fast))
    for a, b in zip(plain.outcomes, other.outcomes):
        assert (a.adv_correct == b.adv_correct).float().mean() >= 0.95
        assert a.forward_rows == b.forward_rows  # the pass counter still sees every forward


# config_hash of configs composed from conf/ by the code before precision.channels_last=auto
# and eval.grad_check_points existed (commit f6ef31f): finished cells are found again by hash, so
# an option added later must leave these unchanged (a deliberate change updates them: AutoAttack's
# batch_size and points_per_call, which change its random starts, changed the third one)
HASHES_BEFORE_THE_OPTIONS = {
    (): "e141b243916c4d55",
    ("precision.attack=bf16",): "def8ecc34f790ccf",
    ("defense=pgd_at", "attack=[pgd,autoattack]"): "73fb1f3931aa23b8",
    ("precision.compile=true",): "0f6b2e5a228efe43",
}


@pytest.mark.parametrize("overrides", list(HASHES_BEFORE_THE_OPTIONS), ids=str)
def test_cells_keep_the_hash_they_had_before_the_options(compose_cfg, overrides):
    cfg = compose_cfg(*overrides)
    assert config_hash(cfg) == HASHES_BEFORE_THE_OPTIONS[overrides]
    without = cfg.copy()
    with open_dict(without):
        del without.eval["grad_check_points"]
    assert config_hash(without) == config_hash(cfg)


def test_options_reach_the_cell_hash_and_the_net_ones_the_training_key(compose_cfg):
    base = compose_cfg()
    bf16_attacks = compose_cfg("precision.attack=bf16")
    bf16_training = compose_cfg("trainer.precision=bf16-mixed")
    channels_last = compose_cfg("precision.channels_last=true")
    compiled = compose_cfg("precision.compile=true")
    hashes = {config_hash(c) for c in (base, bf16_attacks, bf16_training, channels_last, compiled)}
    assert len(hashes) == 5
    assert seed_group(bf16_attacks) != seed_group(base)
    # attacks do not change training; bf16 training, channels_last and compile do
    assert training_key(bf16_attacks) == training_key(base)
    keys = {training_key(c) for c in (base, bf16_training, channels_last, compiled)}
    assert len(keys) == 4
    # all off, the hash and the training key are those of a config without the node (cells and
    # cache entries from before the options existed are found again)
    bare = base.copy()
    with open_dict(bare):
        del bare["precision"]
    assert config_hash(bare) == config_hash(base)
    assert training_key(bare) == training_key(base)
    # channels_last false or auto (the default): the same training and, as between devices, the
    # same cell: neither hash moves
    for setting in ("false", "auto"):
        other = compose_cfg(f"precision.channels_last={setting}")
        assert config_hash(other) == config_hash(base)
        assert training_key(other) == training_key(base)
        # beside another option too: the node is hashed with channels_last as false
        with_bf16 = compose_cfg("precision.attack=bf16", f"precision.channels_last={setting}")
        assert config_hash(with_bf16) == config_hash(bf16_attacks)
    # written before auto existed: channels_last false with bf16 attacks hashes as it did then
    old = bf16_attacks.copy()
    with open_dict(old):
        old.precision.channels_last = False
    assert config_hash(old) == config_hash(bf16_attacks)
    # the gradient check's sample is a diagnostic: it changes no verdict, and no hash
    for points in ("null", "10"):
        assert config_hash(compose_cfg(f"eval.grad_check_points={points}")) == config_hash(base)


def test_evaluation_layout_runs_channels_last_inside_and_restores_the_net():
    """auto: channels_last on a CPU only; inside the block the conv weights and inputs are
    channels_last with the same logits (up to float order), after it the net is as it was; an
    enclosing block or a prepared net is left alone, a net without convolutions stays
    contiguous."""
    assert evaluates_channels_last("auto", "cpu") and evaluates_channels_last(True, "cuda")
    assert not evaluates_channels_last("auto", "cuda") and not evaluates_channels_last(False, "cpu")
    for bad in ("yes", 1):
        with pytest.raises(ValueError, match=f"channels_last={bad!r} is not one of"):
            evaluates_channels_last(bad, "cpu")
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(36, 3)
    )
    conv = net[0].weight
    contiguous = conv.stride()
    x = torch.rand(5, 3, 8, 8)
    before = net(x)
    seen = []
    net[1].register_forward_pre_hook(lambda _m, a: seen.append(a[0].is_contiguous()))
    with evaluation_layout(net, False) as memory_format:
        assert memory_format == "contiguous" and torch.equal(net(x), before)
    with evaluation_layout(net, True) as memory_format:
        assert memory_format == "channels_last"
        assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
        with evaluation_layout(net, True) as inner:  # nested: the outer block's conversion holds
            assert inner == "channels_last"
        assert conv.is_contiguous(memory_format=torch.channels_last)
        assert torch.allclose(net(x), before, atol=1e-6)
    net(x)
    assert seen == [True, False, True]  # the max-pool saw a channels_last map inside only
    assert conv.stride() == contiguous and len(net._forward_pre_hooks) == 0
    assert net[0].weight is conv and torch.equal(net(x), before)
    mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 3))
    with evaluation_layout(mlp, True) as memory_format:
        assert memory_format == "contiguous" and not mlp._forward_pre_hooks
    prepared = prepare_net(net, channels_last=True)
    with evaluation_layout(prepared, False) as memory_format:  # a channels_last-trained net
        assert memory_format == "channels_last"
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()


@pytest.mark.parametrize("setting, expected", [("auto", "channels_last"), ("false", "contiguous")])
def test_a_cell_evaluates_on_cpu_in_the_memory_format_its_records_say(
    compose_cfg, tmp_path, monkeypatch, setting, expected
):
    """Through the real pipeline: each evaluation (during training and at its end) crafts on the
    net in the chosen format, with no hook left over from the one before, and the records say
    which."""
    import robustlab.evaluation.evaluator as evaluator

    formats = []

    def spy(predictor, *args, **kwargs):
        convs = [m for m in predictor.net.modules() if isinstance(m, torch.nn.Conv2d)]
        conv = convs[-1].weight  # 64 input channels (the first conv's one channel fits both)
        formats.append((not conv.is_contiguous(), len(predictor.net._forward_pre_hooks)))
        return evaluate_shard(predictor, *args, **kwargs)

    monkeypatch.setattr(evaluator, "evaluate_shard", spy)
    cfg = compose_cfg(
        f"cache.dir={tmp_path / 'cache'}",
        f"precision.channels_last={setting}",
        "trainer.max_epochs=2",
        "eval.every_n_val_epochs=1",  # evaluated during training too: the net comes back each time
        "eval.val_subset=20",
        "dataset.train_limit=200",
        "attack=[pgd]",
        "attack.pgd.steps=3",
        "eval.n_examples=40",
        "logger=none",
        "trainer.enable_progress_bar=false",
        "torch_threads=1",
    )
    records = run(cfg)
    on = expected == "channels_last"
    assert formats == [(on, int(on))] * 3  # two epochs' subsets, then the test split
    assert {r["memory_format"] for r in records} == {expected}


def test_a_bf16_cell_trains_in_bf16_and_records_bf16_attacks(compose_cfg, tmp_path, monkeypatch):
    """Through the real pipeline: PGD-AT trained with Lightning's bf16-mixed (inner attack
    included), then evaluated with bf16 attacks; Lightning's autocast does not leak into the
    evaluation (it is switched on by precision.attack, not by the trainer)."""
    import robustlab.evaluation.evaluator as evaluator

    autocast_at_evaluation = []

    def spy(*args, **kwargs):
        autocast_at_evaluation.append(torch.is_autocast_enabled("cpu"))
        return evaluate_shard(*args, **kwargs)

    monkeypatch.setattr(evaluator, "evaluate_shard", spy)
    cfg = compose_cfg(
        f"cache.dir={tmp_path / 'cache'}",
        "defense=pgd_at",
        "defense.inner.steps=2",
        "trainer.max_epochs=1",
        "trainer.precision=bf16-mixed",
        "precision.attack=bf16",
        "dataset.train_limit=300",
        "attack=[pgd]",
        "attack.pgd.steps=5",
        "eval.n_examples=40",
        "logger=none",
        "trainer.enable_progress_bar=false",
        "torch_threads=1",
    )
    records = run(cfg)
    assert autocast_at_evaluation == [False]
    assert {r["attack"] for r in records} == {"pgd", WORST_CASE}
    assert {r["attack_precision"] for r in records} == {"bf16"}
    assert all(r["config_hash"] == config_hash(cfg) for r in records)


@pytest.mark.parametrize(
    "args, needle",
    [
        (
            ["precision.attack=fp16"],
            "precision.attack='fp16' is not one of ['fp32', 'bf16']",
        ),
        (
            ["precision.channels_last=maybe"],
            "precision.channels_last='maybe' is not one of [true, false, auto]",
        ),
        (["precision.compile=1"], "precision.compile=1 must be true or false"),
        (
            ["trainer.precision=bf16"],
            "trainer.precision='bf16' is not one of ['32-true', 'bf16-mixed', '16-mixed']",
        ),
        (["trainer.precision=16-mixed"], "trainer.precision='16-mixed' needs a GPU"),
        (["precision=bf16"], "precision='bf16' is a node, not a value"),
    ],
    ids=lambda v: v if isinstance(v, str) else " ".join(v),
)
def test_a_bad_precision_value_is_one_line(monkeypatch, capsys, tmp_path, args, needle):
    monkeypatch.chdir(tmp_path)
    assert needle in robustlab(monkeypatch, capsys, tmp_path, *args)


def test_gpu_bench_parses_its_options_and_says_in_one_line_that_it_needs_cuda(tmp_path, capsys):
    """It imports (bare_loop.py only at its first bare measurement), parses its options, and on
    a machine without CUDA (this one) ends in one line on stderr, writing nothing."""
    import importlib.util

    script = ROOT / "experiments" / "bench" / "gpu_bench.py"
    spec = importlib.util.spec_from_file_location("gpu_bench", script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = bench.parse_args(["--variants", "fp32,compile", "--points", "300"])
    assert args.variants == ["fp32", "compile"] and args.points == 300
    assert bench.parse_args([]).variants == ["fp32", "bf16", "channels_last", "compile"]
    with pytest.raises(SystemExit) as help_:
        bench.parse_args(["--help"])
    assert help_.value.code == 0 and "--smoke-cpu" in capsys.readouterr().out
    with pytest.raises(SystemExit) as bad:
        bench.parse_args(["--variants", "fp16"])
    assert bad.value.code == 2 and "--variants='fp16'" in capsys.readouterr().err
    out = tmp_path / "r.json"
    done = subprocess.run(
        [sys.executable, str(script), "--json", str(out), "--md", str(tmp_path / "r.md")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
        cwd=tmp_path,
    )
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert lines[0].startswith("gpu_bench: no CUDA device") and not out.exists()
