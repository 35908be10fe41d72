"""SQL for water consumption and leaks: the worker's recomputation and the API's reads.

Device selection lives in one place per query (a `devices` join or a device id), where the
API's reads take the caller's tenant (None: every tenant). The district rollup
(`water_district_hourly`) is keyed by district alone and districts are names any tenant may
use, so a tenant's district is summed from its own meters' hours instead (`district_hours`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, TypeAlias

import asyncpg

from analytics.water import Anomaly, Hour, IndexReset, NightRun, Reading
from storage.changes import Window, changed_devices

Conn: TypeAlias = asyncpg.Connection | asyncpg.Pool

# Volumes at or below this are an hour without flow (hour volumes are sums of float shares).
ZERO_M3 = 1e-9


def _utc(t: float) -> datetime:
    return datetime.fromtimestamp(t, tz=UTC)


# -- worker side -------------------------------------------------------------------------------


async def no_jit(conn: asyncpg.Connection) -> None:
    """For the rest of the transaction: the planner's row estimates for `unnest` of many meters
    make it compile these queries with LLVM, which costs more (~0.2 s) than running them."""
    await conn.execute("SET LOCAL jit = off")


async def changed_meters(conn: asyncpg.Connection, window: Window) -> dict[str, datetime]:
    """Each meter with new readings or newly declared index resets, with the oldest device
    time they touch."""
    changed = await changed_devices(conn, "water_meter_readings", window)
    rows = await conn.fetch(
        "SELECT device_id, min(at) AS since FROM water_index_resets "
        "WHERE stored_at >= $1 AND stored_at < $2 GROUP BY device_id",
        window.lower,
        window.upper,
    )
    for r in rows:
        d, since = r["device_id"], r["since"]
        changed[d] = min(since, changed[d]) if d in changed else since
    return changed


async def relabel_districts(conn: asyncpg.Connection, window: Window) -> dict[str, datetime]:
    """Meters whose registry entry changed in the window and whose hours carry another
    district: their whole history moves to the current district (a district edit corrects
    the registry; a meter that really moves is a new supply point, docs/water.md). Returns
    each district whose rollup must be recomputed, from which hour."""
    rows = await conn.fetch(
        """
        WITH moved AS (
            SELECT d.id, d.attributes ->> 'district' AS district FROM devices d
            WHERE d.kind = 'water_meter' AND d.updated_at >= $1 AND d.updated_at < $2
        )
        SELECT h.district AS old, m.district AS new, min(h.hour) AS since
        FROM water_hourly h JOIN moved m ON m.id = h.device_id
        WHERE h.district IS DISTINCT FROM m.district
        GROUP BY h.district, m.district
        """,
        window.lower,
        window.upper,
    )
    if not rows:
        return {}
    await conn.execute(
        """
        UPDATE water_hourly h SET district = d.attributes ->> 'district'
        FROM devices d
        WHERE d.kind = 'water_meter' AND d.updated_at >= $1 AND d.updated_at < $2
          AND h.device_id = d.id AND h.district IS DISTINCT FROM d.attributes ->> 'district'
        """,
        window.lower,
        window.upper,
    )
    out: dict[str, datetime] = {}
    for r in rows:
        for district in (r["old"], r["new"]):
            if district is not None:
                out[district] = min(r["since"], out.get(district, r["since"]))
    return out


@dataclass(frozen=True, slots=True)
class MeterInfo:
    device_id: str
    district: str | None
    q4_m3h: float | None
    register_m3: float | None


async def meter_info(conn: asyncpg.Connection, device_ids: Sequence[str]) -> dict[str, MeterInfo]:
    rows = await conn.fetch(
        """
        SELECT id, attributes ->> 'district' AS district,
               (attributes ->> 'q4_m3h')::float8 AS q4,
               (attributes ->> 'register_m3')::float8 AS reg
        FROM devices WHERE id = ANY($1::text[])
        """,
        list(device_ids),
    )
    return {r["id"]: MeterInfo(r["id"], r["district"], r["q4"], r["reg"]) for r in rows}


@dataclass(slots=True)
class MeterSlice:
    """The readings a meter's recomputation needs: from `warmup` readings before the hour of
    the reading preceding the oldest change, to the newest. Hours from `h0` on are rewritten."""

    h0: float
    readings: list[Reading]


async def readings_to_recompute(
    conn: asyncpg.Connection, since: dict[str, datetime], warmup: int
) -> dict[str, MeterSlice]:
    rows = await conn.fetch(
        """
        WITH c AS (SELECT d, s FROM unnest($1::text[], $2::timestamptz[]) AS c(d, s)),
        h AS MATERIALIZED (
            SELECT c.d, date_bin('1 hour',
                       coalesce((SELECT max(r.ts) FROM water_meter_readings r
                                 WHERE r.device_id = c.d AND r.ts < c.s AND isfinite(r.ts)),
                                c.s),
                       timestamptz '2000-01-01 00:00+00') AS h0
            FROM c
        ),
        b AS MATERIALIZED (
            SELECT h.d, h.h0,
                   coalesce((SELECT min(x.ts) FROM (
                                SELECT r.ts FROM water_meter_readings r
                                WHERE r.device_id = h.d AND r.ts < h.h0 AND isfinite(r.ts)
                                ORDER BY r.ts DESC LIMIT $3) x), h.h0) AS from_ts
            FROM h
        )
        SELECT b.d AS device_id, extract(epoch FROM b.h0)::float8 AS h0,
               extract(epoch FROM r.ts)::float8 AS t, r.index_m3
        FROM b CROSS JOIN LATERAL (
            SELECT ts, index_m3 FROM water_meter_readings r
            WHERE r.device_id = b.d AND r.ts >= b.from_ts AND isfinite(r.ts) ORDER BY ts) r
        ORDER BY b.d, r.ts
        """,
        list(since),
        list(since.values()),
        warmup,
    )
    out: dict[str, MeterSlice] = {}
    for r in rows:
        s = out.get(r["device_id"])
        if s is None:
            s = out[r["device_id"]] = MeterSlice(r["h0"], [])
        s.readings.append(Reading(r["t"], r["index_m3"]))
    return out


async def index_resets_of(
    conn: asyncpg.Connection, device_ids: Sequence[str]
) -> dict[str, list[IndexReset]]:
    rows = await conn.fetch(
        "SELECT device_id, extract(epoch FROM at)::float8 AS at, old_final_index_m3, "
        "new_start_index_m3 FROM water_index_resets WHERE device_id = ANY($1::text[]) "
        "ORDER BY device_id, at",
        list(device_ids),
    )
    out: dict[str, list[IndexReset]] = {}
    for r in rows:
        out.setdefault(r["device_id"], []).append(
            IndexReset(r["at"], r["new_start_index_m3"], r["old_final_index_m3"])
        )
    return out


@dataclass(frozen=True, slots=True)
class MeterResult:
    device_id: str
    district: str | None
    h0: float
    hours: list[Hour]
    anomalies: list[Anomaly]


async def replace_meter_hours(conn: asyncpg.Connection, results: Sequence[MeterResult]) -> int:
    """Rewrite each meter's hours from its h0 on, and its anomalies after h0."""
    if not results:
        return 0
    ids = [m.device_id for m in results]
    h0s = [_utc(m.h0) for m in results]
    await conn.execute(
        "DELETE FROM water_hourly h USING unnest($1::text[], $2::timestamptz[]) AS c(d, h0) "
        "WHERE h.device_id = c.d AND h.hour >= c.h0",
        ids,
        h0s,
    )
    await conn.execute(
        "DELETE FROM water_anomalies a USING unnest($1::text[], $2::timestamptz[]) AS c(d, h0) "
        "WHERE a.device_id = c.d AND a.ts > c.h0",
        ids,
        h0s,
    )
    hours: list[tuple[Any, ...]] = []
    flags: list[tuple[Any, ...]] = []
    for m in results:
        hours.extend(
            (m.device_id, _utc(h.hour), m.district, h.volume_m3, h.estimated, h.measured)
            for h in m.hours
            if h.hour >= m.h0
        )
        flags.extend(
            (m.device_id, _utc(a.t), a.kind, a.delta_m3) for a in m.anomalies if a.t > m.h0
        )
    if hours:
        await conn.copy_records_to_table(
            "water_hourly",
            records=hours,
            columns=["device_id", "hour", "district", "volume_m3", "estimated", "measured"],
        )
    if flags:
        await conn.copy_records_to_table(
            "water_anomalies", records=flags, columns=["device_id", "ts", "kind", "delta_m3"]
        )
    return len(hours)


async def refresh_district_hours(conn: asyncpg.Connection, since: dict[str, datetime]) -> None:
    """Recompute each district's hourly rollup from the given hour on."""
    if not since:
        return
    args = (list(since), list(since.values()))
    await conn.execute(
        "DELETE FROM water_district_hourly w USING unnest($1::text[], $2::timestamptz[]) "
        "AS c(d, h) WHERE w.district = c.d AND w.hour >= c.h",
        *args,
    )
    await conn.execute(
        """
        INSERT INTO water_district_hourly (district, hour, volume_m3, meters, estimated)
        SELECT h.district, h.hour, sum(h.volume_m3), count(*), bool_or(h.estimated)
        FROM water_hourly h
        JOIN unnest($1::text[], $2::timestamptz[]) AS c(d, h0)
          ON h.district = c.d AND h.hour >= c.h0
        GROUP BY h.district, h.hour
        """,
        *args,
    )


async def refresh_meter_days(
    conn: asyncpg.Connection,
    since: dict[str, date],
    tz: str,
    night_start_hour: int,
    night_end_hour: int,
) -> None:
    """Recompute each meter's local days (in `tz`) from the given day on: the night minimum
    (only when every hour of the night was measured), the continuous-flow rule, the largest
    measured hour, and the meter's own leak and burst alarms."""
    if not since:
        return
    ids, days = list(since), list(since.values())
    await conn.execute(
        "DELETE FROM water_meter_days w USING unnest($1::text[], $2::date[]) AS c(d, day0) "
        "WHERE w.device_id = c.d AND w.day >= c.day0",
        ids,
        days,
    )
    await conn.execute(
        """
        WITH c AS (
            SELECT d, (day0::timestamp AT TIME ZONE $3) AS from_ts
            FROM unnest($1::text[], $2::date[]) AS c(d, day0)
        ),
        hrs AS (
            SELECT h.device_id, (h.hour AT TIME ZONE $3)::date AS day, h.hour, h.volume_m3,
                   h.measured,
                   extract(hour FROM h.hour AT TIME ZONE $3) >= $4
                     AND extract(hour FROM h.hour AT TIME ZONE $3) < $5 AS night
            FROM c CROSS JOIN LATERAL (
                SELECT device_id, hour, volume_m3, measured FROM water_hourly x
                WHERE x.device_id = c.d AND x.hour >= c.from_ts OFFSET 0) h
        ),
        agg AS (
            SELECT device_id, day,
                   count(*) FILTER (WHERE night AND measured) AS night_measured,
                   min(volume_m3) FILTER (WHERE night AND measured) AS night_min,
                   count(*) FILTER (WHERE measured) AS measured_hours,
                   count(*) FILTER (WHERE measured AND volume_m3 <= $6) AS zero_hours,
                   max(volume_m3) FILTER (WHERE measured) AS max_hour,
                   (array_agg(hour ORDER BY volume_m3 DESC, hour)
                      FILTER (WHERE measured))[1] AS max_hour_at
            FROM hrs GROUP BY device_id, day
        ),
        al AS (
            SELECT r.device_id, (r.ts AT TIME ZONE $3)::date AS day,
                   min(r.ts) FILTER (WHERE 'leak' = ANY (r.alarms)) AS leak_at,
                   min(r.ts) FILTER (WHERE 'burst' = ANY (r.alarms)) AS burst_at
            FROM c CROSS JOIN LATERAL (
                SELECT device_id, ts, alarms FROM water_meter_readings x
                WHERE x.device_id = c.d AND x.ts >= c.from_ts
                  AND x.alarms && ARRAY['leak', 'burst']::text[]
                -- OFFSET 0 keeps this a per-meter index scan: pulled up, the rare-alarm
                -- filter makes the planner scan the whole readings table instead.
                OFFSET 0) r
            GROUP BY 1, 2
        ),
        j AS (
            SELECT coalesce(a.device_id, al.device_id) AS device_id,
                   coalesce(a.day, al.day) AS day,
                   a.night_measured, a.night_min,
                   coalesce(a.measured_hours, 0) AS measured_hours,
                   coalesce(a.zero_hours, 0) AS zero_hours,
                   a.max_hour, a.max_hour_at, al.leak_at, al.burst_at
            FROM agg a FULL JOIN al ON a.device_id = al.device_id AND a.day = al.day
        ),
        k AS (
            SELECT j.*, n.night_start, n.night_hours,
                   extract(epoch FROM ((j.day + 1)::timestamp AT TIME ZONE $3)
                                      - (j.day::timestamp AT TIME ZONE $3)) / 3600 AS day_hours
            FROM j CROSS JOIN LATERAL (
                SELECT min(g) AS night_start, count(*) AS night_hours
                FROM generate_series(j.day::timestamp AT TIME ZONE $3,
                                     ((j.day + 1)::timestamp AT TIME ZONE $3)
                                       - interval '1 hour',
                                     interval '1 hour') AS g
                WHERE extract(hour FROM g AT TIME ZONE $3) >= $4
                  AND extract(hour FROM g AT TIME ZONE $3) < $5
            ) n
        )
        INSERT INTO water_meter_days (device_id, day, night_start, night_min_lph,
            measured_hours, zero_hours, continuous, max_hour_l, max_hour_at,
            leak_alarm_at, burst_alarm_at)
        SELECT device_id, day, coalesce(night_start, day::timestamp AT TIME ZONE $3),
               CASE WHEN night_hours > 0 AND night_measured = night_hours
                    THEN night_min * 1000 END,
               measured_hours, zero_hours,
               measured_hours >= day_hours AND zero_hours = 0,
               max_hour * 1000, max_hour_at, leak_at, burst_at
        FROM k
        """,
        ids,
        days,
        tz,
        night_start_hour,
        night_end_hour,
        ZERO_M3,
    )


# -- index resets (API) ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IndexResetRecord:
    device_id: str
    at: datetime
    old_final_index_m3: float | None
    new_start_index_m3: float
    stored_at: datetime


def _reset(r: asyncpg.Record) -> IndexResetRecord:
    return IndexResetRecord(
        r["device_id"], r["at"], r["old_final_index_m3"], r["new_start_index_m3"], r["stored_at"]
    )


async def add_index_reset(
    conn: Conn, device_id: str, at: datetime, old_final: float | None, new_start: float
) -> IndexResetRecord | None:
    """None when a reset is already declared at that instant for that meter."""
    row = await conn.fetchrow(
        "INSERT INTO water_index_resets (device_id, at, old_final_index_m3, new_start_index_m3) "
        "VALUES ($1, $2, $3, $4) ON CONFLICT (device_id, at) DO NOTHING "
        "RETURNING device_id, at, old_final_index_m3, new_start_index_m3, stored_at",
        device_id,
        at,
        old_final,
        new_start,
    )
    return _reset(row) if row else None


async def list_index_resets(conn: Conn, device_id: str) -> list[IndexResetRecord]:
    rows = await conn.fetch(
        "SELECT device_id, at, old_final_index_m3, new_start_index_m3, stored_at "
        "FROM water_index_resets WHERE device_id = $1 ORDER BY at",
        device_id,
    )
    return [_reset(r) for r in rows]


# -- consumption and leaks (API) ---------------------------------------------------------------


async def is_water_meter(conn: Conn, device_id: str, tenant: str | None = None) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM devices WHERE id = $1 AND kind = 'water_meter' "
            "AND ($2::text IS NULL OR tenant = $2))",
            device_id,
            tenant,
        )
    )


async def district_exists(conn: Conn, district: str, tenant: str | None = None) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM devices "
            "WHERE kind = 'water_meter' AND attributes ->> 'district' = $1 "
            "AND ($2::text IS NULL OR tenant = $2))",
            district,
            tenant,
        )
    )


@dataclass(frozen=True, slots=True)
class HourVolume:
    hour: datetime
    volume_m3: float
    meters: int
    estimated: bool


async def meter_hours(
    conn: Conn, device_id: str, start: datetime, end: datetime
) -> list[HourVolume]:
    rows = await conn.fetch(
        "SELECT hour, volume_m3, estimated FROM water_hourly "
        "WHERE device_id = $1 AND hour >= $2 AND hour < $3 ORDER BY hour",
        device_id,
        start,
        end,
    )
    return [HourVolume(r["hour"], r["volume_m3"], 1, r["estimated"]) for r in rows]


async def district_hours(
    conn: Conn, district: str, start: datetime, end: datetime, tenant: str | None = None
) -> list[HourVolume]:
    """The district's hours. For one tenant, summed from that tenant's meters' hours (the
    same sums the rollup holds, over fewer meters); for all, read from the rollup."""
    if tenant is not None:
        rows = await conn.fetch(
            "SELECT h.hour, sum(h.volume_m3) AS volume_m3, count(*) AS meters, "
            "bool_or(h.estimated) AS estimated "
            "FROM water_hourly h JOIN devices d ON d.id = h.device_id AND d.tenant = $4 "
            "WHERE h.district = $1 AND h.hour >= $2 AND h.hour < $3 "
            "GROUP BY h.hour ORDER BY h.hour",
            district,
            start,
            end,
            tenant,
        )
        return [HourVolume(r["hour"], r["volume_m3"], r["meters"], r["estimated"]) for r in rows]
    rows = await conn.fetch(
        "SELECT hour, volume_m3, meters, estimated FROM water_district_hourly "
        "WHERE district = $1 AND hour >= $2 AND hour < $3 ORDER BY hour",
        district,
        start,
        end,
    )
    return [HourVolume(r["hour"], r["volume_m3"], r["meters"], r["estimated"]) for r in rows]


@dataclass(frozen=True, slots=True)
class MeterDayRow:
    device_id: str
    day: date
    night_start: datetime
    night_min_lph: float | None
    max_hour_l: float | None
    max_hour_at: datetime | None
    continuous: bool
    leak_alarm_at: datetime | None
    burst_alarm_at: datetime | None


def _day(r: asyncpg.Record) -> MeterDayRow:
    return MeterDayRow(
        r["device_id"],
        r["day"],
        r["night_start"],
        r["night_min_lph"],
        r["max_hour_l"],
        r["max_hour_at"],
        r["continuous"],
        r["leak_alarm_at"],
        r["burst_alarm_at"],
    )


_DAY_COLUMNS = (
    "w.device_id, w.day, w.night_start, w.night_min_lph, w.max_hour_l, w.max_hour_at, "
    "w.continuous, w.leak_alarm_at, w.burst_alarm_at"
)


async def leak_candidates(
    conn: Conn,
    day: date,
    district: str | None,
    suspected_lph: float,
    burst_l: float,
    tenant: str | None = None,
) -> list[MeterDayRow]:
    """The water meters (of `district`, or all) whose `day` shows anything a leak rule could
    use; the streak of nights is checked on their history afterwards."""
    rows = await conn.fetch(
        f"""
        SELECT {_DAY_COLUMNS}
        FROM water_meter_days w
        JOIN devices d ON d.id = w.device_id AND d.kind = 'water_meter'
             AND ($2::text IS NULL OR d.attributes ->> 'district' = $2)
             AND ($5::text IS NULL OR d.tenant = $5)
        WHERE w.day = $1
          AND (w.night_min_lph >= least($3::float8, $4::float8) OR w.continuous
               OR w.leak_alarm_at IS NOT NULL OR w.burst_alarm_at IS NOT NULL)
        ORDER BY w.device_id
        """,
        day,
        district,
        suspected_lph,
        burst_l,
        tenant,
    )
    return [_day(r) for r in rows]


async def alert_meter_days(
    conn: Conn, days: Sequence[date], suspected_lph: float, also: Iterable[str]
) -> list[MeterDayRow]:
    """The rows of `days` of the meters whose rows show anything a leak rule could use (a
    night at or over `suspected_lph`, a leak or burst alarm), and of the meters `also` (those
    with a leak alert open): what the alert engine judges each cycle. Through the day index:
    the rows of two days, not the history."""
    rows = await conn.fetch(
        f"""
        WITH ids AS (
            SELECT w.device_id FROM water_meter_days w
            WHERE w.day = ANY($1::date[])
              AND (w.night_min_lph >= $2 OR w.leak_alarm_at IS NOT NULL
                   OR w.burst_alarm_at IS NOT NULL)
            UNION
            SELECT unnest($3::text[])
        )
        SELECT {_DAY_COLUMNS}
        FROM water_meter_days w JOIN ids ON ids.device_id = w.device_id
        WHERE w.day = ANY($1::date[])
        ORDER BY w.device_id, w.day
        """,
        list(days),
        suspected_lph,
        list(also),
    )
    return [_day(r) for r in rows]


async def night_runs(
    conn: Conn,
    device_ids: Iterable[str],
    day: date,
    lookback_days: int,
    suspected_lph: float,
    leak_lph: float,
) -> dict[str, NightRun]:
    """analytics.water.night_run for each meter, in the database: one row per meter instead of
    its whole history. Row k back from `day` (k = 0, 1, ...) continues the run only if it is
    the day exactly k days back (no missing day) and its night reached the threshold."""
    rows = await conn.fetch(
        """
        WITH h AS (
            SELECT w.device_id, w.night_start, w.night_min_lph, ($1::date - w.day) AS back,
                   row_number() OVER (PARTITION BY w.device_id ORDER BY w.day DESC) - 1 AS rn
            FROM water_meter_days w
            WHERE w.device_id = ANY($2::text[]) AND w.day > $1::date - $3::int AND w.day <= $1
        ),
        r AS (
            SELECT device_id,
                   coalesce(min(rn) FILTER (WHERE back <> rn OR night_min_lph IS NULL
                                               OR night_min_lph < $4), count(*)) AS nights,
                   coalesce(min(rn) FILTER (WHERE back <> rn OR night_min_lph IS NULL
                                               OR night_min_lph < $5), count(*)) AS leak_nights
            FROM h GROUP BY device_id
        )
        SELECT r.device_id, r.nights, r.leak_nights, h.night_start AS since
        FROM r LEFT JOIN h ON h.device_id = r.device_id AND h.rn = r.nights - 1
        """,
        day,
        list(device_ids),
        lookback_days,
        suspected_lph,
        leak_lph,
    )
    return {
        r["device_id"]: NightRun(int(r["nights"]), int(r["leak_nights"]), r["since"]) for r in rows
    }


@dataclass(frozen=True, slots=True)
class AnomalyRow:
    ts: datetime
    kind: str
    delta_m3: float


async def meter_anomalies(
    conn: Conn, device_id: str, start: datetime | None, end: datetime | None, limit: int
) -> list[AnomalyRow]:
    rows = await conn.fetch(
        "SELECT ts, kind, delta_m3 FROM water_anomalies WHERE device_id = $1 "
        "AND ($2::timestamptz IS NULL OR ts >= $2) AND ($3::timestamptz IS NULL OR ts < $3) "
        "ORDER BY ts DESC LIMIT $4",
        device_id,
        start,
        end,
        limit,
    )
    return [AnomalyRow(r["ts"], r["kind"], r["delta_m3"]) for r in rows]
