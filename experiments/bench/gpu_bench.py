"""GPU benchmark of robustlab's opt-in precision and compilation (#17), beside a bare loop.

    python experiments/bench/gpu_bench.py                        # preact_resnet18, 32x32x3, ~3-5 min
    python experiments/bench/gpu_bench.py --model smallcnn --variants fp32,bf16

On one CUDA device (the first visible one), for each variant

- ``fp32``: robustlab's defaults;
- ``bf16``: training with ``trainer.precision=bf16-mixed``, attacks with ``precision.attack=bf16``
  (the bare loop: the same calls under ``torch.autocast("cuda", torch.bfloat16)``);
- ``channels_last``: ``precision.channels_last=true`` (the bare loop: net and data in
  channels_last);
- ``compile``: ``precision.compile=true`` (the bare loop: its net's forward through
  ``torch.compile`` the same way);
- ``all``: the three together (not in the default list),

it times ERM and PGD-AT (PGD-10 inner attack) training steps (Lightning + robustlab's
``DefenseModule``, against experiments/bench/bare_loop.py's ``erm_epoch`` and ``pgd_at_epoch``),
PGD-20 evaluation (robustlab's evaluation engine, clean scoring and gradient check included,
against bare_loop's ``pgd_eval``) and robustlab's AutoAttack (standard: APGD-CE, APGD-T, FAB-T,
Square; no bare counterpart) on ``--points`` test points. Warm-up steps (where torch.compile
compiles) are timed apart and left out of the per-step medians.

The data are synthetic (seeded, class-structured, CIFAR-shaped; MNIST-shaped for smallcnn): the
machine needs no dataset files and no network; accuracies are printed so the number of points
AutoAttack's later parts attack is known (it attacks only the points still robust). The bare loop
runs robustlab's PreActResNet18 module with ``--model preact_resnet18`` (bare_loop.py has only
smallcnn); no robustlab code runs in its loop. bare_loop.py is imported lazily, at the first bare
measurement, so this script starts (and ``--help`` works) without it.

Writes experiments/bench/gpu_results.json and gpu_results.md (the command, the device name,
every figure); exits with one line on stderr when there is no CUDA device. A time budget
(``--budget-s``, default 270 s) skips what would start after it, so a run stays under 5 minutes;
skipped and failed measurements are written as such.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from torch.utils.data import DataLoader, TensorDataset

from robustlab.evaluation.engine import evaluate_shard
from robustlab.inference.plain import Plain
from robustlab.paths import CONF_PACKAGE
from robustlab.plan.checks import attack_specs
from robustlab.precision import prepare_net

HERE = Path(__file__).resolve().parent
DEVICE = "cuda"  # "cpu" only with --smoke-cpu (a check of this script's code paths, no figures)
VARIANTS = {
    "fp32": {"bf16": False, "channels_last": False, "compile": False},
    "bf16": {"bf16": True, "channels_last": False, "compile": False},
    "channels_last": {"bf16": False, "channels_last": True, "compile": False},
    "compile": {"bf16": False, "channels_last": False, "compile": True},
    "all": {"bf16": True, "channels_last": True, "compile": True},
}
DEFAULT_VARIANTS = "fp32,bf16,channels_last,compile"
# per model: the dataset config whose shape, statistics and eps it is benchmarked with
SHAPES = {"preact_resnet18": "cifar10", "smallcnn": "mnist"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(SHAPES), default="preact_resnet18")
    parser.add_argument("--variants", default=DEFAULT_VARIANTS, help=f"of {list(VARIANTS)}")
    parser.add_argument("--points", type=int, default=256, help="evaluated points (PGD-20, AA)")
    parser.add_argument("--batch-size", type=int, default=128, help="training batch")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before (compiles)")
    parser.add_argument("--aa-steps", type=int, default=100, help="AutoAttack's APGD/FAB steps")
    parser.add_argument("--aa-queries", type=int, default=5000, help="AutoAttack's Square queries")
    parser.add_argument("--no-autoattack", action="store_true")
    parser.add_argument("--budget-s", type=float, default=270.0, help="start nothing after this")
    parser.add_argument("--json", type=Path, default=HERE / "gpu_results.json")
    parser.add_argument("--md", type=Path, default=HERE / "gpu_results.md")
    parser.add_argument(
        "--smoke-cpu",
        action="store_true",
        help="run every code path on the CPU (use tiny sizes): checks the script, measures nothing",
    )
    args = parser.parse_args(argv)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    bad = [v for v in names if v not in VARIANTS]
    if bad or not names:
        parser.error(f"--variants={args.variants!r}: choose from {list(VARIANTS)}")
    args.variants = names
    for key in ("points", "batch_size", "steps", "aa_steps", "aa_queries"):
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be a positive integer")
    return args


def cell_config(model: str, *overrides: str):
    """The project's config for ``model`` on its dataset shape (no dataset files are read)."""
    with initialize_config_module(config_module=CONF_PACKAGE, version_base="1.3"):
        return compose(
            config_name="config",
            overrides=[
                f"model={model}",
                f"dataset={SHAPES[model]}",
                "output_dir=unused",
                *overrides,
            ],
        )


def synthetic(cfg, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-structured images in [0, 1]: a fixed random pattern per class plus noise."""
    g = torch.Generator().manual_seed(seed)
    shape = (int(cfg.dataset.in_channels), int(cfg.dataset.image_size), int(cfg.dataset.image_size))
    centers = torch.rand(10, *shape, generator=torch.Generator().manual_seed(1234))
    y = torch.randint(0, 10, (n,), generator=g)
    x = (0.5 * centers[y] + 0.5 * torch.rand(n, *shape, generator=g)).clamp(0, 1)
    return x, y


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


class StepTimer(pl.Callback):
    """Seconds per training batch (device synchronized at both ends)."""

    def __init__(self):
        self.seconds: list[float] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        sync()
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        sync()
        self.seconds.append(time.perf_counter() - self.start)


def split_timing(seconds: list[float], warmup: int) -> dict[str, float]:
    timed = seconds[warmup:] or seconds
    return {
        "ms_per_step": 1000 * statistics.median(timed),
        "warmup_s": sum(seconds[:warmup]),
        "steps": len(timed),
    }


def robustlab_net(cfg, variant: dict[str, bool]):
    return prepare_net(
        instantiate(cfg.model),
        channels_last=variant["channels_last"],
        compile=variant["compile"],
    )


def robustlab_training(args, cfg, variant, defense: str, x, y) -> tuple[dict, torch.nn.Module]:
    """Lightning fit of robustlab's ``defense`` for warmup + steps batches; the trained net."""
    torch.manual_seed(0)
    net = robustlab_net(cfg, variant)
    module = instantiate(cfg.defense, net=net, _convert_="all")
    timer = StepTimer()
    trainer = pl.Trainer(
        accelerator="gpu" if DEVICE == "cuda" else "cpu",
        devices=1,
        precision="bf16-mixed" if variant["bf16"] else "32-true",
        max_epochs=1,
        limit_train_batches=args.warmup + args.steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        inference_mode=False,
        callbacks=[timer],
    )
    loader = DataLoader(
        TensorDataset(x, y), batch_size=args.batch_size, shuffle=True, drop_last=True
    )
    trainer.fit(module, train_dataloaders=loader)
    return split_timing(timer.seconds, args.warmup), module.net.to(DEVICE).eval()


def bare_net(cfg, variant):
    """The bare loop's net: bare_loop.SmallCNN, or robustlab's PreActResNet18 module (bare_loop
    has no ResNet), with the variant's memory format and compiled forward done by hand."""
    import bare_loop

    torch.manual_seed(0)
    if cfg.model.name == "smallcnn":
        d = cfg.dataset
        net = bare_loop.SmallCNN(
            d.in_channels, d.num_classes, d.image_size, list(d.mean), list(d.std)
        )
    else:
        net = instantiate(cfg.model)
    net = net.to(DEVICE)
    if variant["channels_last"]:
        net = net.to(memory_format=torch.channels_last)
    if variant["compile"]:
        net.forward = torch.compile(net.forward)
    return net


def bare_data(x: torch.Tensor, variant) -> torch.Tensor:
    x = x.to(DEVICE)
    return x.contiguous(memory_format=torch.channels_last) if variant["channels_last"] else x


def autocast(variant):
    return torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=variant["bf16"])


def bare_training(args, cfg, variant, defense: str, x, y) -> dict:
    import bare_loop

    net = bare_net(cfg, variant)
    x, y = bare_data(x, variant), y.to(DEVICE)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    eps, b = float(cfg.dataset.eps), args.batch_size

    def epoch(n_batches: int, offset: int) -> float:
        xs, ys = x[offset : offset + n_batches * b], y[offset : offset + n_batches * b]
        sync()
        start = time.perf_counter()
        with autocast(variant):
            if defense == "erm":
                bare_loop.erm_epoch(net, xs, ys, b, opt, gen)
            else:
                bare_loop.pgd_at_epoch(net, xs, ys, b, opt, gen, eps, 10)
        sync()
        return time.perf_counter() - start

    warm = epoch(args.warmup, 0) if args.warmup else 0.0
    timed = epoch(args.steps, args.warmup * b)
    return {"ms_per_step": 1000 * timed / args.steps, "warmup_s": warm, "steps": args.steps}


def robustlab_eval(args, cfg, variant, net, x, y, attack: str, runs: int = 2) -> dict:
    """One attack through robustlab's evaluation engine (clean scoring, gradient check, attack,
    fp32 verdicts); a compiled net is timed ``runs`` times (the first run compiles; AutoAttack
    runs once, after PGD-20 compiled the net's evaluation graphs)."""
    overrides = [f"attack=[{attack}]"]
    if attack == "autoattack":
        overrides += [f"attack.autoattack.steps={args.aa_steps}"]
        overrides += [f"attack.autoattack.queries={args.aa_queries}"]
    specs = list(attack_specs(cell_config(cfg.model.name, *overrides)))
    x, y = x.to(DEVICE), y.to(DEVICE)
    seconds = []
    for _ in range(runs if variant["compile"] else 1):
        sync()
        start = time.perf_counter()
        shard = evaluate_shard(
            Plain(net, name="plain"),
            x,
            y,
            torch.arange(len(x)),
            specs,
            num_classes=int(cfg.dataset.num_classes),
            seed=0,
            progress=False,
            attack_precision="bf16" if variant["bf16"] else "fp32",
        )
        sync()
        seconds.append(time.perf_counter() - start)
    clean = shard.clean_correct[:, 0]
    robust = clean & shard.outcomes[0].adv_correct[:, 0]
    return {
        "seconds": seconds[-1],
        "first_run_s": seconds[0],
        "clean_acc": clean.float().mean().item(),
        "robust_acc": robust.float().mean().item(),
    }


def bare_eval(args, cfg, variant, trained, x, y) -> dict:
    """bare_loop.pgd_eval (PGD-20) on the same weights as robustlab's evaluation."""
    import bare_loop

    net = bare_net(cfg, variant)
    if type(net) is type(trained):  # robustlab's ResNet module: every parameter and buffer
        net.load_state_dict(trained.state_dict())
    else:  # bare_loop.SmallCNN creates its parameters in robustlab's order (its buffers match)
        with torch.no_grad():
            for mine, theirs in zip(net.parameters(), trained.parameters(), strict=True):
                mine.copy_(theirs)
    x, y = bare_data(x, variant), y.to(DEVICE)
    runs, acc = [], None
    for _ in range(2 if variant["compile"] else 1):
        sync()
        start = time.perf_counter()
        with autocast(variant):
            acc = bare_loop.pgd_eval(net, x, y, float(cfg.dataset.eps), 20)
        sync()
        runs.append(time.perf_counter() - start)
    return {"seconds": runs[-1], "first_run_s": runs[0], "robust_acc": acc}


class Bench:
    """Runs measurements until the time budget is spent; a failure is recorded, not raised."""

    def __init__(self, budget_s: float):
        self.started = time.perf_counter()
        self.budget_s = budget_s
        self.rows: list[dict[str, Any]] = []

    def measure(self, variant: str, workload: str, side: str, fn, *fn_args) -> Any:
        row: dict[str, Any] = {"variant": variant, "workload": workload, "side": side}
        elapsed = time.perf_counter() - self.started
        result = None
        if elapsed > self.budget_s:
            row["skipped"] = f"time budget ({self.budget_s:.0f} s) spent"
        else:
            try:
                result = fn(*fn_args)
                figures = result[0] if isinstance(result, tuple) else result
                row.update(figures)
            except Exception as err:  # recorded, so one failing variant does not end the run
                row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
                result = None
            if DEVICE == "cuda":
                torch.cuda.empty_cache()
        self.rows.append(row)
        print(json.dumps(row), flush=True)
        return result


def main(argv: list[str] | None = None) -> int:
    global DEVICE
    args = parse_args(argv)
    DEVICE = "cpu" if args.smoke_cpu else "cuda"
    if DEVICE == "cuda" and not torch.cuda.is_available():
        print(
            "gpu_bench: no CUDA device (torch.cuda.is_available() is False): this benchmark "
            "needs an NVIDIA GPU; nothing was measured or written",
            file=sys.stderr,
        )
        return 1
    torch.backends.cudnn.benchmark = DEVICE == "cuda"
    bench = Bench(args.budget_s)
    base = cell_config(args.model)
    n_train = (args.warmup + args.steps) * args.batch_size
    x_train, y_train = synthetic(base, n_train, seed=0)
    x_test, y_test = synthetic(base, args.points, seed=1)
    # workload by workload, so a spent budget skips the last workload's variants, not a variant
    trained: dict[str, torch.nn.Module] = {}
    for defense in ("erm", "pgd_at"):
        cfg = cell_config(args.model, f"defense={defense}")
        for name in args.variants:
            work = (args, cfg, VARIANTS[name], defense, x_train, y_train)
            out = bench.measure(name, f"train {defense}", "robustlab", robustlab_training, *work)
            if defense == "erm" and out is not None:
                trained[name] = out[1]  # the net the evaluations attack
            bench.measure(name, f"train {defense}", "bare", bare_training, *work)
    for name, net in trained.items():
        work = (args, base, VARIANTS[name], net, x_test, y_test)
        bench.measure(name, "PGD-20 eval", "robustlab", robustlab_eval, *work, "pgd")
        bench.measure(name, "PGD-20 eval", "bare", bare_eval, *work)
    for name, net in [] if args.no_autoattack else trained.items():
        work = (args, base, VARIANTS[name], net, x_test, y_test)
        bench.measure(name, "AutoAttack", "robustlab", robustlab_eval, *work, "autoattack", 1)
    write(args, bench)
    return 0


def write(args, bench: Bench) -> None:
    command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *sys.argv[1:]])
    meta = {
        "command": command,
        "device": torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu (--smoke-cpu)",
        "torch": torch.__version__,
        "lightning": pl.__version__,
        "python": platform.python_version(),
        "model": args.model,
        "points": args.points,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "warmup": args.warmup,
        "autoattack": {"steps": args.aa_steps, "queries": args.aa_queries},
        "total_s": time.perf_counter() - bench.started,
    }
    args.json.write_text(json.dumps({**meta, "rows": bench.rows}, indent=1) + "\n")
    args.md.write_text(markdown(meta, bench.rows))
    print(f"gpu_bench: wrote {args.json} and {args.md}")


def figure(row: dict[str, Any] | None) -> str:
    if row is None:
        return ""
    if "skipped" in row:
        return "skipped"
    if "error" in row:
        return "failed"
    if "ms_per_step" in row:
        return f"{row['ms_per_step']:.1f} ms/step"
    return f"{row['seconds']:.2f} s"


def value(row: dict[str, Any] | None) -> float | None:
    if row is None or "skipped" in row or "error" in row:
        return None
    return row.get("ms_per_step", row.get("seconds"))


def markdown(meta: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """One table: workload x variant, robustlab beside the bare loop, with the ratio and the
    speed-up over the fp32 variant of the same side."""
    find = {(r["variant"], r["workload"], r["side"]): r for r in rows}
    workloads = list(dict.fromkeys(r["workload"] for r in rows))
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    lines = [
        "# GPU benchmark: precision and compilation (opt-in)",
        "",
        f"`{meta['command']}`",
        "",
        f"Device: {meta['device']}; torch {meta['torch']}, Lightning {meta['lightning']}; model "
        f"{meta['model']}, batch {meta['batch_size']}, {meta['steps']} timed steps after "
        f"{meta['warmup']} warm-up steps, {meta['points']} evaluated points, AutoAttack "
        f"steps {meta['autoattack']['steps']} / queries {meta['autoattack']['queries']}; "
        f"{meta['total_s']:.0f} s in all.",
        "",
        "| workload | variant | robustlab | bare loop | robustlab / bare | robustlab vs fp32 "
        "| robust acc (robustlab / bare) | warm-up steps / first run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for w in workloads:
        for v in variants:
            mine, bare = find.get((v, w, "robustlab")), find.get((v, w, "bare"))
            if mine is None and bare is None:
                continue
            a, b, ref = value(mine), value(bare), value(find.get(("fp32", w, "robustlab")))
            ratio = f"{a / b:.2f}" if a and b else ""
            speedup = f"{ref / a:.2f}x" if a and ref else ""
            accs = [r.get("robust_acc") for r in (mine, bare) if r is not None]
            acc = " / ".join(f"{100 * x:.1f}%" for x in accs if x is not None)
            first = (mine or {}).get("first_run_s") or (mine or {}).get("warmup_s")
            first_text = f"{first:.1f} s" if first else ""
            lines.append(
                f"| {w} | {v} | {figure(mine)} | {figure(bare)} | {ratio} | {speedup} | {acc} "
                f"| {first_text} |"
            )
    failed = [r for r in rows if "error" in r]
    if failed:
        lines += ["", "Failed:", ""]
        lines += [f"- {r['workload']} / {r['variant']} / {r['side']}: {r['error']}" for r in failed]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
