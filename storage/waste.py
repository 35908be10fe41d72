"""Waste columns: the SQL behind the fill forecasts, the crews' confirmations and the collection
list (migration 009). The worker writes the derived tables; the API reads them.

Every query that selects columns goes through `_COLUMNS_WHERE`, the one place the caller's
tenant filters them (None: every tenant). The stream medians that stand in for a column's own
fill rate are per tenant and stream: a tenant's forecast never rests on another's columns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from analytics.waste import Emptying, Forecast, RawReading

# The devices a waste query may see ($1: stream or NULL, $2: group or NULL, $3: tenant or
# NULL).
_COLUMNS_WHERE = (
    "d.kind = 'waste_column' AND d.status = 'active' "
    "AND ($1::text IS NULL OR d.attributes ->> 'waste_stream' = $1) "
    "AND ($2::text IS NULL OR d.group_name = $2) "
    "AND ($3::text IS NULL OR d.tenant = $3)"
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
    collection_days: list[str] | None


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


async def without_jit(conn: asyncpg.Connection) -> None:
    """For the rest of the transaction. The per-column range scans are estimated expensive
    enough for PostgreSQL to JIT-compile each chunk's query: ~0.3 s of compiling for ~0.1 s of
    work."""
    await conn.execute("SET LOCAL jit = off")


async def columns_updated(conn: asyncpg.Connection, lower: datetime, upper: datetime) -> list[str]:
    """Waste columns whose registration changed in the window (`updated_at` is its
    transaction's start, like the readings' `stored_at`): a new depth, full distance, blind
    zone or threshold changes their whole history's levels."""
    rows = await conn.fetch(
        "SELECT id FROM devices WHERE kind = 'waste_column' AND updated_at >= $1 "
        "AND updated_at < $2",
        lower,
        upper,
    )
    return [r["id"] for r in rows]


async def waste_columns(conn: asyncpg.Connection, ids: Sequence[str]) -> dict[str, ColumnDevice]:
    """The registered waste columns among `ids` (decommissioned ones too: their history)."""
    rows = await conn.fetch(
        "SELECT id, attributes FROM devices WHERE kind = 'waste_column' AND id = ANY($1::text[])",
        list(ids),
    )
    return {r["id"]: ColumnDevice(r["id"], _attrs(r["attributes"])) for r in rows}


_NEVER = datetime(1, 1, 1, tzinfo=UTC)
_READING_COLUMNS = "ts, fill_pct, distance_mm, alarms"


async def columns_inputs(
    conn: asyncpg.Connection, since: Mapping[str, datetime], merge: timedelta
) -> dict[str, ColumnInputs]:
    """What each column's recomputation needs when readings (or a crew confirmation) as old as
    `since[column]` are new: everything from the column's last emptying that nothing at or
    after `since` can undo (confirmed before it, and far enough before it that a crew
    confirmation cannot absorb it), or from its first reading. A handful of queries for all
    the columns, not a handful per column."""
    ids = list(since)
    rows = await conn.fetch(
        "SELECT DISTINCT ON (e.device_id) e.device_id, e.ts, e.source, e.fill_before, "
        "e.fill_after, e.confirmed_ts, e.ended_cycle_rate "
        "FROM unnest($1::text[], $2::timestamptz[]) AS c(id, since) "
        "JOIN waste_emptyings e ON e.device_id = c.id "
        "WHERE e.ts < c.since - $3::interval AND e.confirmed_ts < c.since "
        "ORDER BY e.device_id, e.ts DESC",
        ids,
        [since[i] for i in ids],
        merge,
    )
    anchors = {
        r["device_id"]: Emptying(
            r["ts"],
            r["source"],
            r["fill_before"],
            r["fill_after"],
            r["confirmed_ts"],
            r["ended_cycle_rate"],
        )
        for r in rows
    }
    start = [anchors[i].ts if i in anchors else _NEVER for i in ids]
    readings: dict[str, list[RawReading]] = {i: [] for i in ids}
    for r in await conn.fetch(
        # LATERAL: one index range scan per column, whatever the planner guesses of unnest.
        "SELECT c.id AS device_id, r.* FROM unnest($1::text[], $2::timestamptz[]) AS c(id, start) "
        f"CROSS JOIN LATERAL (SELECT {_READING_COLUMNS} FROM waste_column_readings r "
        "WHERE r.device_id = c.id AND r.ts >= c.start ORDER BY r.ts) r",
        ids,
        start,
    ):
        readings[r["device_id"]].append(_reading(r))
    crew: dict[str, list[datetime]] = {i: [] for i in ids}
    for r in await conn.fetch(
        "SELECT w.device_id, w.ts FROM unnest($1::text[], $2::timestamptz[]) AS c(id, start) "
        "JOIN waste_crew_emptied w ON w.device_id = c.id AND w.ts > c.start "
        "ORDER BY w.device_id, w.ts",
        ids,
        start,
    ):
        crew[r["device_id"]].append(r["ts"])
    before: dict[str, list[RawReading]] = {i: [] for i in ids}
    past: dict[str, list[float]] = {i: [] for i in ids}
    anchored = list(anchors)
    if anchored:
        at = [anchors[i].ts for i in anchored]
        # A few readings before the anchor: the first valid one is the neighbour the anchor's
        # own reading was judged against.
        for r in await conn.fetch(
            "SELECT c.id AS device_id, p.* FROM unnest($1::text[], $2::timestamptz[]) AS c(id, at) "
            f"CROSS JOIN LATERAL (SELECT {_READING_COLUMNS} FROM waste_column_readings r "
            "WHERE r.device_id = c.id AND r.ts < c.at ORDER BY r.ts DESC LIMIT 24) p",
            anchored,
            at,
        ):
            before[r["device_id"]].append(_reading(r))
        for r in await conn.fetch(
            "SELECT c.id AS device_id, p.ts, p.ended_cycle_rate "
            "FROM unnest($1::text[], $2::timestamptz[]) AS c(id, at) "
            "CROSS JOIN LATERAL (SELECT ts, ended_cycle_rate FROM waste_emptyings e "
            "WHERE e.device_id = c.id AND e.ts <= c.at AND e.ended_cycle_rate IS NOT NULL "
            "ORDER BY e.ts DESC LIMIT 4) p ORDER BY 1, 2",
            anchored,
            at,
        ):
            past[r["device_id"]].append(r["ended_cycle_rate"])
    for i in before:
        before[i].sort(key=lambda x: x.ts, reverse=True)
    return {i: ColumnInputs(anchors.get(i), before[i], readings[i], crew[i], past[i]) for i in ids}


@dataclass(frozen=True)
class ColumnResult:
    device_id: str
    anchor: Emptying | None
    forecast: Forecast
    last_reading: RawReading | None


async def save_columns(conn: asyncpg.Connection, results: Sequence[ColumnResult]) -> None:
    """Replace each column's emptyings after its anchor, and its state."""
    if not results:
        return
    await conn.execute(
        "DELETE FROM waste_emptyings e USING unnest($1::text[], $2::timestamptz[]) AS c(id, after) "
        "WHERE e.device_id = c.id AND e.ts > c.after",
        [r.device_id for r in results],
        [r.anchor.ts if r.anchor else _NEVER for r in results],
    )
    events = [(r.device_id, e) for r in results for e in r.forecast.emptyings]
    if events:
        await conn.execute(
            "INSERT INTO waste_emptyings (device_id, ts, source, fill_before, fill_after, "
            "confirmed_ts, ended_cycle_rate) SELECT * FROM unnest($1::text[], "
            "$2::timestamptz[], $3::text[], $4::float8[], $5::float8[], $6::timestamptz[], "
            "$7::float8[])",
            [d for d, _ in events],
            [e.ts for _, e in events],
            [e.source for _, e in events],
            [e.fill_before for _, e in events],
            [e.fill_after for _, e in events],
            [e.confirmed_ts for _, e in events],
            [e.ended_cycle_rate for _, e in events],
        )
    gone = [r.device_id for r in results if r.last_reading is None]
    if gone:
        await conn.execute("DELETE FROM waste_column_state WHERE device_id = ANY($1::text[])", gone)
    keep = [r for r in results if r.last_reading is not None]
    if not keep:
        return
    f = [r.forecast for r in keep]
    await conn.execute(
        """
        INSERT INTO waste_column_state (device_id, fill_pct, fill_ts, last_reading_ts,
            last_alarms, rate_pct_per_day, own_rate, rate_source, threshold_pct, eta_threshold,
            last_emptied, cycle_points, spread_pts, reliability, updated_at)
        SELECT id, fill, fts, lts, alarms::text[], rate, own, src, thr, eta, emptied, pts,
            spread, rel, now()
        FROM unnest($1::text[], $2::float8[], $3::timestamptz[], $4::timestamptz[], $5::text[],
            $6::float8[], $7::float8[], $8::text[], $9::float8[], $10::timestamptz[],
            $11::timestamptz[], $12::int[], $13::float8[], $14::text[])
            AS t(id, fill, fts, lts, alarms, rate, own, src, thr, eta, emptied, pts, spread, rel)
        ON CONFLICT (device_id) DO UPDATE SET
            fill_pct = EXCLUDED.fill_pct, fill_ts = EXCLUDED.fill_ts,
            last_reading_ts = EXCLUDED.last_reading_ts, last_alarms = EXCLUDED.last_alarms,
            rate_pct_per_day = EXCLUDED.rate_pct_per_day, own_rate = EXCLUDED.own_rate,
            rate_source = EXCLUDED.rate_source, threshold_pct = EXCLUDED.threshold_pct,
            eta_threshold = EXCLUDED.eta_threshold, last_emptied = EXCLUDED.last_emptied,
            cycle_points = EXCLUDED.cycle_points, spread_pts = EXCLUDED.spread_pts,
            reliability = EXCLUDED.reliability, updated_at = now()
        """,
        [r.device_id for r in keep],
        [x.fill_pct for x in f],
        [x.fill_ts for x in f],
        [r.last_reading.ts for r in keep if r.last_reading is not None],
        # unnest flattens a two-dimensional array: the alarms travel as one text each.
        ["{" + ",".join(r.last_reading.alarms) + "}" for r in keep if r.last_reading is not None],
        [x.rate_pct_per_day for x in f],
        [x.own_rate for x in f],
        [x.rate_source for x in f],
        [x.threshold_pct for x in f],
        [x.eta_threshold for x in f],
        [x.last_emptied for x in f],
        [x.cycle_points for x in f],
        [x.spread_pts for x in f],
        [x.reliability for x in f],
    )


@dataclass(frozen=True)
class FallbackRow:
    device_id: str
    stream: str | None
    forecast: Forecast
    tenant: str = "default"


async def stream_medians(conn: asyncpg.Connection) -> dict[tuple[str, str | None], float]:
    """Per tenant and waste stream, the median of the columns' own fill rates."""
    rows = await conn.fetch(
        "SELECT d.tenant, d.attributes ->> 'waste_stream' AS stream, "
        "percentile_cont(0.5) WITHIN GROUP (ORDER BY s.own_rate) AS rate "
        "FROM waste_column_state s JOIN devices d ON d.id = s.device_id "
        f"WHERE {_COLUMNS_WHERE} AND s.own_rate IS NOT NULL GROUP BY 1, 2",
        None,
        None,
        None,
    )
    return {(r["tenant"], r["stream"]): r["rate"] for r in rows}


async def fallback_columns(conn: asyncpg.Connection) -> list[FallbackRow]:
    """Columns without a rate of their own, which take their stream's."""
    rows = await conn.fetch(
        "SELECT s.device_id, d.tenant, d.attributes ->> 'waste_stream' AS stream, s.fill_pct, "
        "s.fill_ts, "
        "s.rate_pct_per_day, s.rate_source, s.threshold_pct, s.eta_threshold, s.last_emptied, "
        "s.cycle_points, s.reliability "
        "FROM waste_column_state s JOIN devices d ON d.id = s.device_id "
        f"WHERE {_COLUMNS_WHERE} AND s.own_rate IS NULL",
        None,
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
            r["tenant"],
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


async def record_emptied(
    pool: asyncpg.Pool, device_id: str, at: datetime, tenant: str | None = None
) -> bool:
    """A crew's confirmation; False when the device is not a waste column (of `tenant`)."""
    async with pool.acquire() as conn, conn.transaction():
        kind = await conn.fetchval(
            "SELECT kind FROM devices WHERE id = $1 AND ($2::text IS NULL OR tenant = $2)",
            device_id,
            tenant,
        )
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
    pool: asyncpg.Pool, device_id: str, tenant: str | None = None
) -> tuple[ColumnDevice | None, ColumnState | None]:
    """The column (None: no such waste column) and its derived state (None: no reading yet)."""
    row = await pool.fetchrow(
        "SELECT id, attributes FROM devices WHERE id = $1 AND kind = 'waste_column' "
        "AND ($2::text IS NULL OR tenant = $2)",
        device_id,
        tenant,
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


async def stream_known(pool: asyncpg.Pool, stream: str, tenant: str | None = None) -> bool:
    return bool(
        await pool.fetchval(
            f"SELECT EXISTS (SELECT 1 FROM devices d WHERE {_COLUMNS_WHERE})", stream, None, tenant
        )
    )


async def group_known(pool: asyncpg.Pool, group: str, tenant: str | None = None) -> bool:
    return bool(
        await pool.fetchval(
            f"SELECT EXISTS (SELECT 1 FROM devices d WHERE {_COLUMNS_WHERE})", None, group, tenant
        )
    )


async def list_candidates(
    pool: asyncpg.Pool,
    stream: str | None,
    group: str | None,
    *,
    min_fill_pct: float,
    alarms: Sequence[str],
    due_before: datetime,
    custom_due_before: datetime,
    tenant: str | None = None,
) -> list[ListRow]:
    """Active columns of the stream/round that may be on a collection list: with one of
    `alarms` on their latest reading, or at least `min_fill_pct` full and either at their
    threshold or reaching it before `due_before` (`custom_due_before`, a bound, for columns
    with collection days of their own)."""
    rows = await pool.fetch(
        f"SELECT {_STATE_COLUMNS}, d.lat, d.lon, d.attributes -> 'collection_days' AS days "
        "FROM waste_column_state s JOIN devices d ON d.id = s.device_id "
        f"WHERE {_COLUMNS_WHERE} AND (s.last_alarms && $5::text[] OR (s.fill_pct >= $4 "
        "AND (s.fill_pct >= s.threshold_pct OR s.eta_threshold < CASE WHEN "
        "d.attributes ? 'collection_days' THEN $7::timestamptz ELSE $6::timestamptz END))) "
        # Emptied by a crew since its last reading: off the list at once, before the worker
        # has recomputed its state.
        "AND NOT EXISTS (SELECT 1 FROM waste_crew_emptied c "
        "WHERE c.device_id = s.device_id AND c.ts >= s.last_reading_ts)",
        stream,
        group,
        tenant,
        min_fill_pct,
        list(alarms),
        due_before,
        custom_due_before,
    )
    return [ListRow(_state(r), r["lat"], r["lon"], r["days"]) for r in rows]


async def rounds(
    pool: asyncpg.Pool, tenant: str | None = None
) -> list[tuple[str | None, str | None]]:
    """Every (waste stream, collection round) that active columns have, for choosing a list."""
    rows = await pool.fetch(
        "SELECT DISTINCT d.attributes ->> 'waste_stream' AS stream, d.group_name AS grp "
        f"FROM devices d WHERE {_COLUMNS_WHERE} ORDER BY 1, 2",
        None,
        None,
        tenant,
    )
    return [(r["stream"], r["grp"]) for r in rows]


@dataclass(frozen=True, slots=True)
class FillState:
    device_id: str
    fill_pct: float | None
    threshold_pct: float
    threshold_set: bool  # the column has its own `threshold_pct` attribute


async def fill_states_changed(
    conn: asyncpg.Connection, lower: datetime, upper: datetime
) -> list[FillState]:
    """The columns whose state the waste job rewrote with `lower <= updated_at < upper`
    (`updated_at` is the job transaction's start, so the change-feed window applies): the
    filtered level the alert engine judges `bin_full` on. One row per column: a scan of the
    state table, a few thousand rows."""
    rows = await conn.fetch(
        "SELECT s.device_id, s.fill_pct, s.threshold_pct, "
        "coalesce(d.attributes ? 'threshold_pct', false) AS threshold_set "
        "FROM waste_column_state s LEFT JOIN devices d ON d.id = s.device_id "
        "WHERE s.updated_at >= $1 AND s.updated_at < $2 ORDER BY s.device_id",
        lower,
        upper,
    )
    return [
        FillState(r["device_id"], r["fill_pct"], r["threshold_pct"], r["threshold_set"])
        for r in rows
    ]
