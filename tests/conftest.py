"""Shared test setup: small thread pools (CI has 2 cores) and a composed-config helper."""

from __future__ import annotations

import logging
import os

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from torch import nn

from robustlab.paths import CONF_DIR

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def restore_logging():
    """An in-process Hydra run configures logging handlers on the streams pytest captures for that
    test; once those close, later log calls print '--- Logging error ---' into other tests'
    stderr. Each test gets the handlers and levels it started with back."""
    loggers = [logging.getLogger(), *map(logging.getLogger, list(logging.root.manager.loggerDict))]
    saved = [(lg, lg.handlers[:], lg.level, lg.propagate) for lg in loggers]
    yield
    for lg, handlers, level, propagate in saved:
        lg.handlers[:] = handlers
        lg.level, lg.propagate = level, propagate


@pytest.fixture(autouse=True)
def restore_threads():
    """A cell run in-process sets torch's thread count (``torch_threads``); each test gets the
    count it started with back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def compose_cfg(tmp_path):
    """Compose the project config with overrides, output_dir pointed at a temp folder."""

    def _compose(*overrides: str):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name="config", overrides=[f"output_dir={tmp_path}", *overrides])

    return _compose


@pytest.fixture(scope="module")
def trained():
    """A small MLP trained on separable-ish 10-class data shaped (N, 1, 4, 4): (net, x, y)."""
    g = torch.Generator().manual_seed(0)
    centers = torch.rand(10, 16, generator=g)
    y = torch.arange(200) % 10
    x = (centers[y] + 0.08 * torch.randn(200, 16, generator=g)).clamp(0, 1).view(-1, 1, 4, 4)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(300):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
    return net.eval(), x, y
