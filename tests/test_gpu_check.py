"""benchmarks/gpu_check.py at the tiny shape on the CPU: every row measured, the table printed,
and a run over its time budget refused (the same script runs on a lent GPU at SD 1.x shape)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _check(*options: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--shape", "tiny", "--device", "cpu",
                           *options], cwd=ROOT, capture_output=True, text=True, env=env, timeout=900)


def test_gpu_check_prints_every_row_at_the_tiny_shape():
    done = _check("--updates", "1")
    assert done.returncode == 0, done.stderr[-2000:]
    rows = dict(re.findall(r"^\| ([a-z0-9 -]+?(?: \(.*?\))?) \| ([0-9.]+)", done.stdout, flags=re.M))
    for row in ("plain", "seas default", "seas fast", "seas low-memory", "seas lora-16", "reference"):
        assert float(rows[row]) > 0, row  # seconds per update
    assert any(name.startswith("generation with-masks") for name in rows)
    assert any(name.startswith("generation without-masks") for name in rows)
    ratios = re.search(r"SeaS default / plain: ([0-9.]+); reference / SeaS default: ([0-9.]+)x; "
                       r"mask overhead: ([-+][0-9.]+) %", done.stdout)
    assert ratios and float(ratios[1]) > 0 and float(ratios[2]) > 0


def test_gpu_check_refuses_a_run_over_its_budget():
    done = _check("--budget", "2")
    assert done.returncode != 0 and "refused" in done.stderr and "--budget" in done.stderr
    assert "| row |" not in done.stdout
