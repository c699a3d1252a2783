"""Helpers of the slurm tests: sweeps through hydra/launcher=slurm as subprocesses, their jobs,
logs and records (the cluster itself is conftest's ``slurm`` fixture)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "slurm_cluster.sh"
STATE_DIR = Path(os.environ.get("ROBUSTLAB_SLURM_DIR", "/var/tmp/robustlab-slurm"))
PARTITION = os.environ.get("ROBUSTLAB_SLURM_PARTITION", "debug")

# Record fields that differ between two runs of the same cell.
TIMING_FIELDS = {"wall_seconds", "started", "finished", "run_id"}

# A tiny digits cell on one CPU thread, as a SLURM job of one CPU and 1 GB.
LAUNCHER = [
    "hydra/launcher=slurm",
    f"hydra.launcher.partition={PARTITION}",
    "hydra.launcher.gpus_per_node=0",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
]
TINY = ["dataset=digits", "torch_threads=1", "trainer.enable_progress_bar=false"]


@dataclass
class Sweep:
    """A running `python -m robustlab -m` through hydra/launcher=slurm."""

    proc: subprocess.Popen
    sweep_dir: Path
    log: Path
    started: float
    took: float | None = None

    def wait(self, timeout: float) -> str:
        """Wait for the sweep to end; its output (fails the test on a non-zero exit)."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            cancel_jobs(self.sweep_dir)
            pytest.fail(f"sweep did not end in {timeout:.0f} s:\n{self.tail()}")
        if self.took is None:
            self.took = time.monotonic() - self.started
            print(f"{self.sweep_dir.name}: sweep took {self.took:.0f} s")
        if self.proc.returncode != 0:
            pytest.fail(f"sweep exited {self.proc.returncode}:\n{self.tail()}")
        return self.log.read_text()

    def tail(self, n: int = 60) -> str:
        text = "\n".join(self.log.read_text().splitlines()[-n:])
        for job_log in sorted(self.sweep_dir.glob(".submitit/*/*_log.*")):
            text += f"\n--- {job_log.name}:\n" + "\n".join(job_log.read_text().splitlines()[-n:])
        return text

    def cell(self, index: int = 0) -> Path:
        """The directory of cell ``index`` (``<index>_digits_<defense>``)."""
        found = sorted(self.sweep_dir.glob(f"{index}_*"))
        return found[0] if found else self.sweep_dir / f"{index}_missing"

    def job_id(self, index: int = 0, timeout: float = 60) -> str:
        """The SLURM id of cell ``index`` once submitted: ``ARRAY_TASK`` for a task of an array,
        the plain job id for a sweep of one cell (submitit submits one job without an array)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for folder in self.sweep_dir.glob(".submitit/*"):
                name = folder.name
                if not (folder / f"{name}_submitted.pkl").is_file():
                    continue
                if re.fullmatch(rf"\d+_{index}", name) or (index == 0 and name.isdigit()):
                    return name
            if self.proc.poll() is not None:
                pytest.fail(f"sweep ended before submitting:\n{self.tail()}")
            time.sleep(0.1)
        pytest.fail(f"no job submitted in {timeout:.0f} s:\n{self.tail()}")

    def job_log(self, index: int = 0) -> str:
        """The job's stdout (all its runs: submitit appends)."""
        job = self.job_id(index)
        path = self.sweep_dir / ".submitit" / job / f"{job}_0_log.out"
        return path.read_text() if path.is_file() else ""

    def job_err(self, index: int = 0) -> str:
        job = self.job_id(index)
        path = self.sweep_dir / ".submitit" / job / f"{job}_0_log.err"
        return path.read_text() if path.is_file() else ""


def cancel_jobs(sweep_dir: Path) -> None:
    ids = {p.name.split("_")[0] for p in sweep_dir.glob(".submitit/*") if p.name[0].isdigit()}
    if ids:
        subprocess.run(["scancel", *sorted(ids)], capture_output=True)


@dataclass
class Cluster:
    partition: str
    root: Path  # the session's folder for sweeps and caches

    def sweep(self, name: str, *overrides: str, timeout_min: int = 20) -> Sweep:
        """Start a multirun of ``overrides`` through hydra/launcher=slurm into ``root/name``, with
        a training cache of its own (``root/name-cache``) and SLURM time limit ``timeout_min``."""
        sweep_dir = self.root / name
        log = self.root / f"{name}.log"
        cmd = [
            sys.executable,
            "-m",
            "robustlab",
            "-m",
            *TINY,
            *LAUNCHER,
            f"hydra.sweep.dir={sweep_dir}",
            f"hydra.launcher.timeout_min={timeout_min}",
            f"cache.dir={self.root / f'{name}-cache'}",
            *overrides,
        ]
        with log.open("w") as out:
            out.write(" ".join(cmd) + "\n")
            out.flush()
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        return Sweep(proc, sweep_dir, log, time.monotonic())


def requeue(job_id: str) -> None:
    """``scontrol requeue`` a running job (fails the test if SLURM refuses)."""
    proc = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"scontrol requeue {job_id}: {proc.stderr.strip()}")


def wait_for(predicate, timeout: float, what: str, sweep: Sweep) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if sweep.proc.poll() is not None:
            pytest.fail(f"the sweep ended before {what}:\n{sweep.tail()}")
        if time.monotonic() > deadline:
            sweep.proc.kill()
            cancel_jobs(sweep.sweep_dir)
            pytest.fail(f"no {what} after {timeout:.0f} s:\n{sweep.tail()}")
        time.sleep(0.1)


def records(cell: Path) -> list[dict]:
    """A cell's records without the fields that differ between runs, in a stable order."""
    assert (cell / "DONE.json").is_file(), f"{cell} has no DONE.json"
    lines = (cell / "records.jsonl").read_text().splitlines()
    rows = [{k: v for k, v in json.loads(line).items() if k not in TIMING_FIELDS} for line in lines]
    return sorted(rows, key=lambda r: json.dumps(r, sort_keys=True))
