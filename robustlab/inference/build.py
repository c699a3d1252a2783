"""Build the predictor named by the ``inference`` config group around a trained net."""

from __future__ import annotations

import inspect
from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf
from torch import nn

from robustlab.inference.base import Predictor


def build_predictor(
    cfg: DictConfig | dict[str, Any], net: nn.Module, datamodule=None, defense=None
) -> Predictor:
    """Instantiate ``cfg._target_`` with ``net``, and with ``datamodule`` / ``defense`` (the
    trained DefenseModule, e.g. for a translator trained beside the net) when it asks for them."""
    params = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    cls = get_class(params.pop("_target_"))
    wanted = inspect.signature(cls.__init__).parameters
    if "datamodule" in wanted:
        params["datamodule"] = datamodule
    if "defense" in wanted:
        if defense is None:
            raise ValueError(
                f"inference={params.get('name')} needs a trained defense, not a bare net"
            )
        params["defense"] = defense
    return cls(net=net, **params)
