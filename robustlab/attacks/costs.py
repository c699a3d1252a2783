"""Count forward and backward passes (in examples) through a module, for the cost columns of a record."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class PassCounter:
    forward_rows: int = 0
    backward_rows: int = 0


@contextmanager
def count_passes(model: nn.Module) -> Iterator[PassCounter]:
    """Count examples passed forward through ``model`` and gradients flowing back through its output.

    A backward pass is counted when autograd computes the gradient of the module's output (so a
    ``torch.autograd.grad`` w.r.t. the input counts, as does each of FAB's per-class backwards).
    Hooks are removed on exit.
    """
    counter = PassCounter()

    def pre_hook(_module: nn.Module, inputs: tuple) -> None:
        counter.forward_rows += inputs[0].shape[0]

    def on_grad(grad: torch.Tensor) -> None:
        counter.backward_rows += grad.shape[0]

    def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        if isinstance(output, torch.Tensor) and output.requires_grad:
            output.register_hook(on_grad)

    handles = [model.register_forward_pre_hook(pre_hook), model.register_forward_hook(hook)]
    try:
        yield counter
    finally:
        for handle in handles:
            handle.remove()
