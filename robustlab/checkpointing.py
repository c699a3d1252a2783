"""Checkpoints that are never half-written: temp file, fsync, atomic rename."""

from __future__ import annotations

import os
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from robustlab.results.store import atomic_writer


def save_atomic(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` through ``atomic_writer``: all or nothing."""
    with atomic_writer(path) as fh:
        torch.save(obj, fh)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning CheckpointIO whose saves are atomic, so a killed run leaves no corrupt file."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        save_atomic(checkpoint, path)
