"""The open-data benchmark runs to the end at a tiny size (its figures mean nothing there).

It registers devices in the database it is given, so it runs against its own private services
here, never the suite's.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent


def test_quick_open_data_benchmark_runs(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TERRITORY_")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.open_data",
            "--spaces=40",
            "--zones=4",
            "--columns=20",
            "--uncached=5",
            "--duration=1",
            "--connections=4",
            "--meters=30",
            "--meters-per-district=10",
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
    assert "GET /open/parking/zones uncached" in proc.stdout
    assert "(5 calls, 4 zones," in proc.stdout
    assert "parking_cached_304:" in proc.stdout
    assert "30 meters, 3 districts" in proc.stdout
    assert "non-2xx/3xx 0 " in proc.stdout
