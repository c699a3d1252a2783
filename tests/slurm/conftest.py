"""A real single-node SLURM cluster for the `slurm`-marked tests (`make test-slurm`).

The session fixture ``slurm`` runs ``scripts/slurm_cluster.sh start`` (which installs slurm-wlm and
munge with apt-get if they are missing) and stops the cluster at the end if it started it. Tests
marked ``slurm`` run only when the ``-m`` expression names the marker (``pytest -m slurm
tests/slurm``): plain ``pytest`` and ``pytest -m "not slow"`` leave them out, as they need root
and take minutes. Sweeps run as ``python -m robustlab -m ... hydra/launcher=slurm`` subprocesses
with their own sweep and cache folders (slurm_helpers.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest
from slurm_helpers import PARTITION, SCRIPT, STATE_DIR, Cluster


def pytest_collection_modifyitems(config, items):
    """Leave out `slurm` tests unless the marker expression asks for them."""
    if "slurm" in (config.option.markexpr or ""):
        return
    kept, dropped = [], []
    for item in items:
        (dropped if item.get_closest_marker("slurm") else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture(scope="session")
def slurm(tmp_path_factory) -> Cluster:
    """The local cluster, up (started by scripts/slurm_cluster.sh unless it already was)."""
    if os.geteuid() != 0:
        pytest.skip("the local SLURM cluster needs root (apt-get, munged as the munge user)")
    installed = all(shutil.which(p) for p in ("slurmctld", "slurmd", "sbatch", "munged"))
    if not installed and not shutil.which("apt-get"):
        pytest.skip("slurm-wlm and munge are not installed and apt-get is not available")
    was_up = subprocess.run([SCRIPT, "status"], capture_output=True).returncode == 0
    t0 = time.monotonic()
    proc = subprocess.run([SCRIPT, "start"], capture_output=True, text=True, timeout=900)
    if proc.returncode == 3:
        pytest.skip(f"cannot install SLURM: {proc.stderr.strip()}")
    if proc.returncode != 0:
        pytest.fail(f"{SCRIPT} start failed:\n{proc.stdout}{proc.stderr}")
    print(f"slurm_cluster.sh start: {time.monotonic() - t0:.1f} s\n{proc.stdout}")
    # the clients (sbatch, squeue, scontrol) and the jobs find the cluster's config here even
    # where /etc/slurm/slurm.conf is another one
    os.environ["SLURM_CONF"] = str(STATE_DIR / "etc" / "slurm.conf")
    yield Cluster(PARTITION, tmp_path_factory.mktemp("slurm"))
    if not was_up:
        subprocess.run([SCRIPT, "stop"], capture_output=True)
