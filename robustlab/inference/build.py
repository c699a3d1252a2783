"""Build the predictor named by the ``inference`` config group around a trained net."""

from __future__ import annotations

import inspect
from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf
from torch import nn

from robustlab.inference.base import Predictor


def build_predictor(cfg: DictConfig | dict[str, Any], net: nn.Module, datamodule=None) -> Predictor:
    """Instantiate ``cfg._target_`` with ``net`` (and ``datamodule`` when it asks for one)."""
    params = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    cls = get_class(params.pop("_target_"))
    if "datamodule" in inspect.signature(cls.__init__).parameters:
        params["datamodule"] = datamodule
    return cls(net=net, **params)
