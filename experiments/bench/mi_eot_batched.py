"""Benchmark: one adaptive EOT gradient of MI-OL, batched draws against a Python loop of draws.

An adaptive attack on Mixup Inference (Pang, Xu, Zhu, ICLR 2020) differentiates the EOT
expectation over partner draws (Tramer et al., NeurIPS 2020). Timed on one batch of random images
with ``robustlab.models.smallcnn.SmallCNN`` (median of ``--repeats``), forward + input gradient:

  (a) batched  ``EOT(mi, D)``: the D draws of N partners as D*N mixes in one batched forward, F(x)
               (which picks the partner classes) once;
  (b) looped   the same expectation as a Python loop of D MI forwards (each with its own F(x)),
               what ``EOT`` did before and still does for predictors without a batched path.

    python experiments/bench/mi_eot_batched.py --batch 32 --n 30 --draws 20 --threads 2
"""

from __future__ import annotations

import argparse

import torch
from mi_batched_forward import add_common_arguments, median_ms, mi_on_random_images

from robustlab.attacks.adaptive import EOT
from robustlab.attacks.costs import count_passes
from robustlab.inference.mixup_inference import MixupInference


class Looped(torch.nn.Module):
    """MI without its batched expectation: EOT falls back to one forward per draw."""

    randomized = True

    def __init__(self, mi: MixupInference):
        super().__init__()
        self.mi = mi

    def forward(self, x):
        return self.mi(x)


def gradient(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    x = x.clone().requires_grad_(True)
    loss = torch.nn.functional.nll_loss(model(x), y)
    torch.autograd.grad(loss, x)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(p, batch=32, repeats=3)
    p.add_argument("--draws", type=int, default=20, help="EOT draws per gradient")
    args = p.parse_args()

    device, net, mi, x = mi_on_random_images(args)
    net.requires_grad_(False)
    c, s, k = args.channels, args.image_size, args.classes
    y = torch.randint(k, (args.batch,), device=device)
    paths = {
        "(a) batched EOT": EOT(mi, args.draws),
        "(b) looped EOT (per draw)": EOT(Looped(mi), args.draws),
    }
    rows = []
    for label, model in paths.items():
        with count_passes(net) as counter:
            gradient(model, x, y)
        rows.append((label, counter.forward_rows / args.batch))
    times = median_ms([lambda m=m: gradient(m, x, y) for m in paths.values()], args.repeats, device)
    print(
        f"device={device} threads={args.threads} batch={args.batch} N={args.n} "
        f"draws={args.draws} image={c}x{s}x{s} repeats={args.repeats}"
    )
    print(f"{'path':28s} {'median ms':>10s} {'x batched':>9s} {'fwd/ex':>7s}")
    for (label, rows_per_example), ms in zip(rows, times):
        print(f"{label:28s} {ms:10.1f} {ms / times[0]:9.2f} {rows_per_example:7.0f}")


if __name__ == "__main__":
    main()
