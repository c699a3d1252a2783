"""FAB-T (Croce & Hein, "Minimally distorted adversarial examples with a fast adaptive boundary
attack", ICML 2020) run over (point, target) rows, one targeted run per row from the clean point.

The iteration is the reference's (fra31/auto-attack ``attack_single_run_targeted``, which
torchattacks' FAB follows): linearise the target-vs-label logit difference at the iterate,
project the iterate and the clean point onto that hyperplane (torchattacks' box-constrained
projections), step with the adaptive alpha (capped at ``alpha_max``) and extrapolation ``eta``,
and when the iterate is adversarial keep it if it is the smallest so far and pull it back toward
the clean point by ``beta``. A row is broken once its smallest adversarial is inside the eps-ball.

The iterates are the reference's; with ``stop_early`` a point leaves as soon as one of its rows
is broken (the reference runs every row to the last step, which cannot unbreak it). Keeping the
checking forward's graph as the next linearisation was tried and dropped: FAB's iterates cross
the boundary often, and each crossing row is pulled back and must be linearised again.
"""

from __future__ import annotations

import torch
from torch import nn
from torchattacks.attacks.fab import projection_l2, projection_linf

from robustlab.attacks.apgd_rows import compacted, rows_norm

PROJECTIONS = {"linf": projection_linf, "l2": projection_l2}


def fab_targeted_rows(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    target: torch.Tensor,
    *,
    eps: float,
    norm: str,
    steps: int,
    group: torch.Tensor | None = None,
    start: torch.Tensor | None = None,
    stop_early: bool = True,
    alpha_max: float = 0.1,
    eta: float = 1.05,
    beta: float = 0.9,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (the smallest adversarial found per row if it is inside the eps-ball, else the
    clean point; broken per row).

    ``start``: noise for a restart (the reference starts a restart at half eps from the clean
    point in that direction); None: the first run, from the clean point."""
    n, dims = len(x), [1] * (x.dim() - 1)
    group = torch.arange(n, device=x.device) if group is None else group
    project = PROJECTIONS[norm]
    x_out = x.clone()
    best = torch.full((n,), 1e10, device=x.device)
    live = torch.arange(n, device=x.device)
    x1 = (
        x.clone()
        if start is None
        else (x + 0.5 * eps * start / rows_norm(start, norm)).clamp(0.0, 1.0)
    )
    s = {"x": x, "y": y, "t": target, "x1": x1, "adv": x.clone(), "best": best.clone()}

    def linearise(v, labels, targets):
        """The target-vs-label logit difference at ``v`` and its gradient."""
        v = v.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model(v)
            rows = torch.arange(len(v), device=v.device)
            diff = -(logits[rows, labels] - logits[rows, targets])
            grad = torch.autograd.grad(diff.sum(), v)[0]
        return diff.detach(), grad.detach()

    active = torch.ones(n, dtype=torch.bool, device=x.device)  # over the rows of `s`
    for _ in range(steps):
        x1, x0 = s["x1"], s["x"]
        m = len(x1)
        df, dg = linearise(x1, s["y"], s["t"])
        # one target, so one hyperplane (the reference's argmin over a single class)
        w = dg.flatten(1)
        b = -df + (w * x1.flatten(1)).sum(1)
        d3 = project(
            torch.cat((x1.flatten(1), x0.flatten(1))), torch.cat((w, w)), torch.cat((b, b))
        )
        d1, d2 = d3[:m].view_as(x1), d3[m:].view_as(x1)
        a0 = rows_norm(d3, norm).clamp_min(1e-8).view(-1, *dims)
        a1, a2 = a0[:m], a0[m:]
        alpha = (a1 / (a1 + a2)).clamp(0.0, alpha_max)
        x1 = ((x1 + eta * d1) * (1 - alpha) + (x0 + d2 * eta) * alpha).clamp(0.0, 1.0)
        with torch.no_grad():
            adv_now = model(x1).argmax(1) != s["y"]
        if adv_now.any():
            size = rows_norm(x1 - x0, norm).flatten()
            smaller = adv_now & (size < s["best"])
            s["adv"][smaller] = x1[smaller]
            s["best"][smaller] = size[smaller]
            x1[adv_now] = x0[adv_now] + (x1[adv_now] - x0[adv_now]) * beta
        s["x1"] = x1
        if stop_early:
            done = active & (s["best"] <= eps)
            if done.any():
                stop = active & torch.isin(group[live], group[live[done]])
                x_out[live[done]] = s["adv"][done]
                best[live[stop]] = s["best"][stop]
                active &= ~stop
                if not active.any():
                    break
                s, live, active = compacted(s, live, active)
    inside = active & (s["best"] <= eps)  # FAB's smallest adversarial can lie outside the ball
    x_out[live[inside]] = s["adv"][inside]
    best[live[active]] = s["best"][active]
    return x_out, best <= eps
