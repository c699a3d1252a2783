"""APGD (Croce & Hein, ICML 2020, Algorithm 1) run over rows: one row is a point, or a point and
one target class of APGD-T, so the 9 targeted runs of a point go through the net in one batch.

Per row the iteration is the reference's (fra31/auto-attack ``attack_single_run``): step size
``2 eps``, momentum 0.75, checkpoints after 22% of the iterations then shrinking by 3% down to
6%, a checkpoint halving the step of a row whose loss rose in at most ``rho`` of the last
checkpoint's steps (or that has not improved since a halving) and restarting it from its best
point. Every row's trajectory depends on its own start, point and target only (the schedule is
shared, the rest is per row), which is what makes the two speed-ups exact:

- rows of different targets run side by side instead of one target after another;
- a point leaves as soon as one of its rows is misclassified (``stop_early``): the reference
  keeps iterating broken points to the last step, which cannot change whether they broke.

The verdict of a row is the reference's: misclassified on the forward pass of some iterate.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NORMS = ("linf", "l2")
# stopped rows keep riding along (ignored) until the live ones are at most this share: fewer
# distinct batch shapes (each costs a kernel set-up on CPU) for at most 1/8 wasted rows
COMPACT_AT = 7 / 8


def schedule(steps: int) -> tuple[int, int, int]:
    """(first checkpoint interval, its decrement, its minimum) for ``steps`` iterations."""
    return max(int(0.22 * steps), 1), max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)


def rows_norm(v: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-row L-inf or L2 norm, shaped to broadcast against ``v``."""
    flat = v.flatten(1)
    n = flat.abs().amax(1) if norm == "linf" else flat.square().sum(1).sqrt()
    return n.view(-1, *[1] * (v.dim() - 1))


def unit(v: torch.Tensor, norm: str) -> torch.Tensor:
    return v / (rows_norm(v, norm) + 1e-12)


def ce_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    return F.cross_entropy(logits, y, reduction="none")


def dlr_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """Difference of logits ratio (Croce & Hein 2020, eq. 4; targeted: eq. 5)."""
    z, _ = logits.sort(dim=1)
    rows = torch.arange(len(y), device=y.device)
    if target is not None:
        return -(logits[rows, y] - logits[rows, target]) / (
            z[:, -1] - 0.5 * (z[:, -3] + z[:, -4]) + 1e-12
        )
    top_is_y = (logits.argmax(1) == y).float()
    other = z[:, -2] * top_is_y + z[:, -1] * (1.0 - top_is_y)
    return -(logits[rows, y] - other) / (z[:, -1] - z[:, -3] + 1e-12)


LOSSES = {"ce": ce_loss, "dlr": dlr_loss}


def project(x: torch.Tensor, v: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    if norm == "linf":
        return torch.min(torch.max(v, x - eps), x + eps).clamp(0.0, 1.0)
    d = v - x
    return (x + unit(d, norm) * torch.clamp(rows_norm(d, norm), max=eps)).clamp(0.0, 1.0)


def apgd_rows(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: str,
    steps: int,
    loss: str,
    start: torch.Tensor,
    target: torch.Tensor | None = None,
    group: torch.Tensor | None = None,
    rho: float = 0.75,
    stop_early: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run APGD on every row of ``x`` (labels ``y``, DLR ``target`` per row for APGD-T) from the
    noise ``start`` (uniform in [-1, 1] for L-inf, Gaussian for L2, as the reference draws it).

    ``group``: the point each row belongs to; with ``stop_early`` all rows of a point stop once
    one of them is misclassified. Returns (adversarial example per row, broken per row): a
    broken row's last misclassified iterate (the reference's choice), else its highest-loss
    iterate.
    """
    if norm not in NORMS:
        raise ValueError(f"APGD norm={norm!r}; valid: {list(NORMS)}")
    n = len(x)
    group = torch.arange(n, device=x.device) if group is None else group
    loss_fn = LOSSES[loss]
    x_out, broken = x.clone(), torch.zeros(n, dtype=torch.bool, device=x.device)
    live = torch.arange(n, device=x.device)  # the rows still iterating, into the caller's rows

    def evaluate(v, labels, targets) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        v = v.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model(v)
            per_row = loss_fn(logits, labels, targets)
            grad = torch.autograd.grad(per_row.sum(), v)[0]
        return logits.detach(), per_row.detach(), grad.detach()

    x_adv = (x + eps * unit(start, norm)).clamp(0.0, 1.0)
    x0 = x
    logits, loss_now, grad = evaluate(x_adv, y, target)
    # per-row state, compacted together when rows stop
    s = {"x0": x0, "y": y, "x_adv": x_adv, "x_old": x_adv.clone(), "grad": grad}
    s.update(x_best=x_adv.clone(), loss_best=loss_now.clone(), grad_best=grad.clone())
    s.update(step=torch.full((n, *[1] * (x.dim() - 1)), 2.0 * eps, device=x.device))
    s.update(loss_at_check=loss_now.clone(), reduced_at_check=torch.ones_like(loss_now))
    s.update(loss_now=loss_now, loss_steps=torch.zeros(n, steps, device=x.device))
    if target is not None:
        s["target"] = target
    k, decrement, k_min = schedule(steps)
    counter = 0

    active = torch.ones(n, dtype=torch.bool, device=x.device)  # over the rows of `s`
    for i in range(steps + 1):
        wrong = (logits.argmax(1) != s["y"]) & active
        if wrong.any():
            hit = live[wrong]
            broken[hit] = True
            x_out[hit] = s["x_adv"][wrong]
            if stop_early:
                stop = active & torch.isin(group[live], group[hit])
                x_out[live[stop & ~wrong]] = s["x_best"][stop & ~wrong]
                active &= ~stop
                if not active.any():
                    break
                s, live, active = compacted(s, live, active)
        if i > 0:  # the reference records iterate i's loss, then checkpoints
            s["loss_steps"][:, i - 1] = s["loss_now"]
            better = s["loss_now"] > s["loss_best"]
            s["x_best"][better] = s["x_adv"][better]
            s["grad_best"][better] = s["grad"][better]
            s["loss_best"][better] = s["loss_now"][better]
            counter += 1
            if counter == k:
                checkpoint(s, i - 1, k, rho)
                k, counter = max(k - decrement, k_min), 0
        if i == steps:
            break
        momentum = 0.75 if i > 0 else 1.0
        x_adv, grad, x0 = s["x_adv"], s["grad"], s["x0"]
        direction = grad.sign() if norm == "linf" else unit(grad, norm)
        z = project(x0, x_adv + s["step"] * direction, eps, norm)
        z = project(
            x0, x_adv + (z - x_adv) * momentum + (x_adv - s["x_old"]) * (1 - momentum), eps, norm
        )
        s["x_old"], s["x_adv"] = x_adv, z
        tl = s.get("target")
        logits, s["loss_now"], s["grad"] = evaluate(z, s["y"], tl)
    if i == steps:
        left = active & ~broken[live]
        x_out[live[left]] = s["x_best"][left]
    return x_out, broken


def compacted(
    s: dict[str, torch.Tensor], live: torch.Tensor, active: torch.Tensor
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """The per-row state, its caller rows and active mask without the stopped rows, once at most
    ``COMPACT_AT`` of the rows are active; else as they are."""
    if active.sum() > COMPACT_AT * len(active):
        return s, live, active
    return {name: v[active] for name, v in s.items()}, live[active], active[active]


def checkpoint(s: dict[str, torch.Tensor], j: int, k: int, rho: float) -> None:
    """Halve the step of the rows whose loss rose in at most ``rho`` of the last ``k`` steps, or
    that did not improve since the last check and were not halved then; restart them from their
    best point. ``loss_steps[:, j - k]`` wraps to the last column at the first check, as in the
    reference."""
    steps = s["loss_steps"]
    rose = sum((steps[:, j - c] > steps[:, j - c - 1]).float() for c in range(k))
    halve = torch.max(
        (rose <= k * rho).float(),
        (1.0 - s["reduced_at_check"]) * (s["loss_at_check"] >= s["loss_best"]).float(),
    )
    s["reduced_at_check"], s["loss_at_check"] = halve.clone(), s["loss_best"].clone()
    h = halve.bool()
    if h.any():
        s["step"][h] /= 2.0
        s["x_adv"][h], s["grad"][h] = s["x_best"][h], s["grad_best"][h]
