"""Load trained weights into a net from a Lightning checkpoint, a plain state_dict, or a public
CIFAR checkpoint (layouts RESNET, PREACT_RESNET, WIDE_RESNET) whose keys are renamed onto
robustlab's."""

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

# Containers around a state_dict: Lightning's "state_dict"; kuangliu/pytorch-cifar's ckpt.pth
# saves {"net": ..., "acc": ..., "epoch": ...}; many repositories save {"model": ...}.
CONTAINERS = ("state_dict", "net", "model")
PREFIXES = ("net.", "model.")
NORMALIZE_KEYS = ("normalize.mean", "normalize.std")


@dataclass(frozen=True)
class Layout:
    """How a public layout's module names map onto robustlab's; names not listed are the same.

    Residual blocks, numbered per stage in the file (``layer2.1``, ``block3.layer.0``), become
    one flat ``stages``/``blocks`` Sequential in robustlab, numbered in order.
    """

    name: str
    top: dict[str, str]  # module outside the residual stages -> robustlab module
    stages: str  # robustlab's Sequential of residual blocks
    block: dict[str, str] = field(default_factory=dict)  # module inside a block -> robustlab's
    dropped: tuple[str, ...] = ()  # modules the public forward never uses


# RobustBench's model zoo keeps its input normalization as buffers "mu" and "sigma".
_NORMALIZE = {"mu": "normalize.mean", "sigma": "normalize.std"}

# kuangliu/pytorch-cifar models/resnet.py and RobustBench architectures/resnet.py `ResNet`
# (AutoAttack's and RobustBench's example ResNet-18): model=resnet18 or resnet50_cifar.
RESNET = Layout(
    name="ResNet (kuangliu/RobustBench)",
    top={"conv1": "stem.0", "bn1": "stem.1", **_NORMALIZE},
    stages="stages",
)
# RobustBench architectures/resnet.py `PreActResNet(PreActBlockV2, [2, 2, 2, 2],
# bn_before_fc=True)` (Rice et al. 2020's PreAct ResNet-18): model=preact_resnet18. Files
# without the final "bn" (kuangliu's PreActResNet, RobustBench's bn_before_fc=False) do not fit.
PREACT_RESNET = Layout(
    name="PreActResNet (RobustBench)",
    top={"conv1": "stem", **_NORMALIZE},
    stages="blocks",
    block={"shortcut.0": "shortcut"},
)
# RobustBench architectures/wide_resnet.py `WideResNet` (from TRADES; WRN-28-10, WRN-34-10):
# model=wide_resnet or wrn34_10. "sub_block1" (sub_block1=True, e.g. TRADES) is never run.
WIDE_RESNET = Layout(
    name="WideResNet (RobustBench/TRADES)",
    top={"conv1": "stem", "bn1": "bn", "fc": "linear", **_NORMALIZE},
    stages="blocks",
    block={"convShortcut": "shortcut"},
    dropped=("sub_block1",),
)

# "layer<stage>.<block>.rest" (ResNet, PreActResNet) or "block<stage>.layer.<block>.rest" (WRN).
_BLOCK_KEY = re.compile(r"(?:layer(\d+)|block(\d+)\.layer)\.(\d+)\.(.+)")


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_checkpoint(path: Path, caller: str = "load_weights") -> object:
    """The object saved in `path`, read on the CPU without unpickling code (weights_only); a
    missing or unreadable file is one line naming `caller` and the path."""
    if not path.is_file():
        raise FileNotFoundError(f"{caller}: no checkpoint file at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(
            f"{caller}: cannot read {path} as a torch checkpoint "
            f"({type(err).__name__}: {_one_line(err)})"
        ) from err


def _state_dict(path: Path) -> dict:
    obj = read_checkpoint(path)
    if isinstance(obj, dict):
        obj = next((obj[k] for k in CONTAINERS if isinstance(obj.get(k), dict)), obj)
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(
            f"load_weights: {path} holds neither a state_dict nor a Lightning checkpoint"
        )
    for prefix in PREFIXES:
        if any(k.startswith(prefix) for k in obj):
            obj = {k[len(prefix) :]: v for k, v in obj.items() if k.startswith(prefix)}
            break
    return {k.removeprefix("module."): v for k, v in obj.items()}  # DataParallel's prefix


def _detect(state: dict) -> Layout | None:
    """The public layout of `state`, from its keys; None for robustlab's own keys (or unknown)."""
    if "block1.layer.0.conv1.weight" in state:
        return WIDE_RESNET
    if "layer1.0.conv1.weight" in state:
        return RESNET if "bn1.weight" in state else PREACT_RESNET
    return None


def _rename(name: str, table: dict[str, str]) -> str:
    """`name` with its leading module renamed by `table`."""
    for old in table:
        if name == old or name.startswith(old + "."):
            return table[old] + name[len(old) :]
    return name


def _translate(state: dict, layout: Layout) -> dict:
    """`state` with robustlab's key names; unknown keys are kept, so the mismatch names them."""
    state = {k: v for k, v in state.items() if k.split(".")[0] not in layout.dropped}
    blocks = {}
    for key in state:
        if match := _BLOCK_KEY.fullmatch(key):
            blocks[key] = (int(match[1] or match[2]), int(match[3]), match[4])
    order = {pos: i for i, pos in enumerate(sorted({(s, b) for s, b, _ in blocks.values()}))}
    out = {}
    for key, value in state.items():
        if key in blocks:
            stage, block, rest = blocks[key]
            key = f"{layout.stages}.{order[stage, block]}.{_rename(rest, layout.block)}"
        else:
            key = _rename(key, layout.top)
        out[key] = value
    return out


def _mismatch(net: nn.Module, state: dict) -> str | None:
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        return f"missing keys {missing[:3]}, unexpected keys {unexpected[:3]}"
    for key, value in own.items():
        if value.shape != state[key].shape:
            return f"{key} has shape {tuple(state[key].shape)} in the file, {tuple(value.shape)} in the model"
    return None


def _is_identity(own: dict) -> bool:
    mean, std = (own.get(k) for k in NORMALIZE_KEYS)
    return mean is None or bool((mean == 0).all() and (std == 1).all())


def load_weights(net: nn.Module, path: str | Path) -> None:
    """Load `path` into `net` strictly.

    Accepts a Lightning checkpoint (its "state_dict", keys prefixed by the LightningModule's
    attribute: only the "net." or "model." entries are kept, other submodules such as MI
    estimators are dropped), a plain state_dict, or a public checkpoint in a layout of
    ``_detect`` (optionally under DataParallel's "module."). A file without normalization
    buffers (most public ones: they expect raw [0, 1] pixels) loads only into a net built with
    ``normalization=identity``. Every error is one line naming the path.
    """
    path = Path(path)
    state = _state_dict(path)
    layout = _detect(state)
    if layout is not None:
        state = _translate(state, layout)
    own = net.state_dict()
    raw_pixels = not any(k in state for k in NORMALIZE_KEYS)
    if raw_pixels:
        state |= {k: own[k] for k in NORMALIZE_KEYS if k in own}
    name = getattr(net, "name", type(net).__name__)
    read_as = "" if layout is None else f" (read as {layout.name})"
    problem = _mismatch(net, state)
    if problem is not None:
        raise ValueError(f"load_weights: {path}{read_as} does not fit model {name}: {problem}")
    if raw_pixels and not _is_identity(own):
        raise ValueError(
            f"load_weights: {path}{read_as} has no normalization buffers but model {name} "
            "normalizes inputs with the dataset's mean/std; set model.normalization=identity "
            "if the checkpoint expects raw [0, 1] pixels"
        )
    net.load_state_dict(state, strict=True)
