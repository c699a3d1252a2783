"""One GPU per cell when a sweep runs several cells at once on a multi-GPU node.

With ``hydra/launcher=parallel`` (joblib) every cell is a process of its own; a cell that asks for
one GPU (``trainer=gpu``) gets ``gpu_pinning.gpus[job_num % len(gpus)]`` (all visible GPUs when
``gpus`` is null), passed to Lightning as ``trainer.devices=[index]``.
"""

from __future__ import annotations

from omegaconf import DictConfig, open_dict


def pinned_gpu(job_num: int, gpus: list[int]) -> int:
    """The GPU a sweep's job number ``job_num`` runs on: round robin over ``gpus``."""
    if not gpus:
        raise ValueError("gpu_pinning: no GPU to pin to (gpu_pinning.gpus is empty)")
    return gpus[job_num % len(gpus)]


def pin_gpu(cfg: DictConfig, job_num: int | None, visible_gpus: int) -> int | None:
    """Set ``trainer.devices=[gpu]`` for a one-GPU cell of a multirun; returns the GPU or None."""
    pinning = cfg.get("gpu_pinning") or {}
    wants_one_gpu = cfg.trainer.get("accelerator") in ("gpu", "cuda") and cfg.trainer.devices == 1
    if not pinning.get("enabled", True) or job_num is None or not wants_one_gpu:
        return None
    gpus = list(pinning.get("gpus") or range(visible_gpus))
    if len(gpus) < 2:
        return None
    gpu = pinned_gpu(job_num, gpus)
    with open_dict(cfg):
        cfg.trainer.devices = [gpu]
    return gpu
