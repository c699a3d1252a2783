"""Optimizers and learning-rate schedules shared by every defense."""

from __future__ import annotations

from typing import Any

import torch

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("none", "multistep", "cosine", "onecycle")


def check_optimizer(where: str, optimizer: Any, scheduler: Any) -> None:
    """One-line ValueError for a bad optimizer or schedule config, before training starts."""
    if optimizer is None:
        return
    name = optimizer.get("name", "sgd")
    if name not in OPTIMIZERS:
        raise ValueError(f"{where}.optimizer.name={name!r} is not one of {list(OPTIMIZERS)}")
    for key in ("lr", "weight_decay", "momentum"):
        value = optimizer.get(key)
        if value is None and key != "lr":
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ValueError(f"{where}.optimizer.{key}={value!r} must be a number >= 0")
    if optimizer["lr"] == 0:
        raise ValueError(f"{where}.optimizer.lr=0 would never train: give a positive number")
    schedule = (scheduler or {}).get("name", "none")
    if schedule not in SCHEDULES:
        raise ValueError(f"{where}.scheduler.name={schedule!r} is not one of {list(SCHEDULES)}")


def build_optimizer(params, cfg: dict[str, Any]) -> torch.optim.Optimizer:
    """``cfg``: name (sgd | adam | adamw), lr, weight_decay, and momentum/nesterov for SGD."""
    name = cfg.get("name", "sgd")
    lr, wd = float(cfg["lr"]), float(cfg.get("weight_decay", 0.0))
    if name == "sgd":
        return torch.optim.SGD(
            params,
            lr=lr,
            momentum=float(cfg.get("momentum", 0.9)),
            weight_decay=wd,
            nesterov=bool(cfg.get("nesterov", False)),
        )
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    raise ValueError(f"optimizer name={name!r} is not one of {list(OPTIMIZERS)}")


def build_schedule(
    optimizer: torch.optim.Optimizer, cfg: dict[str, Any], total_steps: int
) -> dict[str, Any] | None:
    """A Lightning lr_scheduler dict. multistep milestones are epochs; cosine/onecycle step per batch."""
    name = cfg.get("name", "none")
    if name == "none":
        return None
    if name == "multistep":
        sched = torch.optim.lr_scheduler.MultiStepLR(
            optimizer, milestones=list(cfg["milestones"]), gamma=float(cfg.get("gamma", 0.1))
        )
        return {"scheduler": sched, "interval": "epoch"}
    if name == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps))
        return {"scheduler": sched, "interval": "step"}
    if name == "onecycle":
        max_lr = float(cfg.get("max_lr", optimizer.param_groups[0]["lr"]))
        sched = torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=max_lr,
            total_steps=max(1, total_steps),
            pct_start=float(cfg.get("pct_start", 0.4)),
            anneal_strategy="linear",
        )
        return {"scheduler": sched, "interval": "step"}
    raise ValueError(f"schedule name={name!r} is not one of {list(SCHEDULES)}")
