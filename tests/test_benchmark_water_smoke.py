"""The water analytics benchmark's quick mode runs to the end against the suite's services, so
the benchmark cannot rot. Its figures are not asserted (a few meters on a busy machine)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from territory.config import Settings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent


def test_quick_water_benchmark_runs_every_phase(settings: Settings, uid: str) -> None:
    env = dict(os.environ, TERRITORY_DATABASE_URL=settings.database_url)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.analytics_water",
            "--quick",
            "--calls",
            "3",
            "--prefix",
            f"bw{uid}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    out = proc.stdout
    for phase in (
        "first build",
        "incremental",
        "consumption_district_month_days",
        "leaks_district",
    ):
        assert phase in out, out
