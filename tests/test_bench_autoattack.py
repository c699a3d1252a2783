"""The AutoAttack benchmark runs end to end (--quick: digits, 40 points) and prints every line
beside the reference's, in the shared format."""

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "bench" / "autoattack_bench.py"


@pytest.mark.slow
def test_quick_run_prints_every_figure(tmp_path):
    cmd = [sys.executable, str(SCRIPT), "--quick", "--threads", "1", "--cache-dir", str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = done.stdout.splitlines()
    for label in ("autoattack", "autoattack channels_last=false"):
        for figure in ("time (s)", "peak memory (MB)", "robust accuracy"):
            (row,) = [r for r in rows if r.startswith(f"{label} {figure} ")]
            # channels_last=false's time is shown, not held to the target
            timed = label == "autoattack" or figure != "time (s)"
            assert row.split()[-1] in (("PASS", "FAIL") if timed else ("info",)), row
    # the same net, points and seed: the verdicts are compared point by point
    (row,) = [r for r in rows if r.startswith("autoattack robust accuracy ")]
    assert "/40 " in row
    assert list(tmp_path.glob("pgd_at_digits_*.pt"))
