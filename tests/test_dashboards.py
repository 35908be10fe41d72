"""Every dashboard panel's and variable's SQL, expanded the way Grafana's PostgreSQL datasource
expands it, run on real PostgreSQL through the SELECT-only login, over seeded data, for several
time ranges, intervals and variable selections; and every dashboard against the dashboard JSON
schema of the foundation SDK (kept in ../shared/grafana)."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from dashboards.registry import all_dashboards
from storage.migrate import timescaledb_installed
from storage.pool import connect
from storage.roles import ensure_reader_login
from territory.config import Settings
from tests.grafana_emulation import Selection, grafana_sql
from tests.shared_assets import shared_dir

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)
RANGES = {"1h": timedelta(hours=1), "24h": timedelta(days=1), "7d": timedelta(days=7)}
INTERVALS = [timedelta(minutes=1), timedelta(minutes=5), timedelta(hours=1)]
QUOTED = "quote'reason"
# Variable values this test seeds data for (the suite's database also holds other tests').
# The column's id sorts before letters: the column list is the first 500 ids, and the rest of
# the suite registers hundreds of waste columns.
SEEDED = {
    "Dash Penhars",
    "Dash Centre",
    "Dash Gare",
    "glass",
    "Dash round",
    "0dash-wc-1",
    "schema_violation",
    "unknown_device",
    QUOTED,
}


@dataclass(frozen=True)
class Target:
    dashboard: str
    title: str
    sql: str
    time_series: bool
    variable: bool = False


def _targets() -> list[Target]:
    out = []
    for uid, board in all_dashboards().items():
        for panel in board.get("panels", []):
            for t in panel.get("targets", []):
                if "rawSql" not in t:
                    continue  # Prometheus: test_prometheus_panels_read_metrics_we_export
                out.append(
                    Target(uid, panel["title"], t["rawSql"], t.get("format") == "time_series")
                )
        for var in board["templating"].get("list", []):
            if var.get("type") == "query":
                out.append(Target(uid, f"variable ${var['name']}", var["query"], False, True))
    return out


def _variables(uid: str) -> list[dict[str, Any]]:
    return [v for v in all_dashboards()[uid]["templating"]["list"] if v.get("type") == "query"]


async def _seed_derived(conn: asyncpg.Connection) -> None:
    """What the worker derives (and alerts hold), shaped so that every panel has rows in every
    range the test asks for. Seed data, not a simulation: a meter-day row per hour, say."""
    hour = NOW.replace(minute=0, second=0)
    await conn.execute("DELETE FROM water_hourly WHERE device_id = 'dash-wm-1'")
    await conn.execute("DELETE FROM water_district_hourly WHERE district = 'Dash Penhars'")
    await conn.execute("DELETE FROM water_meter_days WHERE device_id = 'dash-wm-1'")
    await conn.execute("DELETE FROM waste_emptyings WHERE device_id = '0dash-wc-1'")
    await conn.execute("DELETE FROM waste_column_state WHERE device_id = '0dash-wc-1'")
    hours = [hour - timedelta(hours=k) for k in range(0, 8 * 24)]
    await conn.copy_records_to_table(
        "water_hourly",
        records=[("dash-wm-1", h, "Dash Penhars", 0.012, False, True) for h in hours],
        columns=["device_id", "hour", "district", "volume_m3", "estimated", "measured"],
    )
    await conn.copy_records_to_table(
        "water_district_hourly",
        records=[("Dash Penhars", h, 0.012, 1, False) for h in hours],
        columns=["district", "hour", "volume_m3", "meters", "estimated"],
    )
    today = NOW.date()
    await conn.copy_records_to_table(
        "water_meter_days",
        records=[
            ("dash-wm-1", today - timedelta(days=k), NOW - timedelta(hours=k), 8.0, 24, 0, True)
            for k in range(0, 8 * 24)
        ],
        columns=[
            "device_id",
            "day",
            "night_start",
            "night_min_lph",
            "measured_hours",
            "zero_hours",
            "continuous",
        ],
    )
    await conn.execute(
        "INSERT INTO alerts (device_id, type, severity, status, opened_at, last_seen_at) "
        "VALUES ('dash-wm-1', 'offline', 'major', 'open', $1, $1) ON CONFLICT DO NOTHING",
        NOW - timedelta(hours=30),
    )
    await conn.execute(
        "INSERT INTO waste_column_state (device_id, fill_pct, fill_ts, last_reading_ts, "
        "rate_pct_per_day, threshold_pct, eta_threshold, cycle_points, reliability) "
        "VALUES ('0dash-wc-1', 85, $1, $1, 6.5, 80, $2, 12, 'high')",
        NOW,
        NOW - timedelta(hours=5),
    )
    await conn.copy_records_to_table(
        "waste_emptyings",
        records=[
            (
                "0dash-wc-1",
                NOW - timedelta(minutes=20 * k),
                "sensor" if k % 2 else "crew",
                NOW - timedelta(minutes=20 * k),
            )
            for k in range(0, 8 * 24 * 3)
        ],
        columns=["device_id", "ts", "source", "confirmed_ts"],
    )


@pytest.fixture(scope="module")
def reader_url(settings: Settings) -> str:
    """Seed a few hours and days of readings and rejections, and a SELECT-only login."""

    async def seed() -> None:
        conn = await connect(settings.database_url)
        try:
            await ensure_reader_login(conn, "territory_grafana_test", "reader-password")
            await conn.execute(
                "INSERT INTO devices (id, kind, lat, lon, attributes) VALUES "
                "('dash-wm-1', 'water_meter', 47.99, -4.10, '{\"district\": \"Dash Penhars\"}') "
                "ON CONFLICT DO NOTHING"
            )
            await conn.execute(
                "INSERT INTO devices (id, kind, lat, lon, group_name, attributes) VALUES "
                "('0dash-wc-1', 'waste_column', 47.99, -4.11, 'Dash round', "
                '\'{"waste_stream": "glass", "depth_mm": 1800}\') ON CONFLICT DO NOTHING'
            )
            await _seed_derived(conn)
            await conn.execute(
                "INSERT INTO devices (id, kind, attributes) VALUES "
                "('dash-ps-1', 'parking_sensor', '{\"zone\": \"Dash Centre\"}'), "
                "('dash-ps-2', 'parking_sensor', '{\"zone\": \"Dash Gare\"}') "
                "ON CONFLICT DO NOTHING"
            )
            # Nine weeks of 5-minute occupancy slots for both zones (what the parking job
            # derives), so that every range and the eight-week profile have data.
            slots = []
            start = NOW.replace(minute=NOW.minute - NOW.minute % 5, second=0)
            for i in range(0, 9 * 7 * 24 * 12):
                t = start - timedelta(minutes=5 * i)
                for zone in ("Dash Centre", "Dash Gare"):
                    slots.append((zone, t, 600.0, float(i % 3) * 200.0))
            await conn.execute("DELETE FROM parking_zone_slots WHERE zone LIKE 'Dash %'")
            await conn.copy_records_to_table(
                "parking_zone_slots",
                records=slots,
                columns=["zone", "slot_start", "known_s", "occupied_s"],
            )
            rows = []
            for i in range(0, 3 * 24 * 60, 7):  # every 7 minutes over three days
                t = NOW - timedelta(minutes=i)
                rows.append(("dash-wm-1", t, t - timedelta(seconds=2), float(i), t))
            await conn.executemany(
                "INSERT INTO water_meter_readings (device_id, ts, received_at, index_m3, "
                "stored_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                rows,
            )
            await conn.executemany(
                "INSERT INTO waste_column_readings (device_id, ts, received_at, fill_pct, "
                "stored_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                [("0dash-wc-1", t, r, 50.0, s) for _d, t, r, _x, s in rows[::3]],
            )
            await conn.executemany(
                "INSERT INTO parking_sensor_readings (device_id, ts, received_at, occupied, "
                "stored_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                [
                    (dev, t, r, True, s)
                    for _d, t, r, _x, s in rows[::5]
                    for dev in ("dash-wm-1", "dash-ps-1", "dash-ps-2")
                ],
            )
            for i, reason in itertools.product(
                range(0, 3 * 24 * 60, 20), ("schema_violation", "unknown_device", QUOTED)
            ):
                await conn.execute(
                    "INSERT INTO rejected_messages (received_at, topic, device_id, reason, "
                    "detail, payload, payload_size, payload_sha256) VALUES ($1, "
                    "'devices/x/telemetry', 'dash-x', $2, 'seed', '\\x00'::bytea, 1, "
                    "sha256('\\x00'::bytea))",
                    NOW - timedelta(minutes=i),
                    reason,
                )
        finally:
            await conn.close()

    asyncio.run(seed())
    parts = urlsplit(settings.database_url)
    netloc = f"territory_grafana_test:reader-password@{parts.hostname}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


async def _choose(
    conn: asyncpg.Connection,
    uid: str,
    mode: str,
    start: datetime,
    end: datetime,
    timescaledb: bool,
) -> dict[str, Selection]:
    """What a user picks for each variable, in dashboard order: a variable's own query sees
    the choices made above it (a round list filtered by the chosen streams)."""
    out: dict[str, Selection] = {}
    for var in _variables(uid):
        sql = grafana_sql(
            var["query"],
            start=start,
            end=end,
            interval=INTERVALS[0],
            selections=out,
            timescaledb=timescaledb,
        )
        # The suite's database is shared: this test's own seeded values come first.
        values = sorted((str(r[0]) for r in await conn.fetch(sql)), key=lambda v: v not in SEEDED)
        assert values, f"{uid}: variable {var['name']} has no values\n{sql}"
        multi = bool(var.get("multi") or var.get("includeAll"))
        chosen = {
            "single": values[:1],
            "multi": values[:2] if multi else values[:1],
            "all": values if multi else values[:1],
            "quote": [QUOTED] if QUOTED in values else values[:1],
        }[mode]
        out[var["name"]] = Selection(chosen, multi)
    return out


async def _run_all(url: str, timescaledb: bool) -> Iterator[str]:
    conn: asyncpg.Connection = await asyncpg.connect(url)
    checked: list[str] = []
    try:
        assert not await conn.fetchval("SELECT has_table_privilege('devices', 'INSERT')")
        for target in _targets():
            for rname, span in RANGES.items():
                start, end = NOW - span, NOW + timedelta(minutes=1)
                choices = {
                    mode: await _choose(conn, target.dashboard, mode, start, end, timescaledb)
                    for mode in ("single", "multi", "all", "quote")
                }
                for interval, mode in itertools.product(
                    INTERVALS, ("single", "multi", "all", "quote")
                ):
                    sql = grafana_sql(
                        target.sql,
                        start=start,
                        end=end,
                        interval=interval,
                        selections=choices[mode],
                        timescaledb=timescaledb,
                    )
                    where = f"{target.dashboard} / {target.title} / {rname} / {interval} / {mode}"
                    try:
                        rows = await conn.fetch(sql)
                    except asyncpg.PostgresError as exc:
                        raise AssertionError(f"{where}: {exc}\n{sql}") from exc
                    assert rows, f"{where}: no rows\n{sql}"
                    if target.time_series:
                        assert "time" in rows[0], f"{where}: no time column"
                        times = [r["time"] for r in rows]
                        assert times == sorted(times), f"{where}: time column not sorted"
                    checked.append(where)
    finally:
        await conn.close()
    return iter(checked)


def test_every_panel_query_runs_and_returns_rows_on_plain_postgresql(reader_url: str) -> None:
    checked = list(asyncio.run(_run_all(reader_url, timescaledb=False)))
    assert len(checked) >= len(_targets()) * len(RANGES) * len(INTERVALS) * 4
    print(f"{len(checked)} expanded queries checked")


def test_every_panel_query_runs_with_timescaledb_macros(
    settings: Settings, reader_url: str
) -> None:
    async def has_it() -> bool:
        conn = await connect(settings.database_url)
        try:
            return await timescaledb_installed(conn)
        finally:
            await conn.close()

    if not asyncio.run(has_it()):
        pytest.skip(
            "TimescaleDB is not installed in this PostgreSQL: time_bucket() cannot run "
            "here (the plain-PostgreSQL expansion is checked by the test above)"
        )
    list(asyncio.run(_run_all(reader_url, timescaledb=True)))


def test_dashboards_validate_against_the_foundation_sdk_schema() -> None:
    grafana = shared_dir("grafana")
    from jsonschema import Draft7Validator
    from referencing import Registry, Resource

    schema = json.loads((grafana / "dashboard.jsonschema.json").read_text())
    common = json.loads((grafana / "common.jsonschema.json").read_text())
    registry = Registry().with_resource("common.jsonschema.json", Resource.from_contents(common))
    validator = Draft7Validator(schema, registry=registry)
    for uid, board in all_dashboards().items():
        errors = [
            f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(board)
        ]
        assert not errors, f"{uid}: {errors[:5]}"


def test_panel_ids_and_uids_are_stable() -> None:
    first, second = all_dashboards(), all_dashboards()
    assert first == second
    for uid, board in first.items():
        assert board["uid"] == uid and len(uid) <= 40


def test_prometheus_panels_read_metrics_we_export() -> None:
    """A renamed or removed metric must not leave a panel that silently shows nothing."""
    import re

    from prometheus_client import REGISTRY

    import territory.metrics  # noqa: F401  (registers every metric)

    exported: set[str] = set()
    for family in REGISTRY.collect():
        exported.update(sample.name for sample in family.samples)
        exported.add(family.name)
        exported.update(f"{family.name}{s}" for s in ("_total", "_bucket", "_count", "_sum"))
    used: set[str] = set()
    for board in all_dashboards().values():
        for panel in board.get("panels", []):
            for t in panel.get("targets", []):
                if "expr" in t:
                    used.update(re.findall(r"territory_[a-z_]+", t["expr"]))
    assert used, "no Prometheus panel found"
    assert used <= exported, f"panels read metrics nobody exports: {sorted(used - exported)}"
