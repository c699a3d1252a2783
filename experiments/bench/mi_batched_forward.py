"""Benchmark: the batched Mixup Inference forward against its floor and a Python loop.

Mixup Inference (Pang, Xu, Zhu, ICLR 2020) runs the net on N mixes of every input. Timed on one
batch of random images with ``robustlab.models.smallcnn.SmallCNN`` (median of ``--repeats``):

  (a) batched  MixupInference forward: all B*N mixes in one batched net call (chunked), sampling
               of fresh partners and the bare forward for y_hat included;
  (b) floor    N forwards of the bare net on the same batch (the compute MI cannot avoid);
  (c) looped   the reference path, one net call per draw (``_forward_looped``, fixed partners).

    python experiments/bench/mi_batched_forward.py --batch 64 --n 30 --threads 2

The last lines are the figures `make bench` checks, in the format every bench script shares,
``name  robustlab  reference  ratio  target  PASS/FAIL``: (a) with the net in the memory format a
cell's evaluation gives it (``precision.channels_last=auto``: channels_last on a CPU) against (b)
as written by hand (the contiguous format) and against (b) in the same memory format (MI's own
overhead), and (a) with ``precision.channels_last=false`` against (b).
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial

import torch

from robustlab.inference.mixup_inference import MixupInference
from robustlab.models.smallcnn import SmallCNN
from robustlab.precision import evaluates_channels_last, evaluation_layout

TARGET = 1.10  # issue 17: MI-OL forward at most 1.1x N bare forwards


class RandomData:
    """A datamodule stand-in: random images, 20 per class, as every split."""

    def __init__(self, channels: int, size: int, classes: int):
        self.x = torch.rand(20 * classes, channels, size, size)
        self.y = torch.arange(classes).repeat_interleave(20)

    def setup(self, stage=None):
        pass

    def tensors(self, split):
        return self.x, self.y


def median_ms(fns, repeats: int, device: torch.device) -> list[float]:
    """Median wall time of each function; repeats interleave them so load drift hits all alike."""
    times = [[] for _ in fns]
    for fn in fns:
        fn()  # warm-up
    for _ in range(repeats):
        for fn, spent in zip(fns, times):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            spent.append(time.perf_counter() - start)
    return [1000 * statistics.median(t) for t in times]


def add_common_arguments(p: argparse.ArgumentParser, batch: int, repeats: int) -> None:
    """The options both MI benchmarks share (mixes, image shape, repeats, threads, device)."""
    p.add_argument("--batch", type=int, default=batch)
    p.add_argument("--n", type=int, default=30, help="MI-OL partners per forward")
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--image-size", type=int, default=28)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--repeats", type=int, default=repeats)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")


def mi_on_random_images(args, **mi_kwargs):
    """(device, net, MI-OL around it, a random batch) from the common options, seeded."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    c, s, k = args.channels, args.image_size, args.classes
    net = SmallCNN(in_channels=c, num_classes=k, image_size=s, mean=[0.5] * c, std=[0.25] * c)
    net = net.to(device).eval()
    mi = MixupInference(
        net, RandomData(c, s, k), name="mi_ol", mode="ol", n_ol=args.n, **mi_kwargs
    ).to(device)
    return device, net, mi, torch.rand(args.batch, c, s, s, device=device)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(p, batch=64, repeats=15)
    p.add_argument(
        "--chunk-size", type=int, default=None, help="default: the config's (null: by device)"
    )
    args = p.parse_args()

    device, net, mi, x = mi_on_random_images(args, chunk_size=args.chunk_size)
    c, s = args.channels, args.image_size
    # a second MI-OL and net (the same seed: the same weights, pool and batch) in the memory
    # format a cell's evaluation gives the net; every path below runs interleaved with the
    # others (median_ms), so load drift hits all alike
    channels_last = evaluates_channels_last("auto", device)
    _, cell_net, cell_mi, _ = mi_on_random_images(args, chunk_size=args.chunk_size)
    with torch.no_grad(), evaluation_layout(cell_net, channels_last) as layout:
        partners = mi.draw_partners(x, net(x))

        def floor(bare=net):
            for _ in range(args.n):
                bare(x)

        paths = {
            "(a) batched MI forward": lambda: mi(x),
            "(b) floor: N bare forwards": floor,
            "(c) looped MI (per draw)": lambda: mi._forward_looped(x, partners),
            f"(a) in {layout}": lambda: cell_mi(x),
            f"(b) in {layout}": partial(floor, cell_net),
        }
        rows = list(zip(paths, median_ms(list(paths.values()), args.repeats, device)))
    print(
        f"device={device} threads={args.threads} batch={args.batch} N={args.n} "
        f"image={c}x{s}x{s} chunk={args.chunk_size} repeats={args.repeats}"
    )
    print(f"{'path':28s} {'median ms':>10s} {'x floor':>8s}")
    for label, ms in rows:
        print(f"{label:28s} {ms:10.1f} {ms / rows[1][1]:8.2f}")
    (_, plain), (_, floor_ms), _, (_, cell), (_, cell_floor) = rows
    figures = [("mi_ol forward (ms)", cell, floor_ms)]
    if layout == "channels_last":
        figures.append(("mi_ol forward, floor channels_last (ms)", cell, cell_floor))
        figures.append(("mi_ol forward channels_last=false (ms)", plain, floor_ms))
    for name, ours, reference in figures:
        ratio = ours / reference
        print(
            f"{name:48} {ours:>12.1f} {reference:>12.1f} {ratio:>7.2f} "
            f"{'<= 1.10':>22} {'PASS' if ratio <= TARGET else 'FAIL'}"
        )


if __name__ == "__main__":
    main()
