"""`territory simulate --history` through real Mosquitto and a running ingest into PostgreSQL."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections import Counter
from datetime import datetime, timedelta

import asyncpg
import pytest
from fastapi.testclient import TestClient

from devices.kinds import DeviceKind
from simulators.behaviour import ALL_KINDS, PARIS, build_fleet, history
from simulators.truth import ground_truth
from territory.config import Settings
from tests.conftest import ingest_env, wait_for

pytestmark = pytest.mark.integration

TABLES = {
    DeviceKind.WATER_METER: "water_meter_readings",
    DeviceKind.WASTE_COLUMN: "waste_column_readings",
    DeviceKind.PARKING_SENSOR: "parking_sensor_readings",
}


def _query(settings: Settings, sql: str, *args: object) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(settings.database_url)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    return asyncio.run(run())


@pytest.mark.usefixtures("ingest")
def test_two_days_of_history_are_stored_reading_for_reading(
    settings: Settings, api: TestClient, uid: str
) -> None:
    prefix = f"hist{uid[:8]}"
    seed = f"e2e-{uid}"
    end = datetime(2026, 11, 20, 12, 0, tzinfo=PARIS)  # fixed, so the run is reproducible
    epoch = end - timedelta(days=2)
    sizes = {DeviceKind.WATER_METER: 4, DeviceKind.WASTE_COLUMN: 3, DeviceKind.PARKING_SENSOR: 6}
    fleet = build_fleet(ALL_KINDS, sizes, seed=seed, id_prefix=prefix, epoch=epoch)
    for d in fleet:
        r = api.post("/devices", json=d.registration.as_request())
        assert r.status_code == 201, r.text
    expected = Counter(m.kind for m in history(fleet, end, hours=48))
    assert expected[DeviceKind.WATER_METER] >= 4 * 4  # even twice-a-day meters send some

    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "territory.cli",
            "simulate",
            "--no-register",
            "--history",
            "2d",
            "--history-end",
            end.isoformat(),
            "--no-live",
            "--water-meters",
            "4",
            "--waste-columns",
            "3",
            "--parking-spaces",
            "6",
            "--seed",
            seed,
            "--id-prefix",
            prefix,
        ],
        env=ingest_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    match = re.search(r"history\s+(\d+) in", out.stderr)
    assert match, out.stderr[-3000:]
    published = int(match.group(1))
    assert published == sum(expected.values())
    assert re.search(rf"acked\s+{published}\b", out.stderr), out.stderr[-3000:]

    def stored() -> Counter[DeviceKind]:
        counts: Counter[DeviceKind] = Counter()
        for kind, table in TABLES.items():
            rows = _query(
                settings,
                f"SELECT count(*) AS n FROM {table} WHERE device_id LIKE $1",
                f"{prefix}-%",
            )
            counts[kind] = rows[0]["n"]
        return counts

    wait_for(lambda: stored() == expected, timeout=60, interval=0.5)
    rejected = _query(
        settings,
        "SELECT count(*) AS n FROM rejected_messages WHERE device_id LIKE $1",
        f"{prefix}-%",
    )
    assert rejected[0]["n"] == 0

    # What was stored is the world the ground truth replays.
    truth = ground_truth(seed=seed, epoch=epoch, end=end, per_kind=sizes, id_prefix=prefix)
    for meter_id, meter in truth.meters.items():
        rows = _query(
            settings,
            "SELECT ts, index_m3 FROM water_meter_readings WHERE device_id = $1 ORDER BY ts",
            meter_id,
        )
        assert rows and rows[-1]["ts"] < end
        for row in rows:
            assert row["index_m3"] == pytest.approx(round(meter.index_m3(row["ts"]), 3), abs=1e-6)
    for space_id, space in truth.spaces.items():
        rows = _query(
            settings,
            "SELECT ts, occupied FROM parking_sensor_readings WHERE device_id = $1",
            space_id,
        )
        assert all(row["occupied"] == space.occupied_at(row["ts"]) for row in rows)
