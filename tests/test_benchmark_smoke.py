"""The throughput benchmark's quick mode runs to the end, so the benchmark cannot rot.

Its figures are not asserted: a few hundred messages on a busy test machine mean nothing. What
is asserted is that every phase ran against the real services and wrote its part of the JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from territory.config import Settings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent


def test_quick_benchmark_runs_every_phase(settings: Settings, tmp_path: Path, uid: str) -> None:
    out = tmp_path / "bench.json"
    env = dict(os.environ)
    env.update(
        TERRITORY_DATABASE_URL=settings.database_url,
        TERRITORY_MQTT_URL=settings.mqtt_url,
    )
    # Our own topic and device prefixes: nothing another test publishes or reads collides.
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.ingest_throughput",
            "--quick",
            "--scale-curves",
            "--json",
            str(out),
            "--topic-prefix",
            f"bench{uid}",
            "--device-prefix",
            f"bench{uid}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    assert "max sustained" in proc.stdout  # the table was printed

    results = json.loads(out.read_text())
    for key in (
        "broker_alone",
        "database_alone",
        "naive_bridge",
        "ingest",
        "scale_devices",
        "scale_readings",
        "summary",
        "meta",
    ):
        assert key in results, key
    assert {"search", "at_max", "at_half", "memory"} <= set(results["ingest"])
    assert {"ingest_vs_broker", "ingest_vs_naive"} <= set(results["summary"]["ratios"])
    assert len(results["summary"]["targets"]) == 4
    assert results["scale_readings"][0]["latest"]["requests"] > 0


def test_api_health_benchmark_runs(settings: Settings, tmp_path: Path) -> None:
    out = tmp_path / "api.json"
    env = dict(os.environ)
    env.update(
        TERRITORY_DATABASE_URL=settings.database_url,
        TERRITORY_MQTT_URL=settings.mqtt_url,
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.api_health_under_load",
            "--readings",
            "600",
            "--calls",
            "6",
            "--limit",
            "100",
            "--data-dir",
            str(tmp_path),
            "--json",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    assert "/health under load" in proc.stdout
    results = json.loads(out.read_text())
    assert results["load"]["statuses"] == {"200": 6}
    assert results["health_under_load"]["n"] > 0
    assert results["health_under_load"]["not_ok"] == 0
