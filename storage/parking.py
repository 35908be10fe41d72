"""Parking queries: the spaces of each zone, their latest states, the per-zone occupancy slots
the worker maintains (migration 010) and what the API reads from them.

Which devices count as a zone's spaces is decided in one place per query, the `spaces` common
table expression (`_spaces`), where the API's reads pass the caller's tenant. The derived slots
(`parking_zone_slots`) are keyed by zone name alone, and two tenants may name a zone alike: a
tenant's history of a zone it shares is computed from its own spaces' readings instead
(`zone_tenants`, `zone_readings(tenant=...)`). A space's freshness window is its
`freshness_s` attribute when set, else the setting passed in as a parameter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TypeAlias

import asyncpg

from storage.changes import Window

Db: TypeAlias = asyncpg.Connection | asyncpg.Pool


# $1 is always the default freshness window in seconds; `tenant_param` ("$4") the tenant.
def _spaces(tenant_param: str | None = None) -> str:
    tenant = (
        f"AND ({tenant_param}::text IS NULL OR d.tenant = {tenant_param})" if tenant_param else ""
    )
    return _SPACES_TEMPLATE.replace("{tenant}", tenant)


_SPACES_TEMPLATE = """
spaces AS (
    SELECT d.id,
           d.attributes ->> 'zone' AS zone,
           d.status,
           CASE WHEN jsonb_typeof(d.attributes -> 'freshness_s') = 'number'
                THEN (d.attributes ->> 'freshness_s')::float8
                ELSE $1::float8 END AS fresh_s
      FROM devices d
     WHERE d.kind = 'parking_sensor' AND d.attributes ->> 'zone' IS NOT NULL {tenant}
)"""
_SPACES = _spaces()


@dataclass(frozen=True, slots=True)
class ZoneNow:
    zone: str
    total: int
    free: int
    occupied: int
    unknown: int
    stale: int  # of unknown: heard from, but not within the freshness window
    never_heard: int  # of unknown
    updated_at: datetime | None


async def zones_now(
    db: Db,
    default_fresh_s: float,
    at: datetime | None,
    zone: str | None = None,
    tenant: str | None = None,
) -> list[ZoneNow]:
    """Counts per zone of the active spaces at `at` (None: now, and a reading a few minutes
    ahead of the server's clock still counts). One index probe per space on the readings'
    (device_id, ts) key for its newest reading."""
    rows = await db.fetch(
        f"""
        WITH {_spaces("$4")},
        latest AS (
            SELECT s.zone, s.fresh_s, l.ts, l.occupied
              FROM spaces s
              LEFT JOIN LATERAL (
                  SELECT r.ts, r.occupied FROM parking_sensor_readings r
                   WHERE r.device_id = s.id AND ($2::timestamptz IS NULL OR r.ts <= $2)
                   ORDER BY r.ts DESC LIMIT 1) l ON true
             WHERE s.status = 'active' AND ($3::text IS NULL OR s.zone = $3)
        ),
        judged AS (
            SELECT zone, ts, occupied,
                   ts IS NOT NULL
                   AND ts > coalesce($2, now()) - make_interval(secs => fresh_s) AS fresh
              FROM latest
        )
        SELECT zone,
               count(*) AS total,
               count(*) FILTER (WHERE fresh AND NOT occupied) AS free,
               count(*) FILTER (WHERE fresh AND occupied) AS occupied,
               count(*) FILTER (WHERE ts IS NOT NULL AND NOT fresh) AS stale,
               count(*) FILTER (WHERE ts IS NULL) AS never_heard,
               max(ts) AS updated_at
          FROM judged
         GROUP BY zone
         ORDER BY zone
        """,
        default_fresh_s,
        at,
        zone,
        tenant,
    )
    return [
        ZoneNow(
            zone=r["zone"],
            total=r["total"],
            free=r["free"],
            occupied=r["occupied"],
            unknown=r["stale"] + r["never_heard"],
            stale=r["stale"],
            never_heard=r["never_heard"],
            updated_at=r["updated_at"],
        )
        for r in rows
    ]


async def zone_exists(db: Db, zone: str, tenant: str | None = None) -> bool:
    """Any parking sensor, active or decommissioned, ever placed in the zone (its history
    stays readable after its spaces are removed)."""
    return bool(
        await db.fetchval(
            f"WITH {_spaces('$3')} SELECT EXISTS (SELECT 1 FROM spaces WHERE zone = $2)",
            0.0,
            zone,
            tenant,
        )
    )


async def zone_tenants(db: Db, zone: str) -> set[str]:
    """The tenants whose spaces (any status) are in the zone: when it is only the caller's,
    the derived slots are exactly its own."""
    rows = await db.fetch(
        "SELECT DISTINCT tenant FROM devices "
        "WHERE kind = 'parking_sensor' AND attributes ->> 'zone' = $1",
        zone,
    )
    return {r["tenant"] for r in rows}


@dataclass(frozen=True, slots=True)
class BucketTotals:
    start: datetime
    known_s: float
    occupied_s: float


async def zone_buckets(
    db: Db, zone: str, start: datetime, end: datetime, bucket: timedelta
) -> list[BucketTotals]:
    """Sums of the zone's slots per bucket over [start, end); buckets without data are absent.
    Buckets are aligned on multiples of `bucket` since 2000-01-01 UTC."""
    rows = await db.fetch(
        """
        SELECT date_bin($4::interval, slot_start, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS b,
               sum(known_s) AS known_s, sum(occupied_s) AS occupied_s
          FROM parking_zone_slots
         WHERE zone = $1 AND slot_start >= $2 AND slot_start < $3
         GROUP BY b ORDER BY b
        """,
        zone,
        start,
        end,
        bucket,
    )
    return [BucketTotals(r["b"], r["known_s"], r["occupied_s"]) for r in rows]


async def zone_free_by_local_slot(
    db: Db, zone: str, days: Sequence[tuple[datetime, datetime]], tz: str
) -> list[tuple[date, str, float]]:
    """Average free (fresh) places per 15-minute bucket over the given [start, end) ranges
    (local days), labelled with the local date and wall-clock slot "HH:MM" in `tz`. On the
    autumn DST day the repeated hour gives two rows with the same label."""
    rows = await db.fetch(
        """
        WITH q AS (
            SELECT date_bin('15 minutes', p.slot_start, TIMESTAMPTZ '2000-01-01 00:00:00+00')
                       AS b,
                   sum(p.known_s - p.occupied_s) AS free_s
              FROM unnest($2::timestamptz[], $3::timestamptz[]) AS r(lo, hi)
             -- One key range scan per day (OFFSET 0: see zone_readings).
             CROSS JOIN LATERAL (
                 SELECT s.slot_start, s.known_s, s.occupied_s FROM parking_zone_slots s
                  WHERE s.zone = $1 AND s.slot_start >= r.lo AND s.slot_start < r.hi
                 OFFSET 0
             ) p
             GROUP BY 1
        )
        SELECT (b AT TIME ZONE $4)::date AS d, to_char(b AT TIME ZONE $4, 'HH24:MI') AS slot,
               free_s / 900.0 AS free
          FROM q
         ORDER BY b
        """,
        zone,
        [lo for lo, _ in days],
        [hi for _, hi in days],
        tz,
    )
    return [(r["d"], r["slot"], r["free"]) for r in rows]


# --- What the worker reads and writes ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AffectedSpan:
    """The time over which a space's stored states changed with the window's new readings:
    from its oldest new reading to the reading after its newest (the newest new reading's
    state lasts until then), or to the newest new reading + the freshness window."""

    device_id: str
    zone: str
    lo: datetime
    hi: datetime


async def affected_spans(
    conn: asyncpg.Connection, window: Window, default_fresh_s: float
) -> list[AffectedSpan]:
    rows = await conn.fetch(
        f"""
        WITH {_SPACES},
        new AS (
            SELECT device_id, min(ts) AS first_ts, max(ts) AS last_ts
              FROM parking_sensor_readings
             WHERE stored_at >= $2 AND stored_at < $3
             GROUP BY device_id
        )
        SELECT n.device_id, s.zone, n.first_ts AS lo,
               coalesce(
                   (SELECT min(r.ts) FROM parking_sensor_readings r
                     WHERE r.device_id = n.device_id AND r.ts > n.last_ts),
                   n.last_ts + make_interval(secs => s.fresh_s)) AS hi
          FROM new n JOIN spaces s ON s.id = n.device_id
        """,
        default_fresh_s,
        window.lower,
        window.upper,
    )
    return [AffectedSpan(r["device_id"], r["zone"], r["lo"], r["hi"]) for r in rows]


@dataclass(frozen=True, slots=True)
class ZoneRange:
    zone: str
    lo: datetime
    hi: datetime


async def zone_readings(
    conn: asyncpg.Connection | asyncpg.Pool,
    ranges: Sequence[ZoneRange],
    default_fresh_s: float,
    tenant: str | None = None,
) -> list[list[tuple[list[tuple[float, bool]], float]]]:
    """For each range, per space of its zone (whatever the space's status: its past readings
    are history), the space's freshness and its readings in [lo - freshness, hi), as POSIX
    seconds in time order: the input of `analytics.parking.slot_seconds`. One query for all
    the ranges."""
    rows = await conn.fetch(
        f"""
        WITH {_spaces("$5")},
        ranges AS (
            SELECT * FROM unnest($2::text[], $3::timestamptz[], $4::timestamptz[])
                   WITH ORDINALITY AS r(zone, lo, hi, k)
        )
        SELECT r.k, s.id, s.fresh_s, extract(epoch FROM x.ts)::float8 AS t, x.occupied
          FROM ranges r
          JOIN spaces s ON s.zone = r.zone
          -- A range scan of each space's (device_id, ts) key per range. OFFSET 0 keeps the
          -- planner from flattening the subquery, after which it scanned every reading of
          -- each space and filtered on ts.
          CROSS JOIN LATERAL (
              SELECT p.ts, p.occupied FROM parking_sensor_readings p
               WHERE p.device_id = s.id
                 AND p.ts >= r.lo - make_interval(secs => s.fresh_s)
                 AND p.ts < r.hi
              OFFSET 0
          ) x
         ORDER BY r.k, s.id, x.ts
        """,
        default_fresh_s,
        [r.zone for r in ranges],
        [r.lo for r in ranges],
        [r.hi for r in ranges],
        tenant,
    )
    out: list[list[tuple[list[tuple[float, bool]], float]]] = [[] for _ in ranges]
    current: tuple[int, str] | None = None
    for r in rows:
        key = (r["k"], r["id"])
        spaces = out[r["k"] - 1]
        if key != current:
            current = key
            spaces.append(([], r["fresh_s"]))
        spaces[-1][0].append((r["t"], r["occupied"]))
    return out


async def replace_zone_slots(
    conn: asyncpg.Connection,
    ranges: Sequence[ZoneRange],
    slots: Sequence[tuple[str, datetime, float, float]],
) -> None:
    """Rewrite the slots of every range with `slots` (zone, start, known_s, occupied_s)."""
    await conn.execute(
        """
        DELETE FROM parking_zone_slots p
         USING unnest($1::text[], $2::timestamptz[], $3::timestamptz[]) AS r(zone, lo, hi)
         WHERE p.zone = r.zone AND p.slot_start >= r.lo AND p.slot_start < r.hi
        """,
        [r.zone for r in ranges],
        [r.lo for r in ranges],
        [r.hi for r in ranges],
    )
    if slots:
        await conn.copy_records_to_table(
            "parking_zone_slots",
            records=slots,
            columns=("zone", "slot_start", "known_s", "occupied_s"),
        )


async def clear_zone_slots(conn: asyncpg.Connection) -> None:
    """Before a full rebuild (the job's first run)."""
    await conn.execute("DELETE FROM parking_zone_slots")


async def zone_slot_rows(db: Db, zone: str) -> list[tuple[datetime, float, float]]:
    """Every stored slot of a zone, for checks and tests."""
    rows = await db.fetch(
        "SELECT slot_start, known_s, occupied_s FROM parking_zone_slots WHERE zone = $1 "
        "ORDER BY slot_start",
        zone,
    )
    return [(r["slot_start"], r["known_s"], r["occupied_s"]) for r in rows]
