"""Speed options: bf16 autocast in the attacks, the net in ``channels_last`` memory format, the
net's forward through ``torch.compile``. Off by default, except that an evaluation on a CPU runs
the net in channels_last (``channels_last: auto``, below).

They are the ``precision`` node of conf/config.yaml. Training in bf16 is Lightning's own switch,
``trainer.precision=bf16-mixed`` (its autocast covers each training step, the defense's inner
attack included); ``precision.attack`` is the evaluation's.

``precision.attack=bf16``: each attack crafts under ``torch.autocast(device, torch.bfloat16)``:
the net's matmuls and convolutions run in bf16, its output is cast back to fp32 at the crafted
model's boundary (so the attack's losses, steps and projections are fp32 arithmetic on fp32
inputs, and the input gradient is an fp32 tensor), and the verdict is judged outside the
autocast, on the fp32 forward of the predictor, as clean accuracy is. What bf16 changes is the
direction the attack follows, and which candidates the attack itself keeps (restarts,
AutoAttack's hand-over from one part to the next judge in bf16). Records say
``attack_precision: bf16``; the cell's config hash holds the option, so a bf16 cell never
reuses an fp32 cell's records.

``channels_last`` and ``compile`` change the float arithmetic of the net: when either is on for
training (``channels_last: true``), it is part of the training cache key
(``robustlab.cache.training_config``), so the weights are those such a run trains; off, the key
is what it was before the options existed.

``channels_last: auto`` (the default) trains in the default contiguous format and evaluates on a
CPU in channels_last (``evaluation_layout``): there oneDNN's channels_last kernels are faster for
every net robustlab carries (0.5x the time of a PGD step for smallcnn, whose contiguous max-pool
is slow, 0.9x for the ResNets; experiments/bench). Sums then run in another order, so a verdict
can flip where a point sits on the decision boundary (1 of 500 AutoAttack verdicts in the
benchmark), as between two devices; like the device, the evaluation's memory format is not part
of the cell's hash, and records say it (``memory_format``). ``false`` keeps the contiguous format
everywhere (AutoAttack's iterates then match the reference implementation's bit for bit).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.nn.parameter import is_lazy

ATTACK_PRECISIONS = ("fp32", "bf16")
# Lightning's trainer.precision values robustlab trains with: full precision or mixed precision
# (the "-true" half precisions would leave the net's weights in half precision for the attacks)
TRAINER_PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")
CHANNELS_LAST = (False, True, "auto")
DEFAULTS: dict[str, Any] = {"attack": "fp32", "channels_last": "auto", "compile": False}
# set on a net running in channels_last (prepare_net, or inside an evaluation_layout block)
_PREPARED = "_robustlab_channels_last"


def settings(cfg: DictConfig | dict[str, Any]) -> dict[str, Any]:
    """The ``precision`` node with defaults for what it does not set (a config without one: a
    user's own primary config, a config written before the options existed)."""
    node = cfg.get("precision") if cfg is not None else None
    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=True)
    return {**DEFAULTS, **(node or {})}


def hashed_node(node: Any) -> Any:
    """What a cell's hash holds of a resolved ``precision`` node: None (dropped) when it asks for
    nothing that changes records beyond what a change of device does (every option off,
    channels_last false or auto), so hashes are those from before the options existed; else the
    node as written, with channels_last auto written as false (the value hashed before auto)."""
    if not isinstance(node, dict):
        return node
    unhashed = node.get("channels_last", False)
    unhashed = unhashed is False or unhashed == "auto"
    if unhashed and {**DEFAULTS, **node, "channels_last": "auto"} == DEFAULTS:
        return None
    return {**node, "channels_last": False} if unhashed and "channels_last" in node else node


def net_options(cfg: DictConfig) -> dict[str, Any]:
    """The options that change the trained net's arithmetic, when any is on; else empty."""
    chosen = settings(cfg)
    options = {"channels_last": chosen["channels_last"] is True, "compile": chosen["compile"]}
    return options if any(options.values()) else {}


def valid_channels_last(value: Any) -> bool:
    """Whether ``value`` is a ``precision.channels_last`` setting: true, false or auto."""
    return isinstance(value, bool) or value == "auto"


def evaluates_channels_last(channels_last: bool | str, device: torch.device | str) -> bool:
    """Whether an evaluation on ``device`` runs the net in channels_last under the
    ``precision.channels_last`` setting (true; auto on a CPU)."""
    if not valid_channels_last(channels_last):
        raise ValueError(f"channels_last={channels_last!r} is not one of {list(CHANNELS_LAST)}")
    return channels_last is True or (channels_last == "auto" and torch.device(device).type == "cpu")


@contextmanager
def evaluation_layout(net: nn.Module, channels_last: bool) -> Iterator[str]:
    """Run ``net`` in channels_last inside the block (its 4-D weights converted, its 4-D inputs
    converted on the way in), back to the contiguous format after; the same values either way.
    Yields the memory format the net runs in (``"channels_last"`` or ``"contiguous"``). A net
    already in channels_last (``prepare_net``, or an enclosing block) is left as it is; a net
    without 4-D weights (no convolution) stays contiguous."""
    if getattr(net, _PREPARED, False):
        yield "channels_last"
        return
    if not channels_last or not has_convolutions(net):
        yield "contiguous"
        return
    net.to(memory_format=torch.channels_last)
    handle = net.register_forward_pre_hook(_channels_last_input)
    setattr(net, _PREPARED, True)
    try:
        yield "channels_last"
    finally:
        delattr(net, _PREPARED)
        handle.remove()
        net.to(memory_format=torch.contiguous_format)


def has_convolutions(net: nn.Module) -> bool:
    """Whether ``net`` has 4-D parameters (2-D convolutions' weights), the tensors channels_last
    lays out otherwise; lazy parameters not yet shaped do not count."""
    return any(not is_lazy(p) and p.dim() == 4 for p in net.parameters())


def runs_channels_last(net: nn.Module) -> bool:
    """Whether ``net`` runs in channels_last now (``prepare_net``, or inside an
    ``evaluation_layout`` block that converted it)."""
    return bool(getattr(net, _PREPARED, False))


def prepare_net(net: nn.Module, *, channels_last: bool = False, compile: bool = False) -> nn.Module:
    """``net`` (the same module) in channels_last memory format, its 4-D inputs converted on the
    way in, and/or its ``forward`` compiled. Only ``forward`` is compiled, not the module's call:
    hooks (the attacks' pass counters, the channels_last conversion) stay eager, so registering
    one does not recompile, and the state_dict keeps its keys."""
    if channels_last and has_convolutions(net):
        net.to(memory_format=torch.channels_last)
        net.register_forward_pre_hook(_channels_last_input)
        setattr(net, _PREPARED, True)
    if compile:
        net.forward = torch.compile(net.forward)
    return net


def _channels_last_input(_module: nn.Module, args: tuple) -> tuple | None:
    if args and isinstance(args[0], torch.Tensor) and args[0].dim() == 4:
        return (args[0].contiguous(memory_format=torch.channels_last), *args[1:])
    return None


def build_net(cfg: DictConfig) -> nn.Module:
    """The cell's net (``cfg.model``) with the cell's channels_last/compile options."""
    chosen = settings(cfg)
    return prepare_net(
        instantiate(cfg.model),
        channels_last=chosen["channels_last"] is True,
        compile=bool(chosen["compile"]),
    )


@contextmanager
def attack_autocast(model: nn.Module, precision: str, device_type: str) -> Iterator[None]:
    """Craft on ``model`` in ``precision``: under bf16 autocast on ``device_type``, with the
    model's tensor output cast back to fp32 (module docstring); fp32: nothing changes."""
    if precision == "fp32":
        yield
        return
    if precision != "bf16":
        raise ValueError(f"attack precision {precision!r} is not one of {list(ATTACK_PRECISIONS)}")
    handle = model.register_forward_hook(_fp32_output)
    try:
        with torch.autocast(device_type=device_type, dtype=torch.bfloat16):
            yield
    finally:
        handle.remove()


def _fp32_output(_module: nn.Module, _inputs: tuple, output: Any) -> Any:
    if isinstance(output, torch.Tensor) and output.is_floating_point():
        return output.float()
    return None
