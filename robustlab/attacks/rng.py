"""RNG hygiene for attacks.

torchattacks' APGD, APGD-T, FAB and Square call ``torch.random.manual_seed(self.seed)`` on every
call, clobbering the global generator. Every attack call here runs inside :func:`attack_rng`, which
forks the global CPU (and CUDA) state, seeds it, and restores the caller's state on exit. The seed
of one call is derived from the cell seed, the attack, eps and a call counter
(:func:`derive_seed`): calls (a batch, or AutoAttack's ``points_per_call`` points) differ, and
so do restarts and rounds within a call; reruns are identical.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

import torch


def derive_seed(*parts: object) -> int:
    """A stable 31-bit seed from ``parts`` (e.g. cell seed, attack name, eps, call index)."""
    digest = hashlib.sha256("|".join(repr(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") % (2**31)


def restart_seed(seed: int, restart: int) -> int:
    """The seed of a call's ``restart``-th rerun: the call's own for the first run, then one
    derived from it (the same seed would replay the first run's starts and draws)."""
    return seed if restart == 0 else derive_seed(seed, "restart", restart)


@contextmanager
def attack_rng(seed: int) -> Iterator[None]:
    """Run the body on the global RNG seeded with ``seed``; restore the outer state on exit."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def random_targets(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """A uniformly random wrong class per example, drawn from the (seeded) global CPU generator."""
    shift = torch.randint(1, num_classes, y.shape)
    return (y.cpu() + shift).remainder(num_classes).to(y.device)
