"""Load trained weights into a net from a Lightning checkpoint or a plain state_dict."""

from pathlib import Path

import torch
from torch import nn

PREFIXES = ("net.", "model.")


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _state_dict(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"load_weights: no checkpoint file at {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(
            f"load_weights: cannot read {path} as a torch checkpoint "
            f"({type(err).__name__}: {_one_line(err)})"
        ) from err
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(
            f"load_weights: {path} holds neither a state_dict nor a Lightning checkpoint"
        )
    for prefix in PREFIXES:
        if any(k.startswith(prefix) for k in obj):
            return {k[len(prefix) :]: v for k, v in obj.items() if k.startswith(prefix)}
    return obj


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


def load_weights(net: nn.Module, path: str | Path) -> None:
    """Load `path` into `net` strictly.

    Accepts a Lightning checkpoint (its "state_dict", keys prefixed by the LightningModule's
    attribute: only the "net." or "model." entries are kept, other submodules such as MI
    estimators are dropped) or a plain state_dict. Every error is one line naming the path.
    """
    path = Path(path)
    state = _state_dict(path)
    problem = _mismatch(net, state)
    if problem is not None:
        name = getattr(net, "name", type(net).__name__)
        raise ValueError(f"load_weights: {path} does not fit model {name}: {problem}")
    net.load_state_dict(state, strict=True)
