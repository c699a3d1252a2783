"""Benchmark: robustlab's AutoAttack (standard) against the reference, pyautoattack 0.2.0 (fra31's
code, `pip install -e '.[bench]'`), on the same PGD-AT net, points, eps and seed, side by side.

    python experiments/bench/autoattack_bench.py                 # 500 MNIST test points (else digits)
    python experiments/bench/autoattack_bench.py --points 200 --eps 0.15
    python experiments/bench/autoattack_bench.py --quick         # a smoke run: every line

The net is robustlab's smallcnn trained with PGD-10 AT (one clean epoch, then ``--epochs`` epochs
at the dataset's eps, Adam, batch 128), cached under .cache/bench/. Each implementation runs in a
fresh subprocess with the same thread count, one after the other in this run: the reference,
robustlab as a cell evaluates (channels_last on a CPU; ``points_per_call`` points a call, each
part on the points still robust among them in passes of the batch size, as the reference batches
them), robustlab with channels_last=false (its time shown, not held to the target), then
robustlab and the reference again (time: the mean of a side's runs, so a drift of the machine's
speed hits both alike; the repeated runs must give the same verdicts). Time is the attack's wall
time, memory the peak resident set above the resident set just before the attack (VmHWM - VmRSS,
Linux), and passes are the rows the net saw (forward, backward). Both start from the same seed: APGD-CE and
APGD-T's first target draw the reference's starts, FAB-T is deterministic, so the per-example
verdicts are compared one by one (where later targets' starts differ, robust accuracy must stay
within 0.5 points). Output, one line per figure:

    name  robustlab  reference  ratio  target  PASS/FAIL
"""

from __future__ import annotations

import argparse
import functools
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate

from robustlab.attacks.autoattack import AutoAttack
from robustlab.attacks.costs import count_passes
from robustlab.defenses.inner import InnerAttack, pgd
from robustlab.models.smallcnn import SmallCNN
from robustlab.modes import eval_mode
from robustlab.paths import CONF_PACKAGE
from robustlab.precision import evaluates_channels_last, evaluation_layout

ROOT = Path(__file__).resolve().parents[2]
MNIST = ROOT / ".." / "shared" / "data" / "mnist"
CACHE = ROOT / ".cache" / "bench"
PARTS = ("apgd_ce", "apgd_t", "fab_t", "square")
TARGETS = {"time": 0.5, "memory": 1.5, "accuracy_gap": 0.5}
# the reference on the net as it is; robustlab as a cell evaluates (precision.channels_last=auto:
# channels_last on a CPU), and again with precision.channels_last=false (the contiguous format,
# the reference's arithmetic: iterates bit for bit the reference's)
RUNS = ("reference", "robustlab", "robustlab_contiguous")
CHANNELS_LAST = {"robustlab": "auto", "robustlab_contiguous": False}
WARMUP = 1  # clean epochs before PGD-AT


def datamodule(name: str):
    with initialize_config_module(config_module=CONF_PACKAGE, version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"dataset={name}"]).dataset
    cfg.val_size, cfg.root = 0, str(MNIST) if name == "mnist" else None
    dm = instantiate(cfg)
    dm.setup("fit")
    dm.setup("test")
    return dm


def smallcnn(dm) -> SmallCNN:
    return SmallCNN(
        in_channels=dm.tensors("test")[0].shape[1],
        num_classes=10,
        image_size=dm.image_size,
        mean=dm.mean,
        std=dm.std,
    )


def pgd_at_net(dm, name: str, epochs: int, cache: Path = CACHE) -> Path:
    """Train (once; cached) the smallcnn with PGD-10 AT at the dataset's eps, after one clean
    epoch (from scratch at MNIST's eps 0.3, two PGD-AT epochs collapse to ~20% clean accuracy)."""
    path = cache / f"pgd_at_{name}_{WARMUP}+{epochs}ep.pt"
    if path.exists():
        return path
    torch.manual_seed(0)
    net = smallcnn(dm)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    inner = InnerAttack(eps=dm.eps, steps=10)
    x_all, y_all = dm.tensors("train")
    for epoch in range(WARMUP + epochs):
        start = time.perf_counter()
        order = torch.randperm(len(x_all))
        for i in range(0, len(order), 128):
            x, y = x_all[order[i : i + 128]].float(), y_all[order[i : i + 128]]
            x = x / 255 if x_all.dtype == torch.uint8 else x
            if epoch >= WARMUP:
                with eval_mode(net):
                    x = pgd(net, x, y, inner)
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
        kind = "clean warm-up" if epoch < WARMUP else "PGD-AT"
        seconds = time.perf_counter() - start
        print(f"# {kind} epoch {epoch + 1}/{WARMUP + epochs}: {seconds:.0f} s", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(net.state_dict(), tmp)
    tmp.replace(path)
    return path


def rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reference_run(net, x, y, eps, seed, batch_size):
    """pyautoattack's standard evaluation; per component the points it broke (wrapped perturb)."""
    from pyautoattack import AutoAttack as Reference

    aa = Reference(net, norm="Linf", eps=eps, version="standard", seed=seed, device="cpu")
    aa.logger.disabled = True
    broke = {name: torch.zeros(len(y), dtype=torch.bool) for name in PARTS}
    keys = {bytes(row.numpy().tobytes()): i for i, row in enumerate(x.flatten(1))}
    attacks = {"apgd_ce": aa.apgd, "apgd_t": aa.apgd_targeted, "fab_t": aa.fab, "square": aa.square}
    for name, attack in attacks.items():

        def perturb(xs, ys, name=name, run=attack.perturb):
            adv = run(xs, ys)
            with torch.no_grad():
                wrong = net(adv).argmax(1) != ys
            for row, hit in zip(xs.flatten(1), wrong.tolist()):
                if hit:
                    broke[name][keys[bytes(row.numpy().tobytes())]] = True
            return adv

        attack.perturb = perturb
    x_adv, _ = aa.run_standard_evaluation(x, y, batch_size=batch_size)
    return x_adv, broke


def cell_points_per_call() -> int | None:
    """``attack.autoattack.points_per_call`` as a cell composes it (conf/attack/autoattack.yaml)."""
    with initialize_config_module(config_module=CONF_PACKAGE, version_base="1.3"):
        cfg = compose(config_name="config", overrides=["attack=[autoattack]"])
    return cfg.attack.autoattack.points_per_call


def robustlab_run(net, x, y, eps, seed, batch_size, points_per_call):
    """As a cell's evaluation calls it: ``points_per_call`` points a call (one unit), each part
    on the points still robust among them, ``batch_size`` (the reference's bs) a pass."""
    aa = AutoAttack(net, norm="linf", eps=eps, num_classes=10, batch_size=batch_size)
    call = points_per_call or len(x)
    out, broke = [], {name: [] for name in PARTS}
    with torch.enable_grad():
        for i in range(0, len(x), call):
            out.append(aa(x[i : i + call], y[i : i + call], seed))
            for name in PARTS:
                broke[name].append(
                    aa.last_component_success.get(name, torch.zeros(0, dtype=torch.bool))
                )
    return torch.cat(out), {k: torch.cat(v) for k, v in broke.items()}


def worker(args) -> None:
    torch.set_num_threads(args.threads)
    state = torch.load(args.worker_input, weights_only=True)
    dm = datamodule(state["dataset"])
    net = smallcnn(dm)
    net.load_state_dict(state["net"])
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    x, y = state["x"], state["y"]
    if args.worker == "reference":
        run = reference_run
    else:
        run = functools.partial(robustlab_run, points_per_call=cell_points_per_call())
    # robustlab's net in the memory format its evaluator chooses (robustlab.precision)
    channels_last = evaluates_channels_last(CHANNELS_LAST.get(args.worker, False), "cpu")
    before = rss_kb("VmRSS")
    with count_passes(net) as passes, evaluation_layout(net, channels_last):
        start = time.perf_counter()
        x_adv, broke = run(net, x, y, state["eps"], state["seed"], state["batch_size"])
        seconds = time.perf_counter() - start
    with torch.no_grad():
        robust = net(x_adv).argmax(1) == y
    torch.save(
        {
            "seconds": seconds,
            "peak_mb": (rss_kb("VmHWM") - before) / 1024,
            "forward_rows": passes.forward_rows,
            "backward_rows": passes.backward_rows,
            "robust": robust,
            "broke": {k: v.bool() for k, v in broke.items()},
            "linf": (x_adv - x).flatten(1).abs().amax(1).max().item(),
        },
        args.worker_output,
    )


def line(name, ours, reference, ratio, target, ok) -> str:
    """``ok`` None: a figure shown beside the targets, not one of them."""
    result = "info" if ok is None else "PASS" if ok else "FAIL"
    return f"{name:48} {ours:>12} {reference:>12} {ratio:>7} {target:>22} {result}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["mnist", "digits"], default=None)
    parser.add_argument("--points", type=int, default=500)
    parser.add_argument("--eps", type=float, default=None, help="default: the dataset's eps")
    parser.add_argument("--epochs", type=int, default=2, help="PGD-AT epochs of the net")
    parser.add_argument("--batch-size", type=int, default=250, help="the reference's default")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--cache-dir", type=Path, default=CACHE, help="where the trained net is kept"
    )
    parser.add_argument("--quick", action="store_true", help="digits, 40 points, 1 epoch")
    parser.add_argument("--worker", choices=list(RUNS), help=argparse.SUPPRESS)
    parser.add_argument("--worker-input", help=argparse.SUPPRESS)
    parser.add_argument("--worker-output", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if args.quick:
        args.dataset, args.points, args.epochs = "digits", 40, 1
    name = args.dataset or ("mnist" if (MNIST / "t10k-images-idx3-ubyte.gz").exists() else "digits")
    torch.set_num_threads(args.threads)
    dm = datamodule(name)
    eps = dm.eps if args.eps is None else args.eps
    net_path = pgd_at_net(dm, name, args.epochs, args.cache_dir)
    x, y = dm.tensors("test")
    x, y = x[: args.points].float(), y[: args.points]
    x = x / 255 if x.max() > 1 else x
    net = smallcnn(dm)
    net.load_state_dict(torch.load(net_path, weights_only=True))
    with torch.no_grad():
        clean = (net.eval()(x).argmax(1) == y).float().mean().item()
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state.pt"
        torch.save(
            {
                "dataset": name,
                "net": torch.load(net_path, weights_only=True),
                "x": x,
                "y": y,
                "eps": eps,
                "seed": args.seed,
                "batch_size": args.batch_size,
            },
            state,
        )
        res: dict[str, dict] = {}
        for i, who in enumerate(run_order(args.quick)):
            out = Path(tmp) / f"{who}_{i}.pt"
            cmd = [
                sys.executable,
                __file__,
                "--worker",
                who,
                "--worker-input",
                str(state),
                "--worker-output",
                str(out),
                "--threads",
                str(args.threads),
            ]
            subprocess.run(cmd, check=True)
            fresh = torch.load(out, weights_only=True)
            if who in res:  # a second run of the same side: its time joins the first's
                if not torch.equal(fresh["robust"], res[who]["robust"]):
                    raise SystemExit(f"bench: two runs of {who} gave different verdicts")
                res[who]["runs"].append(fresh["seconds"])
                res[who]["seconds"] = statistics.mean(res[who]["runs"])
            else:
                res[who] = {**fresh, "runs": [fresh["seconds"]]}
    ref = res["reference"]
    print(
        f"# autoattack standard: {name}, {len(y)} test points, eps {eps}, PGD-AT smallcnn "
        f"({WARMUP} clean + {args.epochs} PGD-AT epochs), batch {args.batch_size}, {args.threads} threads, seed {args.seed}; "
        f"clean accuracy {100 * clean:.2f}%, reference robust accuracy {100 * ref['robust'].float().mean():.2f}%"
    )
    print(f"{'name':48} {'robustlab':>12} {'reference':>12} {'ratio':>7} {'target':>22} result")
    for who, label in (
        ("robustlab", "autoattack"),
        ("robustlab_contiguous", "autoattack channels_last=false"),
    ):
        report(label, res[who], ref, len(y), timed=who == "robustlab")
    for who in RUNS:
        r = res[who]
        print(
            f"#   {who}: {r['forward_rows'] / len(y):.0f} forward and "
            f"{r['backward_rows'] / len(y):.0f} backward rows per point; max Linf {r['linf']:.4f}; "
            + ", ".join(f"{part} broke {r['broke'][part].sum().item()}" for part in PARTS)
        )


def run_order(quick: bool) -> list[str]:
    """The subprocess runs, one after the other: the reference and robustlab twice each, in the
    order A B C B A, so a drift of the machine's speed over the runs (linear in time) hits the
    mean times of both alike; ``--quick``: each once."""
    if quick:
        return list(RUNS)
    return [*RUNS, *reversed(RUNS[:2])]


def report(label: str, ours: dict, ref: dict, n: int, timed: bool) -> None:
    """The time, memory and verdict lines of one robustlab run against the reference; unless
    ``timed`` (channels_last=false: the reference's arithmetic, shown for the verdicts) its time
    is information, not a target."""
    t = ours["seconds"] / ref["seconds"]
    each = ", ".join(f"{s:.1f}" for s in ours["runs"])
    print(
        f"#   {label}: {each} s against the reference's {', '.join(f'{s:.1f}' for s in ref['runs'])} s"
    )
    print(
        line(
            f"{label} time (s)",
            f"{ours['seconds']:.1f}",
            f"{ref['seconds']:.1f}",
            f"{t:.2f}",
            "<= 0.50" if timed else "-",
            t <= TARGETS["time"] if timed else None,
        )
    )
    m = ours["peak_mb"] / max(ref["peak_mb"], 1e-9)
    print(
        line(
            f"{label} peak memory (MB)",
            f"{ours['peak_mb']:.1f}",
            f"{ref['peak_mb']:.1f}",
            f"{m:.2f}",
            "<= 1.50",
            m <= TARGETS["memory"],
        )
    )
    same = (ours["robust"] == ref["robust"]).sum().item()
    gap = 100 * abs(ours["robust"].float().mean() - ref["robust"].float().mean()).item()
    acc = (
        f"{100 * ours['robust'].float().mean():.2f}%",
        f"{100 * ref['robust'].float().mean():.2f}%",
    )
    ok = same == n or (n >= 500 and gap <= TARGETS["accuracy_gap"])
    print(line(f"{label} robust accuracy", *acc, f"{same}/{n}", "same, or gap <= 0.5", ok))
    for part in PARTS:
        both = (ours["broke"][part] == ref["broke"][part]).sum().item()
        if both != n:
            print(f"#   {label}: {part} differs from the reference on {n - both} points")


if __name__ == "__main__":
    main()
