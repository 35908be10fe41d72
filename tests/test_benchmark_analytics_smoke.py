"""`./dev bench --analytics --quick` runs to the end on its own private services and prints
one table with every domain's figures and the ingest's two rates, so that it cannot rot. Its
figures are not asserted (tiny sizes on a busy machine)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent


def test_quick_analytics_benchmark_prints_one_table(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("TERRITORY_DATABASE_URL", "TERRITORY_MQTT_URL")
    }
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.analytics", "--quick", "--data-dir", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = proc.stdout[proc.stdout.rindex("analytics benchmark (quick") :]
    for row in (
        r"water\s+first build\s+[\d.]+ s",
        r"water\s+leaks_district .*p50 [\d.]+ ms",
        r"waste\s+first build\s+[\d.]+ s",
        r"waste\s+collection list, all streams .*p50 [\d.]+ ms",
        r"parking\s+first build\s+[\d.]+ s",
        r"parking\s+GET /parking/zones .*p50 [\d.]+ ms",
        r"ingest\s+max sustained rate, alone\s+[\d,]+ msg/s",
        r"ingest\s+max sustained rate, worker running\s+[\d,]+ msg/s",
        r"ingest\s+with worker / alone, median of 1\s+[\d.]+ \(target >= 0.9",
    ):
        assert re.search(row, table), (row, table)
