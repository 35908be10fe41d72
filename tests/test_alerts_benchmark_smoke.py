"""The alert benchmark's quick mode runs to the end (its figures are not asserted)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent


def test_quick_alert_benchmark_runs(tmp_path: Path) -> None:
    # Its own services: the benchmark empties the alert and reading tables it measures.
    env = {k: v for k, v in os.environ.items() if not k.startswith("TERRITORY_")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.alerts_cycle",
            "--quick",
            "--data-dir",
            str(tmp_path / "bench"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "steady cycle" in proc.stdout
    assert "offline storm: 1000 devices go offline" in proc.stdout
    assert "line crossed → alert" in proc.stdout
