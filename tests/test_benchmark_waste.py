"""The waste benchmark's quick mode runs to the end against the suite's services, so it cannot
rot. Its figures are not asserted (40 columns on a busy machine mean nothing)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from territory.config import Settings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent


def test_quick_waste_benchmark_runs(settings: Settings) -> None:
    env = dict(os.environ)
    env.update(TERRITORY_DATABASE_URL=settings.database_url, TERRITORY_MQTT_URL=settings.mqtt_url)
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.analytics_waste", "--quick"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    for line in ("first build:", "incremental run", "collection list, stream residual"):
        assert line in out, out
