"""Mid-training resume: a killed training job continues from its last completed epoch.

Every epoch Lightning writes ``checkpoints/last.ckpt`` (atomically) in the job's output
directory: weights, optimizer, scheduler and loop state, plus what :class:`ResumeState` adds: the
job's training key (a checkpoint of another training config is never resumed) and the RNG states
of torch, CUDA, numpy and Python's ``random`` at the save. A rerun hands that file to
``Trainer.fit(ckpt_path=...)``; the saved RNG states are put back when the next epoch starts
(after Lightning's sanity validation, which the uninterrupted run also did before its first
epoch), so on CPU with the same thread count the final weights are bit-identical to an
uninterrupted run's. A checkpoint that cannot be read is said in one line and training starts
over; nothing is loaded except tensors and plain containers (``weights_only``).
"""

from __future__ import annotations

import random
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

LAST = "last.ckpt"
STATE_KEY = "robustlab_resume"


def rng_state() -> dict[str, Any]:
    """Every generator a training step may draw from, as tensors and plain values."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": _plain(random.getstate()),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def _plain(obj: Any) -> Any:
    return [_plain(o) for o in obj] if isinstance(obj, tuple | list) else obj


class ResumeState(pl.Callback):
    """Stamps each checkpoint with the training key and the RNG states; on resume, restores the
    RNG states at the first epoch start."""

    def __init__(self, training_key: str):
        self.training_key = training_key
        self._pending: dict[str, Any] | None = None

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        checkpoint[STATE_KEY] = {"training_key": self.training_key, "rng": rng_state()}

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        self._pending = checkpoint[STATE_KEY]["rng"]

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if self._pending is not None:
            set_rng_state(self._pending)
            self._pending = None


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A Lightning checkpoint, loaded without running code (tensors and plain containers)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def resume_point(
    checkpoint_dir: Path, training_key: str, tidy: bool = True
) -> dict[str, Any] | None:
    """The checkpoint to resume from (``{"path", "epoch", "checkpoint"}``), or None to start
    afresh. A stale directory (another training config, an unreadable file, or checkpoints
    without a resume stamp) is emptied, so ``best.ckpt`` always belongs to this training run
    (``tidy=False``: left alone, in DDP's extra processes)."""
    path = checkpoint_dir / LAST
    empty = _empty if tidy else (lambda _dir: None)
    if not path.is_file():
        empty(checkpoint_dir)
        return None
    try:
        checkpoint = read_checkpoint(path)
        stamp = checkpoint[STATE_KEY]
        epoch = int(checkpoint["epoch"])
    except Exception as err:  # truncated, empty, not a checkpoint, or refused by weights_only
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(
            f"robustlab: warning: {path} is unreadable ({reason[:160]}); training from scratch",
            file=sys.stderr,
        )
        empty(checkpoint_dir)
        return None
    if not isinstance(stamp, dict) or stamp.get("training_key") != training_key:
        print(f"robustlab: {path} is another training config's; training from scratch")
        empty(checkpoint_dir)
        return None
    return {"path": path, "epoch": epoch, "checkpoint": checkpoint}


def _empty(checkpoint_dir: Path) -> None:
    if checkpoint_dir.is_dir():
        shutil.rmtree(checkpoint_dir)
