"""Build an inference wrapper (a ``Predictor``) around a trained net.

A wrapper's constructor takes ``net`` and its config values; it may also ask for ``datamodule``
(e.g. Mixup Inference's partner pool) and for trained parts of the defense by name (e.g. the
translation wrapper's ``translator`` and ``gate``): ``required_parts`` lists those, and the plan
checks that the cell's defense declares them in its ``parts`` before anything runs.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from hydra.utils import get_class
from torch import nn

from robustlab.inference.base import Predictor

SUPPLIED = ("self", "net", "datamodule")


def required_parts(cls: type) -> list[str]:
    """Constructor parameters without a default that neither the config nor the evaluation
    supplies: trained parts the defense must provide."""
    params = inspect.signature(cls.__init__).parameters.values()
    return [
        p.name
        for p in params
        if p.default is inspect.Parameter.empty
        and p.name not in SUPPLIED
        and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    ]


def build_predictor(
    cfg: Mapping[str, Any], net: nn.Module, datamodule=None, defense=None
) -> Predictor:
    """Instantiate ``cfg['_target_']`` with ``net``, the ``datamodule`` when it asks for it, and
    the trained parts it needs from ``defense``."""
    params = dict(cfg)
    cls = get_class(params.pop("_target_"))
    if "datamodule" in inspect.signature(cls.__init__).parameters:
        params["datamodule"] = datamodule
    for part in required_parts(cls):
        if part in params:
            continue
        if defense is None or not hasattr(defense, part):
            raise ValueError(
                f"inference={params.get('name')} needs the trained {part!r} of a defense "
                "that provides it, not a bare net"
            )
        params[part] = getattr(defense, part)
    return cls(net=net, **params)
