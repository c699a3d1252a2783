"""Mid-evaluation resume: the finished units of an evaluation, kept on disk until its records are.

A unit is one call of an attack under one (inference wrapper, attack, eps, threat model): a batch
of test examples, or for AutoAttack ``points_per_call`` of them; or the clean scoring / gradient
check of one batch. Each runs in a generator seeded from the cell's seed and the unit's name
alone (``derive_seed``), so its result does not depend on which units ran before it in this
process, and is written atomically to ``eval_state/<scope>/<unit>.pt`` the moment it finishes. The scope directory hashes everything a unit's result depends on besides its name
(the evaluated config's hash: data split, attacks, evaluation settings; the wrapper's config;
library versions; the predictor's weights; the shard's points, seed and draws); a rerun after a kill
recomputes only the missing units and writes records identical to an uninterrupted run's. Files
are read with ``weights_only`` (tensors and plain values, no code); an unreadable one is said in
one line and recomputed.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from robustlab.attacks.rng import attack_rng, derive_seed
from robustlab.checkpointing import save_atomic

STATE_DIR = "eval_state"


def fingerprint(*parts: Any) -> str:
    """A short stable hash of tensors (their bytes) and JSON-able values."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, torch.Tensor):
            digest.update(
                part.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
            )
        else:
            digest.update(json.dumps(part, sort_keys=True, default=repr).encode())
    return digest.hexdigest()[:16]


def weights_fingerprint(module: torch.nn.Module) -> str:
    """What a unit's result depends on in the model: every parameter and buffer."""
    state = module.state_dict()
    return fingerprint(sorted(state), *(state[k] for k in sorted(state)))


class UnitStore:
    """Finished units of one evaluation scope; ``directory=None`` keeps nothing (a validation
    subset, or a caller that wants no resume)."""

    def __init__(self, directory: Path | None, seed: int):
        self.directory = directory
        self.seed = seed

    def _path(self, unit: tuple) -> Path | None:
        if self.directory is None:
            return None
        return self.directory / f"{fingerprint(list(map(str, unit)))}.pt"

    def has(self, unit: tuple) -> bool:
        path = self._path(unit)
        return path is not None and path.is_file()

    def stored(self) -> int:
        """How many units an earlier run of this scope finished."""
        if self.directory is None or not self.directory.is_dir():
            return 0
        return sum(1 for _ in self.directory.glob("*.pt"))

    def run(self, unit: tuple, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """The stored result of ``unit``, or ``compute()`` run in the unit's own seeded generator
        and stored."""
        path = self._path(unit)
        if path is not None and path.is_file():
            loaded = self._load(path, unit)
            if loaded is not None:
                return loaded
        with attack_rng(derive_seed(self.seed, "unit", *map(str, unit))):
            result = compute()
        if path is not None:
            save_atomic({"unit": list(map(str, unit)), "result": result}, path)
        return result

    @staticmethod
    def _load(path: Path, unit: tuple) -> dict[str, Any] | None:
        try:
            stored = torch.load(path, map_location="cpu", weights_only=True)
            if stored["unit"] != list(map(str, unit)):
                raise ValueError("it holds another unit")
            return stored["result"]
        except Exception as err:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            print(
                f"robustlab: warning: {path} is unreadable ({reason[:120]}); recomputing it",
                file=sys.stderr,
            )
            path.unlink(missing_ok=True)
            return None
