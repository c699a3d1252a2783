"""AutoAttack (Croce & Hein, ICML 2020): the reference's components, settings and verdicts, at a
fraction of its cost.

``standard``: APGD-CE, APGD-T (targeted DLR, 9 targets), FAB-T (9 targets), Square (5000 queries,
p_init 0.8), each with 100 iterations and 1 restart, run in that order on the points still robust;
a point counts as robust only if it survives all four. ``rand`` (randomized defenses): APGD-CE and
APGD-DLR with EOT over 20 draws. Success is judged on the model the attack crafts on: with one
forward pass for a deterministic model, as the reference does; for a randomized one on several
fresh draws (:mod:`robustlab.attacks.selection`), where the reference's single evaluation lets a
lucky draw pick the adversarial point (open in fra31/auto-attack since 2024). On a randomized
model the restarts also run here, one round of part calls each (with a seed of its own), so
that they too are judged on several draws; inside one torchattacks call (APGD's start-of-run
check and best-point bookkeeping) the choice is still per forward.

Cheaper than the reference (``standard``):

- APGD-CE, APGD-T (:mod:`robustlab.attacks.apgd_rows`) and FAB-T (:mod:`robustlab.attacks.fab_rows`,
  with torchattacks' projections) are robustlab's own, the reference's iteration per row (tested
  iterate for iterate against pyautoattack 0.2.0 and torchattacks' FAB). On a deterministic model
  a point stops at the iterate that breaks it; the reference iterates it to the last step, which
  cannot unbreak it.
- APGD-T and FAB-T run their (point, target) rows side by side in waves of at most
  ``target_rows`` rows (default: the points of the pass) instead of one target after another
  (:mod:`robustlab.attacks.targeted_rows`); the number of rows per wave never changes a verdict.
- The starts: APGD-CE's and APGD-T's first target's are the reference's (same seed, same draws);
  later targets' are drawn for all points where the reference draws them for the points left, so
  APGD-T can differ from the reference on a few points, as two seeds of the reference do.
  FAB-T's single run starts at the clean point (deterministic). With ``restarts > 1`` FAB-T's
  restarts wrap its targets (the reference runs FAB-T once).
- One clean forward orders every point's targets (the reference repeats it per target); the
  parts' own forwards judge them (the reference re-runs each part's output). Square is
  torchattacks'.

On a randomized model nothing stops on one draw: every (point, target) row runs, and of a point's
rows the candidate the model is right on least often over several draws is kept.

Where torchattacks 3.5.1 (Square; the ``rand`` version's APGD with EOT) departs from the
reference and what is done here:

- ``torchattacks.AutoAttack`` builds its parts with 10 iterations: not used.
- Square defaults to ``resc_schedule=True``; the reference AutoAttack passes False: passed False.
  Its margin loss on logits matches the reference.
- Square and APGD reseed the global RNG on every call: the runner calls them inside
  ``attack_rng`` and sets each part's ``seed`` to the call's derived seed, a later round's to
  one derived from it (robustlab's APGD draws its starts the reference's way after seeding).
- ``Attack.__call__`` switches the model to eval and back: the parts' ``forward`` is called
  directly, so the caller's modes are untouched.
- DLR losses index the 3rd (APGD-DLR) and 4th (APGD-T) largest logit: fewer classes raise
  ValueError here instead of an IndexError mid-run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torchattacks import APGD, Square

from robustlab.attacks.apgd_rows import apgd_rows
from robustlab.attacks.crafting import restart_split
from robustlab.attacks.fab_rows import fab_targeted_rows
from robustlab.attacks.rng import restart_seed
from robustlab.attacks.selection import correct_counts, selection_draws
from robustlab.attacks.targeted_rows import run_in_waves, target_labels

REFERENCE = {
    "steps": 100,
    "queries": 5000,
    "n_target_classes": 9,
    "restarts": 1,
    "rho": 0.75,
    "p_init": 0.8,
    "eot_iter": 20,
}
TORCHATTACKS_NORM = {"linf": "Linf", "l2": "L2"}

# (model, x, y, seed, clean logits, stop early) -> (x_adv, broken or None: judge by forwards)
Part = Callable[..., tuple[torch.Tensor, torch.Tensor | None]]


def start_noise(shape: torch.Size, norm: str, device: torch.device) -> torch.Tensor:
    """APGD's random start as the reference draws it from the global generator."""
    t = 2 * torch.rand(shape) - 1 if norm == "linf" else torch.randn(shape)
    return t.to(device)


def draws_judge(model: nn.Module, y: torch.Tensor):
    """(candidates, points) -> on how many of several draws the randomized ``model`` is right."""
    return lambda candidates, points: correct_counts(model, candidates, y[points])


@dataclass
class APGDPart:
    """APGD-CE (``n_target_classes=0``) or APGD-T on the targeted DLR loss."""

    norm: str
    eps: float
    steps: int
    restarts: int
    loss: str
    n_target_classes: int = 0
    rho: float = REFERENCE["rho"]
    target_rows: int | None = None

    def __call__(self, model, x, y, seed, logits, stop_early):
        torch.manual_seed(seed)
        common = dict(eps=self.eps, norm=self.norm, steps=self.steps, loss=self.loss, rho=self.rho)
        if not self.n_target_classes:
            x_adv, broken = x.clone(), torch.zeros(len(x), dtype=torch.bool, device=x.device)
            for _ in range(self.restarts):
                idx = (~broken).nonzero().flatten()
                if idx.numel() == 0:
                    break
                start = start_noise(x[idx].shape, self.norm, x.device)
                cand, hit = apgd_rows(
                    model, x[idx], y[idx], start=start, stop_early=stop_early, **common
                )
                x_adv[idx[hit]], broken[idx[hit]] = cand[hit], True
                if not stop_early:  # unbroken rows keep their best-loss point for the judge
                    x_adv[idx[~hit]] = cand[~hit]
            return x_adv, broken
        targets = target_labels(logits, self.n_target_classes).repeat_interleave(self.restarts, 1)
        starts = torch.stack(
            [start_noise(x.shape, self.norm, x.device) for _ in range(targets.shape[1])]
        )

        def rows(point, slot):
            return apgd_rows(
                model,
                x[point],
                y[point],
                start=starts[slot, point],
                target=targets[point, slot],
                group=point,
                stop_early=stop_early,
                **common,
            )

        judge = None if stop_early else draws_judge(model, y)
        return run_in_waves(x, targets.shape[1], self.target_rows or len(x), rows, judge)


@dataclass
class FABTargetedPart:
    """FAB-T (:mod:`robustlab.attacks.fab_rows`), one targeted run per (point, target) row."""

    norm: str
    eps: float
    steps: int
    restarts: int
    n_target_classes: int
    target_rows: int | None = None

    def __call__(self, model, x, y, seed, logits, stop_early):
        torch.manual_seed(seed)
        targets = target_labels(logits, self.n_target_classes)
        x_adv, broken = x.clone(), torch.zeros(len(x), dtype=torch.bool, device=x.device)
        for restart in range(self.restarts):  # a restart starts at random, half eps out
            todo = (~broken).nonzero().flatten()
            if todo.numel() == 0:
                break
            start = start_noise(x[todo].shape, self.norm, x.device) if restart else None

            def rows(point, slot, todo=todo, start=start):
                return fab_targeted_rows(
                    model,
                    x[todo[point]],
                    y[todo[point]],
                    targets[todo[point], slot],
                    eps=self.eps,
                    norm=self.norm,
                    steps=self.steps,
                    group=point,
                    start=None if start is None else start[point],
                    stop_early=stop_early,
                )

            judge = None if stop_early else draws_judge(model, y[todo])
            cand, hit = run_in_waves(
                x[todo], targets.shape[1], self.target_rows or len(x), rows, judge
            )
            x_adv[todo[hit]], broken[todo[hit]] = cand[hit], True
            if judge is not None:  # every point's least-often-right candidate, for the caller
                x_adv[todo[~hit]] = cand[~hit]
        return x_adv, broken


@dataclass
class TorchattacksPart:
    """A torchattacks part (Square; the ``rand`` version's EOT APGDs), judged by forwards."""

    attack: object

    def __call__(self, model, x, y, seed, logits, stop_early):
        self.attack.seed, self.attack.device = seed, x.device
        return self.attack.forward(x, y), None


class AutoAttack:
    """The ordered AutoAttack ensemble; call with ``(x, y, seed)``; returns ``x_adv``.

    As in the reference's ``run_standard_evaluation``, each part runs on the points of the call
    still robust, ``batch_size`` points per pass (None: all of them in one pass), so a call on
    many points gives the later parts few but full passes.

    ``last_component_success[name]`` flags, per example of the last call, the part that broke it.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        norm: str,
        eps: float,
        num_classes: int,
        version: str = "standard",
        steps: int = REFERENCE["steps"],
        queries: int = REFERENCE["queries"],
        n_target_classes: int = REFERENCE["n_target_classes"],
        restarts: int = REFERENCE["restarts"],
        eot_iter: int = REFERENCE["eot_iter"],
        target_rows: int | None = None,
        batch_size: int | None = None,
    ):
        self.model = model
        self.batch_size = batch_size
        # a part judges its own restarts on one forward: on a randomized model each part runs
        # `rounds` times here instead, every candidate judged on several draws
        inner, self.rounds = restart_split(model, restarts)
        self.deterministic = selection_draws(model) == 1
        n = TORCHATTACKS_NORM[norm]
        rho = REFERENCE["rho"]
        if version == "standard":
            if num_classes < 4:
                raise ValueError(
                    f"AutoAttack standard (APGD-T) needs >= 4 classes, got {num_classes}"
                )
            n_targets = min(n_target_classes, num_classes - 1)
            apgd = dict(norm=norm, eps=eps, steps=steps, restarts=inner, rho=rho)
            self.components: dict[str, Part] = {
                "apgd_ce": APGDPart(loss="ce", **apgd),
                "apgd_t": APGDPart(
                    loss="dlr", n_target_classes=n_targets, target_rows=target_rows, **apgd
                ),
                "fab_t": FABTargetedPart(norm, eps, steps, inner, n_targets, target_rows),
                "square": TorchattacksPart(
                    Square(
                        model,
                        norm=n,
                        eps=eps,
                        n_queries=queries,
                        n_restarts=inner,
                        p_init=REFERENCE["p_init"],
                        loss="margin",
                        resc_schedule=False,
                    )
                ),
            }
            self.params = {"steps": steps, "queries": queries, "n_target_classes": n_targets}
        elif version == "rand":
            if num_classes < 3:
                raise ValueError(
                    f"AutoAttack rand (APGD-DLR) needs >= 3 classes, got {num_classes}"
                )
            self.components = {
                f"apgd_{loss}": TorchattacksPart(
                    APGD(
                        model,
                        norm=n,
                        eps=eps,
                        steps=steps,
                        n_restarts=inner,
                        loss=loss,
                        eot_iter=eot_iter,
                        rho=rho,
                    )
                )
                for loss in ("ce", "dlr")
            }
            self.params = {"steps": steps, "eot_iter": eot_iter}
        else:
            raise ValueError(f"unknown AutoAttack version {version!r}; valid: standard, rand")
        self.params.update(version=version, restarts=restarts, components=list(self.components))
        self.last_component_success: dict[str, torch.Tensor] = {}

    def __call__(self, x: torch.Tensor, y: torch.Tensor, seed: int) -> torch.Tensor:
        """Each part runs on the points still robust (right on some draw); a point keeps the
        candidate the model is right on least often; a part is credited with the points it broke
        (wrong on every draw). On a deterministic model a part's own forward passes judge it."""
        x_adv = x.clone()
        passes = self._passes(torch.arange(len(x), device=x.device))
        with torch.no_grad():
            logits = torch.cat([self.model(x[rows]) for rows in passes])
        if self.deterministic:
            best = (logits.argmax(1) == y).long()
        else:
            best = torch.cat([correct_counts(self.model, x[rows], y[rows]) for rows in passes])
        success = {}
        for name, part in self.components.items():
            success[name] = torch.zeros_like(best, dtype=torch.bool)
            for round_ in range(self.rounds):
                still = best.nonzero().flatten()
                if still.numel() == 0:
                    break
                # a later round (a restart on a randomized model) draws its own starts and noise
                round_seed = restart_seed(seed, round_)
                # the reference's batches: the points still robust, batch_size at a time, each
                # pass a fresh call of the part (reseeded, as the reference's perturb is)
                for idx in self._passes(still):
                    cand, broken = part(
                        self.model, x[idx], y[idx], round_seed, logits[idx], self.deterministic
                    )
                    if broken is None or not self.deterministic:
                        counts = correct_counts(self.model, cand, y[idx])
                    else:
                        counts = (~broken).long()
                    better = counts < best[idx]
                    hit = idx[better]
                    x_adv[hit] = cand[better]
                    best[hit] = counts[better]
                    success[name][hit] = best[hit] == 0  # points in play were right on some draw
        self.last_component_success = success
        return x_adv

    def _passes(self, rows: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``rows`` split into passes of ``batch_size`` (None: one pass)."""
        return rows.split(self.batch_size or max(len(rows), 1))
