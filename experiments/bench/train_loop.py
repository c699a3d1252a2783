"""Benchmark: robustlab's training and PGD-20 evaluation against the bare floor
(experiments/bench/bare_loop.py: plain PyTorch, nothing imported from robustlab), side by side.

    python experiments/bench/train_loop.py            # MNIST files if present, else digits
    python experiments/bench/train_loop.py --dataset digits --epochs 3
    python experiments/bench/train_loop.py --quick    # a smoke run: every line, meaningless ratios

robustlab runs as a cell builds it: the project's config composed by Hydra (dataset=mnist with
dataset.root=../shared/data/mnist when the files are there, else digits; model=smallcnn;
defense=erm, then defense=pgd_at; attack=[pgd], PGD-20; trainer=cpu without its progress bar, which
prints to stdout and, paced (robustlab.console.PacedProgressBar), costs next to nothing; cache
off), planned (``build_plan``), its datamodule, net, DefenseModule, loggers and evaluator built as
``robustlab.run`` builds them, fitted by ``robustlab.training.fit`` (checkpoints, resume stamps,
monitors) with the cell's evaluation callback, which evaluates the test split when training ends
(for ERM it is carried but not run). The floor does the same work: the same training images
(robustlab's validation hold-out), net widths, initial weights, batch size, Adam and per-batch
cosine schedule, inner PGD (steps, eps, step eps/4, random start) and PGD-20 settings, and
evaluates robustlab's trained weights (the two robust accuracies agree up to the random starts).

Timed: each epoch's training batches, from the epoch's start to its validation (robustlab then
validates and saves checkpoints; the floor does neither), and the evaluation of the first
``--eval-n`` test images. A change of load on a shared machine should hit both sides alike: the
floor's epoch is interleaved with robustlab's, one bare batch after each robustlab batch (timed
apart), and robustlab's evaluation runs between two of the floor's (their mean is the floor's
time). Epoch figures are medians over the epochs. The cell trains in the contiguous format, as
the floor does; its evaluation runs the net in channels_last on a CPU
(``precision.channels_last=auto``), so PGD-20 is compared with the floor as written by hand
(contiguous, ``pgd20_eval``) and with the floor in the cell's memory format (``pgd20_eval_cl``:
the evaluation's own overhead). After ERM, ``lightning_erm_epoch`` (information, no target) times
a minimal LightningModule with the floor's net, data and Adam step under a plain ``pl.Trainer``
against the bare loop (``lightning_floor.py``): the share of ``erm_epoch``'s ratio that Lightning's
own loop costs, before anything robustlab adds. Output, one line per figure:

    name  robustlab_s  reference_s  ratio  target  PASS/FAIL
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate

from robustlab.console import quiet_third_party
from robustlab.evaluation.callback import RobustEvaluation
from robustlab.loggers import build_loggers
from robustlab.paths import CONF_PACKAGE
from robustlab.plan import build_plan
from robustlab.precision import build_net, evaluates_channels_last, settings
from robustlab.run import build_evaluator
from robustlab.training import build_defense, fit

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bare_loop as bare  # noqa: E402
from lightning_floor import Interleaved, lightning_erm_epochs  # noqa: E402

TARGETS = {"erm_epoch": 1.03, "pgd_at_epoch": 1.03, "pgd20_eval": 1.05}  # issue 17


def compose_cell(name: str, defense: str, out: Path, args):
    overrides = [
        f"dataset={name}",
        f"defense={defense}",
        "model=smallcnn",
        "attack=[pgd]",
        "inference=[plain]",
        "trainer=cpu",
        f"trainer.max_epochs={args.epochs}",
        "trainer.enable_progress_bar=false",  # stdout stays readable; paced, it costs ~nothing
        f"torch_threads={args.threads}",
        "cache.enabled=false",
        f"eval.n_examples={args.eval_n}",
        f"output_dir={out / defense}",
    ]
    if name == "mnist":
        overrides.append(f"dataset.root={bare.MNIST}")
    if args.train_limit is not None:
        overrides.append(f"dataset.train_limit={args.train_limit}")
    if args.quick:  # a small validation split and a PGD-2 inner attack
        overrides.append("dataset.val_size=64")
        if defense != "erm":
            overrides.append("defense.inner.steps=2")
    with initialize_config_module(config_module=CONF_PACKAGE, version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def bare_setup(cfg, data, n_val: int):
    """The floor's net (robustlab's seed: the same initial weights), Adam, schedule, training
    images (robustlab's hold-out) and shuffling generator."""
    name, x, y, _, _ = data
    x, y = bare.holdout(x, y, n_val, int(cfg.dataset.split_seed), cfg.dataset.train_limit)
    torch.manual_seed(int(cfg.seed))
    meta = bare.DATASETS[name]
    net = bare.SmallCNN(
        1, 10, meta["image_size"], meta["mean"], meta["std"], cfg.model.widths, cfg.model.hidden
    )
    opt = torch.optim.Adam(net.parameters(), lr=float(cfg.defense.optimizer.lr))
    steps = int(cfg.trainer.max_epochs) * math.ceil(len(y) / int(cfg.dataset.batch_size))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    return net, opt, schedule, x, y, torch.Generator().manual_seed(int(cfg.seed))


class TimedEvaluation(RobustEvaluation):
    """The cell's evaluation callback (the test split's evaluation when training ends), timed
    between runs of ``bare_eval(trained net, channels_last) -> robust accuracy``: the floor as
    written by hand (the contiguous format) and the floor in the memory format the cell's
    evaluation chooses (``same_layout``), each once before and once after robustlab's, their
    means the floor's times (a load change during the five hits both sides alike). Without
    ``bare_eval`` (the ERM fit) it is carried but not run: only its hooks' cost matters there."""

    def __init__(self, *args, bare_eval=None, same_layout=False):
        super().__init__(*args)
        self.bare_eval, self.same_layout = bare_eval, same_layout
        self.seconds, self.bare_seconds, self.same_layout_seconds = 0.0, 0.0, 0.0
        self.bare_acc = None

    def on_train_end(self, trainer, pl_module):
        if self.bare_eval is None:
            return
        net = pl_module.net
        plain_before, _ = timed(self.bare_eval, net, False)
        same_before, _ = timed(self.bare_eval, net, self.same_layout)
        self.seconds, _ = timed(super().on_train_end, trainer, pl_module)
        same_after, _ = timed(self.bare_eval, net, self.same_layout)
        plain_after, self.bare_acc = timed(self.bare_eval, net, False)
        self.bare_seconds = (plain_before + plain_after) / 2
        self.same_layout_seconds = (same_before + same_after) / 2


def timed(fn, *args):
    """(seconds, result) of ``fn(*args)``."""
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def run_defense(cfg, data, inner):
    """Fit robustlab's cell with the bare epochs interleaved (and for PGD-AT evaluate both);
    (robustlab epoch seconds, bare epoch seconds, the evaluation callback, the floor's training
    images and labels)."""
    plan = build_plan(cfg)
    pl.seed_everything(plan.seed, workers=True, verbose=False)
    dm = instantiate(cfg.dataset)
    net = build_net(cfg)
    pl.seed_everything(plan.seed, workers=True, verbose=False)
    loggers = build_loggers(cfg.logger)
    defense = build_defense(plan.cell, net)
    dm.setup("fit")
    b_net, opt, schedule, x, y, gen = bare_setup(cfg, data, dm.val_count(len(data[2])))
    evaluation = TimedEvaluation(
        build_evaluator(plan, dm, loggers),
        int(cfg.eval.every_n_val_epochs),
        int(cfg.eval.val_subset),
        bare_eval=None if inner is None else partial(bare_evaluate, cfg, dm, b_net, data),
        same_layout=evaluates_channels_last(settings(cfg)["channels_last"], "cpu"),
    )
    if not torch.equal(x, dm.tensors("train")[0]) or not torch.equal(y, dm.tensors("train")[1]):
        raise SystemExit("bench: the bare reader's training images differ from robustlab's")
    bs = int(cfg.dataset.batch_size)
    if inner is None:
        steps = lambda: bare.erm_steps(b_net, x, y, bs, opt, gen, schedule)  # noqa: E731
    else:
        steps = lambda: bare.pgd_at_steps(  # noqa: E731
            b_net, x, y, bs, opt, gen, *inner, None, schedule
        )
    timer = Interleaved(steps)
    fit(plan.cell, defense, dm, loggers=loggers, callbacks=[evaluation, timer], cached=None,
        lock=None, monitor=defense.monitor)  # fmt: skip
    return timer.timed, timer.bare, evaluation, (x, y)


def bare_evaluate(cfg, dm, b_net, data, trained, channels_last: bool) -> float:
    """The floor's PGD-20 on the cell's first eval.n_examples test images with the ``trained``
    net's weights (in channels_last memory format if asked); its robust accuracy."""
    n, pgd = int(cfg.eval.n_examples), cfg.attack.pgd
    x, y = data[3][:n], data[4][:n]
    x_cell, y_cell = dm.tensors("test")
    if not torch.equal(x_cell[:n], x) or not torch.equal(y_cell[:n], y):
        raise SystemExit("bench: the bare reader's test images differ from robustlab's")
    with torch.no_grad():
        for mine, theirs in zip(b_net.parameters(), trained.parameters(), strict=True):
            mine.copy_(theirs)
    eps, steps, batch = float(cfg.threat.eps), int(pgd.steps), int(cfg.eval.batch_size)
    return bare.pgd_eval(b_net, x, y, eps, steps, batch_size=batch, channels_last=channels_last)


def lightning_floor_epochs(cfg, name: str, train, epochs: int) -> tuple[float, float]:
    """``lightning_floor.py`` on the ERM cell's training images, batch size and Adam lr."""
    batch, lr = int(cfg.dataset.batch_size), float(cfg.defense.optimizer.lr)
    return lightning_erm_epochs(*train, bare.DATASETS[name], epochs, batch, lr)


def main() -> None:
    quiet_third_party()  # Lightning's tips and banners, as a cell has them
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=list(bare.DATASETS), default=None)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--train-limit", type=int, default=None, help="first N training images")
    parser.add_argument("--eval-n", type=int, default=1000, help="test images for PGD-20")
    parser.add_argument(
        "--defenses", nargs="+", choices=["erm", "pgd_at"], default=["erm", "pgd_at"]
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: 256 images, 1 epoch, PGD-2 inner, 64 eval"
    )
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.train_limit, args.eval_n = 1, 256, 64
    torch.set_num_threads(args.threads)
    data = bare.load(args.dataset)
    name = data[0]
    # warm both up once (the same shapes: oneDNN's primitive caches are the process's)
    meta = bare.DATASETS[name]
    warm = bare.SmallCNN(1, 10, meta["image_size"], meta["mean"], meta["std"])
    warm_opt = torch.optim.Adam(warm.parameters())
    bare.pgd_at_epoch(warm, data[1][:256], data[2][:256], 128, warm_opt, torch.Generator(), 0.1, 1)

    tmp = tempfile.TemporaryDirectory(prefix="bench_train_loop_")  # the cells' outputs
    rows, out = [], Path(tmp.name)
    eval_note = "no evaluation (pgd_at not run)"
    for defense in args.defenses:
        cfg = compose_cell(name, defense, out, args)
        inner = None
        if defense != "erm":
            inner = (float(cfg.defense.inner.eps), int(cfg.defense.inner.steps))
        robustlab_s, bare_s, evaluation, train = run_defense(cfg, data, inner)
        label = "erm_epoch" if inner is None else "pgd_at_epoch"
        rows.append((label, statistics.median(robustlab_s), statistics.median(bare_s)))
        if inner is None:  # the share of that ratio any LightningModule pays (no target)
            floor = lightning_floor_epochs(cfg, name, train, args.epochs)
            rows.append(("lightning_erm_epoch", *floor))
        if inner is not None:
            steps = int(cfg.attack.pgd.steps)
            rows.append((f"pgd{steps}_eval", evaluation.seconds, evaluation.bare_seconds))
            if evaluation.same_layout:  # the floor in the cell's memory format: the overhead
                rows.append(
                    (f"pgd{steps}_eval_cl", evaluation.seconds, evaluation.same_layout_seconds)
                )
            r_acc = next(r for r in evaluation.records if r["attack"] == "pgd")["robust_acc"]
            eval_note = (
                f"pgd_at inner PGD-{inner[1]}; eval PGD-{steps} on {args.eval_n} test images, "
                f"robust acc robustlab {r_acc:.3f} bare {evaluation.bare_acc:.3f}"
            )
    print(
        f"# dataset={name} train_images={len(train[1])} "
        f"batch={cfg.dataset.batch_size} threads={args.threads} epochs={args.epochs}; "
        f"{eval_note}; seconds: median per epoch, whole evaluation"
    )
    print(
        f"# {'name':18} {'robustlab_s':>11} {'reference_s':>11} {'ratio':>6} {'target':>6} result"
    )
    for label, fw, ref in rows:
        ratio = fw / ref
        if label == "lightning_erm_epoch":
            print(f"{label:20} {fw:11.3f} {ref:11.3f} {ratio:6.3f} {'-':>6} info")
            continue
        key = label if label in TARGETS else "pgd20_eval"
        verdict = "PASS" if ratio <= TARGETS[key] else "FAIL"
        print(f"{label:20} {fw:11.3f} {ref:11.3f} {ratio:6.3f} {TARGETS[key]:6.2f} {verdict}")
    tmp.cleanup()


if __name__ == "__main__":
    main()
