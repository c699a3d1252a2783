"""Hostile or damaged files on disk (issue #16): a CIFAR pickle that would run code."""

from __future__ import annotations

import os
import pickle
import shlex

import numpy as np
import pytest
import torch
from data_fixtures import write_cifar

from robustlab.data.cifar import read_cifar_batch, read_cifar_batches

# ---- a. the CIFAR reader unpickles only plain data ------------------------------------------------


class Hostile:
    """Unpickling it calls ``call(*args)``."""

    def __init__(self, call, *args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


@pytest.mark.parametrize("payload", ["os.system", "open"])
def test_cifar_reader_refuses_a_hostile_pickle_without_running_it(tmp_path, payload):
    marker = tmp_path / "pwned"
    hostile = (
        Hostile(os.system, f"touch {shlex.quote(str(marker))}")
        if payload == "os.system"
        else Hostile(open, str(marker), "w")
    )
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": hostile, b"labels": [0]}))
    with pytest.raises(ValueError) as err:
        read_cifar_batch(path, b"labels")
    message = str(err.value)
    assert "\n" not in message and str(path) in message and "refused global" in message
    assert ("system" if payload == "os.system" else "open") in message
    assert not marker.exists()


def test_cifar_reader_reads_real_format_batches(tmp_path):
    root = write_cifar(tmp_path, n_per_batch=3)
    folder = root / "cifar-10-batches-py"
    x, y = read_cifar_batches([folder / f"data_batch_{i}" for i in (1, 2)], b"labels")
    assert x.shape == (6, 3, 32, 32) and x.dtype == torch.uint8
    assert y.tolist() == [0, 1, 2, 3, 4, 5]


def test_cifar_reader_reads_python2_protocol2_pickles(tmp_path):
    """The official files are python 2 pickles (protocol 2, numpy.core module names, str keys
    read back as bytes): the restricted unpickler still reads them."""
    data = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072) % 251
    blob = pickle.dumps({b"batch_label": b"x", b"data": data, b"labels": [3, 7]}, protocol=2)
    path = tmp_path / "test_batch"
    path.write_bytes(blob.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    x, y = read_cifar_batch(path, b"labels")
    assert y.tolist() == [3, 7] and torch.equal(x.reshape(2, -1), torch.from_numpy(data))
