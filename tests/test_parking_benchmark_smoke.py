"""The parking benchmark's quick mode runs to the end (its figures mean nothing at that size).

It truncates the parking tables of the database it is given, so it runs against its own private
services here, never the suite's.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent


def test_quick_parking_benchmark_runs(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TERRITORY_")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.analytics_parking",
            "--quick",
            "--data-dir",
            str(tmp_path / "services"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    for line in ("first build", "incremental run, hour 2", "GET /parking/zones (all zones now)"):
        assert line in proc.stdout
    assert "GET forecast, 2 h" in proc.stdout


def test_backtest_prints_its_table() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.parking_forecast_backtest", "--weeks", "4"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert [line.split()[0] for line in proc.stdout.splitlines()[2:]] == ["15", "30", "60"]
