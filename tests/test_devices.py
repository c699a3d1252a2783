"""GPU pinning by job number (the selection logic; no GPU needed)."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from robustlab.devices import pin_gpu, pinned_gpu


def cfg(accelerator="gpu", devices=1, gpus=None, enabled=True):
    return OmegaConf.create(
        {
            "trainer": {"accelerator": accelerator, "devices": devices},
            "gpu_pinning": {"enabled": enabled, "gpus": gpus},
        }
    )


def test_round_robin_over_gpus():
    assert [pinned_gpu(j, [0, 1, 2]) for j in range(7)] == [0, 1, 2, 0, 1, 2, 0]


def test_pin_sets_trainer_devices_from_job_number():
    c = cfg()
    assert pin_gpu(c, job_num=5, visible_gpus=4) == 1
    assert list(c.trainer.devices) == [1]
    c = cfg(gpus=[2, 3])
    assert pin_gpu(c, job_num=3, visible_gpus=4) == 3


@pytest.mark.parametrize(
    "c, job, visible",
    [
        (cfg(accelerator="cpu"), 1, 4),  # CPU cell
        (cfg(devices=-1), 1, 4),  # a DDP cell takes all GPUs itself
        (cfg(), None, 4),  # not a multirun
        (cfg(), 1, 1),  # a single GPU: nothing to spread
        (cfg(enabled=False), 1, 4),
    ],
)
def test_no_pinning_where_it_does_not_apply(c, job, visible):
    assert pin_gpu(c, job_num=job, visible_gpus=visible) is None


def test_empty_gpu_list_is_an_error():
    with pytest.raises(ValueError, match="no GPU to pin to"):
        pinned_gpu(0, [])
