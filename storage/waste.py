"""Waste columns: the SQL behind the fill forecasts, the crews' confirmations and the collection
list (migration 009). The worker writes the derived tables; the API reads them.

Every query that selects columns goes through `_COLUMNS_WHERE`, the one place a tenant filter
will be added.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from analytics.waste import Emptying, Forecast, RawReading

# The devices a waste query may see ($1: stream or NULL, $2: group or NULL).
_COLUMNS_WHERE = (
    "d.kind = 'waste_column' AND d.status = 'active' "
    "AND ($1::text IS NULL OR d.attributes ->> 'waste_stream' = $1) "
    "AND ($2::text IS NULL OR d.group_name = $2)"
)


@dataclass(frozen=True)
class ColumnDevice:
    id: str
    attributes: dict[str, Any]


@dataclass(frozen=True)
class ColumnInputs:
    """What one column's recomputation starts from."""

    anchor: Emptying | None
    before: list[RawReading]  # a few readings just before the anchor, newest first
    readings: list[RawReading]
    crew: list[datetime]
    past_rates: list[float]


@dataclass(frozen=True)
class ColumnState:
    device_id: str
    fill_pct: float | None
    fill_ts: datetime | None
    last_reading_ts: datetime
    last_alarms: tuple[str, ...]
    rate_pct_per_day: float | None
    rate_source: str | None
    threshold_pct: float
    eta_threshold: datetime | None
    last_emptied: datetime | None
    reliability: str


@dataclass(frozen=True)
class ListRow:
    state: ColumnState
    lat: float | None
    lon: float | None
    attributes: dict[str, Any]


def _attrs(raw: object) -> dict[str, Any]:
    import json

    if isinstance(raw, str):
        out: dict[str, Any] = json.loads(raw)
        return out
    return dict(raw) if isinstance(raw, dict) else {}


def _reading(r: asyncpg.Record) -> RawReading:
    return RawReading(r["ts"], r["fill_pct"], r["distance_mm"], tuple(r["alarms"] or ()))


def _state(r: asyncpg.Record) -> ColumnState:
    return ColumnState(
        device_id=r["device_id"],
        fill_pct=r["fill_pct"],
        fill_ts=r["fill_ts"],
        last_reading_ts=r["last_reading_ts"],
        last_alarms=tuple(r["last_alarms"] or ()),
        rate_pct_per_day=r["rate_pct_per_day"],
        rate_source=r["rate_source"],
        threshold_pct=r["threshold_pct"],
        eta_threshold=r["eta_threshold"],
        last_emptied=r["last_emptied"],
        reliability=r["reliability"],
    )


_STATE_COLUMNS = (
    "s.device_id, s.fill_pct, s.fill_ts, s.last_reading_ts, s.last_alarms, s.rate_pct_per_day, "
    "s.rate_source, s.threshold_pct, s.eta_threshold, s.last_emptied, s.reliability"
)


# --- the worker's side ---------------------------------------------------------------------


async def waste_columns(conn: asyncpg.Connection, ids: Sequence[str]) -> dict[str, ColumnDevice]:
    """The registered waste columns among `ids` (decommissioned ones too: their history)."""
    rows = await conn.fetch(
        "SELECT id, attributes FROM devices WHERE kind = 'waste_column' AND id = ANY($1::text[])",
        list(ids),
    )
    return {r["id"]: ColumnDevice(r["id"], _attrs(r["attributes"])) for r in rows}


async def column_inputs(
    conn: asyncpg.Connection, device_id: str, since: datetime, merge: timedelta
) -> ColumnInputs:
    """The readings and events a column's recomputation needs when readings (or a crew
    confirmation) as old as `since` are new: from the last emptying that nothing at or after
    `since` can undo (confirmed before it, and far enough before it that a crew confirmation
    cannot absorb it), or from the column's first reading."""
    a = await conn.fetchrow(
        "SELECT ts, source, fill_before, fill_after, confirmed_ts, ended_cycle_rate "
        "FROM waste_emptyings WHERE device_id = $1 AND ts < $2 AND confirmed_ts < $3 "
        "ORDER BY ts DESC LIMIT 1",
        device_id,
        since - merge,
        since,
    )
    anchor = (
        Emptying(
            a["ts"],
            a["source"],
            a["fill_before"],
            a["fill_after"],
            a["confirmed_ts"],
            a["ended_cycle_rate"],
        )
        if a
        else None
    )
    cols = "ts, fill_pct, distance_mm, alarms"
    if anchor is None:
        rows = await conn.fetch(
            f"SELECT {cols} FROM waste_column_readings WHERE device_id = $1 ORDER BY ts", device_id
        )
        before: list[RawReading] = []
        crew = await conn.fetch(
            "SELECT ts FROM waste_crew_emptied WHERE device_id = $1 ORDER BY ts", device_id
        )
        past: list[float] = []
    else:
        rows = await conn.fetch(
            f"SELECT {cols} FROM waste_column_readings WHERE device_id = $1 AND ts >= $2 "
            "ORDER BY ts",
            device_id,
            anchor.ts,
        )
        # A few readings before the anchor: the first kept one is the neighbour the anchor's
        # own reading was judged against.
        prior = await conn.fetch(
            f"SELECT {cols} FROM waste_column_readings WHERE device_id = $1 AND ts < $2 "
            "ORDER BY ts DESC LIMIT 24",
            device_id,
            anchor.ts,
        )
        before = [_reading(r) for r in prior]
        crew = await conn.fetch(
            "SELECT ts FROM waste_crew_emptied WHERE device_id = $1 AND ts > $2 ORDER BY ts",
            device_id,
            anchor.ts,
        )
        rates = await conn.fetch(
            "SELECT ended_cycle_rate FROM waste_emptyings WHERE device_id = $1 AND ts <= $2 "
            "AND ended_cycle_rate IS NOT NULL ORDER BY ts DESC LIMIT 4",
            device_id,
            anchor.ts,
        )
        past = [r["ended_cycle_rate"] for r in reversed(rates)]
    return ColumnInputs(
        anchor=anchor,
        before=before,
        readings=[_reading(r) for r in rows],
        crew=[r["ts"] for r in crew],
        past_rates=past,
    )


async def save_column(
    conn: asyncpg.Connection,
    device_id: str,
    anchor: Emptying | None,
    f: Forecast,
    last_reading: RawReading | None,
) -> None:
    """Replace the column's emptyings after `anchor` and its state with `f`."""
    if anchor is None:
        await conn.execute("DELETE FROM waste_emptyings WHERE device_id = $1", device_id)
    else:
        await conn.execute(
            "DELETE FROM waste_emptyings WHERE device_id = $1 AND ts > $2", device_id, anchor.ts
        )
    if f.emptyings:
        await conn.executemany(
            "INSERT INTO waste_emptyings (device_id, ts, source, fill_before, fill_after, "
            "confirmed_ts, ended_cycle_rate) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            [
                (
                    device_id,
                    e.ts,
                    e.source,
                    e.fill_before,
                    e.fill_after,
                    e.confirmed_ts,
                    e.ended_cycle_rate,
                )
                for e in f.emptyings
            ],
        )
    if last_reading is None:
        await conn.execute("DELETE FROM waste_column_state WHERE device_id = $1", device_id)
        return
    await conn.execute(
        """
        INSERT INTO waste_column_state (device_id, fill_pct, fill_ts, last_reading_ts,
            last_alarms, rate_pct_per_day, own_rate, rate_source, threshold_pct, eta_threshold,
            last_emptied, cycle_points, spread_pts, reliability, updated_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, now())
        ON CONFLICT (device_id) DO UPDATE SET
            fill_pct = EXCLUDED.fill_pct, fill_ts = EXCLUDED.fill_ts,
            last_reading_ts = EXCLUDED.last_reading_ts, last_alarms = EXCLUDED.last_alarms,
            rate_pct_per_day = EXCLUDED.rate_pct_per_day, own_rate = EXCLUDED.own_rate,
            rate_source = EXCLUDED.rate_source, threshold_pct = EXCLUDED.threshold_pct,
            eta_threshold = EXCLUDED.eta_threshold, last_emptied = EXCLUDED.last_emptied,
            cycle_points = EXCLUDED.cycle_points, spread_pts = EXCLUDED.spread_pts,
            reliability = EXCLUDED.reliability, updated_at = now()
        """,
        device_id,
        f.fill_pct,
        f.fill_ts,
        last_reading.ts,
        list(last_reading.alarms),
        f.rate_pct_per_day,
        f.own_rate,
        f.rate_source,
        f.threshold_pct,
        f.eta_threshold,
        f.last_emptied,
        f.cycle_points,
        f.spread_pts,
        f.reliability,
    )


@dataclass(frozen=True)
class FallbackRow:
    device_id: str
    stream: str | None
    forecast: Forecast


async def stream_medians(conn: asyncpg.Connection) -> dict[str | None, float]:
    """Per waste stream, the median of the columns' own fill rates."""
    rows = await conn.fetch(
        "SELECT d.attributes ->> 'waste_stream' AS stream, "
        "percentile_cont(0.5) WITHIN GROUP (ORDER BY s.own_rate) AS rate "
        "FROM waste_column_state s JOIN devices d ON d.id = s.device_id "
        f"WHERE {_COLUMNS_WHERE} AND s.own_rate IS NOT NULL GROUP BY 1",
        None,
        None,
    )
    return {r["stream"]: r["rate"] for r in rows}


async def fallback_columns(conn: asyncpg.Connection) -> list[FallbackRow]:
    """Columns without a rate of their own, which take their stream's."""
    rows = await conn.fetch(
        "SELECT s.device_id, d.attributes ->> 'waste_stream' AS stream, s.fill_pct, s.fill_ts, "
        "s.rate_pct_per_day, s.rate_source, s.threshold_pct, s.eta_threshold, s.last_emptied, "
        "s.cycle_points, s.reliability "
        "FROM waste_column_state s JOIN devices d ON d.id = s.device_id "
        f"WHERE {_COLUMNS_WHERE} AND s.own_rate IS NULL",
        None,
        None,
    )
    return [
        FallbackRow(
            r["device_id"],
            r["stream"],
            Forecast(
                fill_pct=r["fill_pct"],
                fill_ts=r["fill_ts"],
                rate_pct_per_day=r["rate_pct_per_day"],
                rate_source=r["rate_source"],
                own_rate=None,
                threshold_pct=r["threshold_pct"],
                eta_threshold=r["eta_threshold"],
                last_emptied=r["last_emptied"],
                cycle_points=r["cycle_points"],
                spread_pts=None,
                reliability=r["reliability"],
            ),
        )
        for r in rows
    ]


async def set_stream_rates(conn: asyncpg.Connection, rows: Sequence[FallbackRow]) -> None:
    await conn.executemany(
        "UPDATE waste_column_state SET rate_pct_per_day = $2, rate_source = $3, "
        "eta_threshold = $4, reliability = $5, updated_at = now() WHERE device_id = $1",
        [
            (
                r.device_id,
                r.forecast.rate_pct_per_day,
                r.forecast.rate_source,
                r.forecast.eta_threshold,
                r.forecast.reliability,
            )
            for r in rows
        ],
    )


# --- the API's side -------------------------------------------------------------------------


async def record_emptied(pool: asyncpg.Pool, device_id: str, at: datetime) -> bool:
    """A crew's confirmation; False when the device is not a waste column."""
    async with pool.acquire() as conn, conn.transaction():
        kind = await conn.fetchval("SELECT kind FROM devices WHERE id = $1", device_id)
        if kind != "waste_column":
            return False
        await conn.execute(
            "INSERT INTO waste_crew_emptied (device_id, ts) VALUES ($1, $2) "
            "ON CONFLICT (device_id, ts) DO NOTHING",
            device_id,
            at,
        )
    return True


async def column_forecast(
    pool: asyncpg.Pool, device_id: str
) -> tuple[ColumnDevice | None, ColumnState | None]:
    """The column (None: no such waste column) and its derived state (None: no reading yet)."""
    row = await pool.fetchrow(
        "SELECT id, attributes FROM devices WHERE id = $1 AND kind = 'waste_column'", device_id
    )
    if row is None:
        return None, None
    st = await pool.fetchrow(
        f"SELECT {_STATE_COLUMNS} FROM waste_column_state s WHERE s.device_id = $1", device_id
    )
    return ColumnDevice(row["id"], _attrs(row["attributes"])), (_state(st) if st else None)


async def last_crew_emptied(pool: asyncpg.Pool, device_id: str) -> datetime | None:
    ts: datetime | None = await pool.fetchval(
        "SELECT max(ts) FROM waste_crew_emptied WHERE device_id = $1", device_id
    )
    return ts


async def stream_known(pool: asyncpg.Pool, stream: str) -> bool:
    return bool(
        await pool.fetchval(
            f"SELECT EXISTS (SELECT 1 FROM devices d WHERE {_COLUMNS_WHERE})", stream, None
        )
    )


async def group_known(pool: asyncpg.Pool, group: str) -> bool:
    return bool(
        await pool.fetchval(
            f"SELECT EXISTS (SELECT 1 FROM devices d WHERE {_COLUMNS_WHERE})", None, group
        )
    )


async def list_candidates(
    pool: asyncpg.Pool,
    stream: str | None,
    group: str | None,
    *,
    min_fill_pct: float,
    alarms: Sequence[str],
) -> list[ListRow]:
    """Active columns of the stream/round that may be on a collection list: at least
    `min_fill_pct` full, or with one of `alarms` on their latest reading."""
    rows = await pool.fetch(
        f"SELECT {_STATE_COLUMNS}, d.lat, d.lon, d.attributes "
        "FROM waste_column_state s JOIN devices d ON d.id = s.device_id "
        f"WHERE {_COLUMNS_WHERE} AND (s.fill_pct >= $3 OR s.last_alarms && $4::text[])",
        stream,
        group,
        min_fill_pct,
        list(alarms),
    )
    return [ListRow(_state(r), r["lat"], r["lon"], _attrs(r["attributes"])) for r in rows]
