"""Alerts: the device activity the worker keeps, the alerts, their outbox and deliveries.

Every query of the alert engine and of the alert API is here. Device selection for the API goes
through `_device_scope` (one place, where the caller's tenant filters them).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from devices.kinds import all_kinds, kind_spec


def reading_kinds() -> list[str]:
    """Every declared device kind, each with a reading table the activity job folds in."""
    return [k.value for k in all_kinds()]


def _has(kind: str, field: str) -> bool:
    return field in kind_spec(kind).field_names


# -- device activity (change feed → last heard) -------------------------------------------------


async def plan_each_statement(conn: asyncpg.Connection) -> None:
    """For the rest of the transaction: plan each statement for its actual parameters. A
    generic plan of `id = ANY($1)` may pick a scan of a whole kind (a third of the fleet)
    over primary-key lookups, and the alert job's few statements plan in microseconds."""
    await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")


async def sync_activity(conn: asyncpg.Connection, kind: str, since: datetime) -> list[str]:
    """Fold the rows stored since `since` into `device_activity` (newest receive time, newest
    battery level by device time); returns the devices that had rows. Reads every row visible
    now, not only up to the window's upper line: `greatest` makes re-reading harmless, and the
    freshest receive times are what offline detection needs."""
    table = kind_spec(kind).table  # from a declaration, not input
    battery = "battery_pct" if _has(kind, "battery_pct") else "NULL::float8"
    rows = await conn.fetch(
        f"""
        INSERT INTO device_activity AS a (device_id, last_received_at, battery_pct, battery_ts)
        SELECT device_id, max(received_at),
               (array_agg({battery} ORDER BY ts DESC)
                    FILTER (WHERE {battery} IS NOT NULL))[1],
               max(ts) FILTER (WHERE {battery} IS NOT NULL)
        FROM {table} WHERE stored_at >= $1 GROUP BY device_id
        ON CONFLICT (device_id) DO UPDATE SET
            last_received_at = greatest(a.last_received_at, EXCLUDED.last_received_at),
            battery_pct = CASE WHEN EXCLUDED.battery_ts >= a.battery_ts
                                 OR a.battery_ts IS NULL AND EXCLUDED.battery_ts IS NOT NULL
                               THEN EXCLUDED.battery_pct ELSE a.battery_pct END,
            battery_ts = CASE WHEN EXCLUDED.battery_ts >= a.battery_ts
                                OR a.battery_ts IS NULL AND EXCLUDED.battery_ts IS NOT NULL
                              THEN EXCLUDED.battery_ts ELSE a.battery_ts END
        RETURNING device_id
        """,
        since,
    )
    return [r["device_id"] for r in rows]


@dataclass(frozen=True, slots=True)
class RegistryChange:
    id: str
    kind: str
    active: bool


async def registry_changes(conn: asyncpg.Connection, since: datetime) -> list[RegistryChange]:
    """Devices registered or updated since `since` (new ones must go offline if never heard
    from; decommissioned ones must stop alerting)."""
    rows = await conn.fetch(
        "SELECT id, kind, status FROM devices WHERE updated_at >= $1 ORDER BY id", since
    )
    return [RegistryChange(r["id"], r["kind"], r["status"] == "active") for r in rows]


async def engine_state(conn: asyncpg.Connection, key: str) -> str | None:
    value: str | None = await conn.fetchval(
        "SELECT value FROM alert_engine_state WHERE key = $1", key
    )
    return value


async def set_engine_state(conn: asyncpg.Connection, key: str, value: str) -> None:
    await conn.execute(
        "INSERT INTO alert_engine_state (key, value) VALUES ($1, $2) "
        "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        key,
        value,
    )


_SILENCE_UPSERT = """
    WITH d AS (
        SELECT d.id, d.kind,
               coalesce((SELECT a.last_received_at FROM device_activity a
                          WHERE a.device_id = d.id), d.created_at) AS heard,
               coalesce((d.attributes ->> 'expected_interval_s')::float8,
                        CASE d.kind WHEN 'water_meter' THEN $2::float8
                                    WHEN 'waste_column' THEN $3::float8
                                    ELSE $4::float8 END) AS interval_s,
               coalesce((d.attributes ->> 'freshness_s')::float8, $6::float8) AS fresh_s
        FROM devices d
        WHERE d.status = 'active' AND {selection}
    )
    INSERT INTO alert_silence (device_id, type, deadline)
    SELECT id, 'offline', heard + make_interval(secs => interval_s * $5::float8) FROM d
    UNION ALL
    -- A space's state is stale by the device time of its newest reading, as GET /parking/zones
    -- counts it unknown (a backlog of old readings received now is stale at once); a space
    -- never heard from, from its registration.
    SELECT id, 'sensor_stale',
           coalesce((SELECT max(r.ts) FROM parking_sensor_readings r
                      WHERE r.device_id = d.id AND isfinite(r.ts)), heard)
             + make_interval(secs => fresh_s)
    FROM d
    WHERE kind = 'parking_sensor'
    ON CONFLICT (device_id, type) DO UPDATE SET deadline = EXCLUDED.deadline
"""


async def recompute_silence(
    conn: asyncpg.Connection,
    device_ids: Sequence[str] | None,
    *,
    intervals_s: Mapping[str, float],
    offline_factor: float,
    freshness_s: float,
) -> None:
    """Recompute the offline (and, for parking spaces, sensor_stale) deadlines of the given
    active devices (all of them when None) from when they were last heard, or registered if
    never heard. Inactive devices lose theirs. Two statements rather than one with an
    `$1 IS NULL OR` condition, so that the incremental one always plans as index lookups."""
    if device_ids is not None and not device_ids:
        return
    params = (
        intervals_s["water_meter"],
        intervals_s["waste_column"],
        intervals_s["parking_sensor"],
        offline_factor,
        freshness_s,
    )
    if device_ids is None:
        await conn.execute(_SILENCE_UPSERT.format(selection="$1::int IS NULL"), None, *params)
        await conn.execute(
            "DELETE FROM alert_silence s USING devices d "
            "WHERE d.id = s.device_id AND d.status <> 'active'"
        )
        return
    ids = list(device_ids)
    await conn.execute(_SILENCE_UPSERT.format(selection="d.id = ANY($1::text[])"), ids, *params)
    # Through the primary keys on both sides (a join would scan every device for the status).
    await conn.execute(
        "DELETE FROM alert_silence WHERE device_id = ANY($1::text[]) AND device_id IN "
        "(SELECT id FROM devices WHERE id = ANY($1::text[]) AND status <> 'active')",
        ids,
    )


@dataclass(frozen=True, slots=True)
class Silence:
    device_id: str
    type: str
    deadline: datetime
    last_received_at: datetime | None


async def trip_silences(conn: asyncpg.Connection, now: datetime) -> list[Silence]:
    """Deadlines crossed since the last cycle (marked tripped): an index range, however many
    devices there are."""
    rows = await conn.fetch(
        """
        UPDATE alert_silence s SET tripped = true
        WHERE NOT tripped AND deadline < $1
        RETURNING device_id, type, deadline,
                  (SELECT last_received_at FROM device_activity a
                    WHERE a.device_id = s.device_id) AS last_received_at
        """,
        now,
    )
    return [Silence(r["device_id"], r["type"], r["deadline"], r["last_received_at"]) for r in rows]


async def untrip_silences(conn: asyncpg.Connection, now: datetime) -> list[Silence]:
    """Tripped devices heard from again (their deadline moved past now)."""
    rows = await conn.fetch(
        """
        UPDATE alert_silence s SET tripped = false
        WHERE tripped AND deadline >= $1
        RETURNING device_id, type, deadline,
                  (SELECT last_received_at FROM device_activity a
                    WHERE a.device_id = s.device_id) AS last_received_at
        """,
        now,
    )
    return [Silence(r["device_id"], r["type"], r["deadline"], r["last_received_at"]) for r in rows]


# -- newest readings of changed devices -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceRecent:
    device_id: str
    kind: str
    attributes: dict[str, Any]
    battery_pct: float | None
    # newest first: (ts, alarms, fill_pct)
    readings: list[tuple[datetime, tuple[str, ...], float | None]]


def _recent_columns(kind: str) -> str:
    alarms = "alarms" if _has(kind, "alarms") else "'{}'::text[] AS alarms"
    fill = "fill_pct" if _has(kind, "fill_pct") else "NULL::float8 AS fill_pct"
    return f"{alarms}, {fill}"


async def recent_readings(
    conn: asyncpg.Connection, kind: str, device_ids: Sequence[str], per_device: int
) -> list[DeviceRecent]:
    """The newest `per_device` readings (by device time) of each device, its attributes and its
    newest battery level: through the primary key, a few rows per device."""
    if not device_ids:
        return []
    table = kind_spec(kind).table
    rows = await conn.fetch(
        f"""
        SELECT d.id, d.kind, d.attributes,
               (SELECT a.battery_pct FROM device_activity a WHERE a.device_id = d.id)
                   AS battery_pct,
               r.ts, r.alarms, r.fill_pct
        FROM devices d
        CROSS JOIN LATERAL (
            SELECT ts, {_recent_columns(kind)} FROM {table} t
            WHERE t.device_id = d.id ORDER BY ts DESC LIMIT $2
        ) r
        WHERE d.id = ANY($1::text[])
        ORDER BY d.id, r.ts DESC
        """,
        list(device_ids),
        per_device,
    )
    out: dict[str, DeviceRecent] = {}
    for r in rows:
        rec = out.get(r["id"])
        if rec is None:
            rec = out[r["id"]] = DeviceRecent(
                r["id"], r["kind"], r["attributes"], r["battery_pct"], []
            )
        rec.readings.append((r["ts"], tuple(r["alarms"]), r["fill_pct"]))
    return list(out.values())


async def active_device_ids(conn: asyncpg.Connection, device_ids: Sequence[str]) -> set[str]:
    rows = await conn.fetch(
        "SELECT id FROM devices WHERE id = ANY($1::text[]) AND status = 'active'",
        list(device_ids),
    )
    return {r["id"] for r in rows}


async def open_alerts_of_inactive_devices(
    conn: asyncpg.Connection, device_ids: Sequence[str] | None
) -> list[tuple[str, str]]:
    """(device, type) of alerts not cleared whose device is decommissioned."""
    rows = await conn.fetch(
        """
        SELECT a.device_id, a.type FROM alerts a JOIN devices d ON d.id = a.device_id
        WHERE a.status <> 'cleared' AND d.status <> 'active'
          AND ($1::text[] IS NULL OR a.device_id = ANY($1::text[]))
        """,
        list(device_ids) if device_ids is not None else None,
    )
    return [(r["device_id"], r["type"]) for r in rows]


# -- lifecycle ------------------------------------------------------------------------------------

# What a notification says about an alert (MQTT payload, webhook items): the API's fields plus
# the device's group.
_SNAPSHOT = """jsonb_build_object(
    'id', {a}.id, 'device_id', {a}.device_id, 'type', {a}.type, 'severity', {a}.severity,
    'status', {a}.status, 'opened_at', {a}.opened_at, 'last_seen_at', {a}.last_seen_at,
    'acknowledged_at', {a}.acknowledged_at, 'acknowledged_by', {a}.acknowledged_by,
    'cleared_at', {a}.cleared_at, 'count', {a}.count, 'detail', {a}.detail,
    'group', (SELECT group_name FROM devices WHERE id = {a}.device_id))"""


@dataclass(frozen=True, slots=True)
class Change:
    alert_id: int
    device_id: str
    type: str
    transition: str  # opened | repeated | cleared | acknowledged


_OPEN = """
    WITH up AS (
        INSERT INTO alerts AS a (device_id, type, severity, opened_at, last_seen_at, detail)
        SELECT u.d, u.t, u.s, $5, $5, u.x::jsonb
        FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS u(d, t, s, x)
        ON CONFLICT (device_id, type) WHERE status <> 'cleared'
        DO UPDATE SET {on_repeat} detail = EXCLUDED.detail, severity = EXCLUDED.severity
        RETURNING a.*, (xmax = 0) AS inserted
    ), ev AS (
        INSERT INTO alert_events (alert_id, device_id, type, transition, at, snapshot)
        SELECT up.id, up.device_id, up.type, 'opened', up.opened_at, {snapshot}
        FROM up WHERE up.inserted
    )
    SELECT id, device_id, type, inserted FROM up
"""
_COUNT_REPEAT = "count = a.count + 1, last_seen_at = EXCLUDED.last_seen_at,"


async def open_or_repeat(
    conn: asyncpg.Connection,
    items: Sequence[tuple[str, str, str, Mapping[str, Any], bool]],
    now: datetime,
) -> list[Change]:
    """Open an alert per (device, type, severity, detail, repeat), or, on the one not yet
    cleared, count a repeat (when `repeat`; a source restating a standing condition every
    cycle passes False). The partial unique index decides, even against a concurrent
    evaluator. Each opening writes its outbox event in the same statement. Keys must be
    distinct."""
    out: list[Change] = []
    for repeat in (True, False):
        batch = [i for i in items if i[4] is repeat]
        if not batch:
            continue
        sql = _OPEN.format(
            on_repeat=_COUNT_REPEAT if repeat else "", snapshot=_SNAPSHOT.format(a="up")
        )
        rows = await conn.fetch(
            sql,
            [i[0] for i in batch],
            [i[1] for i in batch],
            [i[2] for i in batch],
            [json.dumps(i[3], default=str) for i in batch],
            now,
        )
        out += [
            Change(r["id"], r["device_id"], r["type"], "opened" if r["inserted"] else "repeated")
            for r in rows
        ]
    return out


async def clear(
    conn: asyncpg.Connection,
    keys: Sequence[tuple[str, str]],
    now: datetime,
    reasons: Sequence[str],
) -> list[Change]:
    """Clear the alert not yet cleared of each (device, type) (acknowledged ones too), with
    its outbox event."""
    if not keys:
        return []
    rows = await conn.fetch(
        f"""
        WITH c AS (
            UPDATE alerts a SET status = 'cleared', cleared_at = $4,
                   detail = a.detail || jsonb_build_object('clear_reason', u.r)
            FROM unnest($1::text[], $2::text[], $3::text[]) AS u(d, t, r)
            WHERE a.device_id = u.d AND a.type = u.t AND a.status <> 'cleared'
            RETURNING a.*
        ), ev AS (
            INSERT INTO alert_events (alert_id, device_id, type, transition, at, snapshot)
            SELECT c.id, c.device_id, c.type, 'cleared', c.cleared_at, {_SNAPSHOT.format(a="c")}
            FROM c
        )
        SELECT id, device_id, type FROM c
        """,
        [k[0] for k in keys],
        [k[1] for k in keys],
        list(reasons),
        now,
    )
    return [Change(r["id"], r["device_id"], r["type"], "cleared") for r in rows]


# -- reading and acknowledging (API) --------------------------------------------------------------

_ALERT_COLUMNS = (
    "a.id, a.device_id, a.type, a.severity, a.status, a.opened_at, a.last_seen_at, "
    "a.acknowledged_at, a.acknowledged_by, a.cleared_at, a.count, a.detail"
)


# The devices a caller may see: those of its tenant (the parameter named, NULL for all).
def _device_scope(tenant_param: str) -> str:
    return (
        f"JOIN devices d ON d.id = a.device_id "
        f"AND ({tenant_param}::text IS NULL OR d.tenant = {tenant_param})"
    )


@dataclass(frozen=True, slots=True)
class AlertRecord:
    id: int
    device_id: str
    type: str
    severity: str
    status: str
    opened_at: datetime
    last_seen_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    cleared_at: datetime | None
    count: int
    detail: dict[str, Any]


def _alert(r: asyncpg.Record) -> AlertRecord:
    return AlertRecord(
        r["id"],
        r["device_id"],
        r["type"],
        r["severity"],
        r["status"],
        r["opened_at"],
        r["last_seen_at"],
        r["acknowledged_at"],
        r["acknowledged_by"],
        r["cleared_at"],
        r["count"],
        r["detail"],
    )


async def list_alerts(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    status: str | None = None,
    type_: str | None = None,
    device_id: str | None = None,
    group: str | None = None,
    since: datetime | None = None,
    before_id: int | None = None,
    limit: int = 100,
    tenant: str | None = None,
) -> list[AlertRecord]:
    """Newest first (by id), keyset-paginated: `before_id` is the last id of the previous
    page. `status` "active" means open or acknowledged."""
    rows = await conn.fetch(
        f"""
        SELECT {_ALERT_COLUMNS} FROM alerts a {_device_scope("$8")}
        WHERE ($1::text IS NULL OR a.status = $1
               OR ($1 = 'active' AND a.status <> 'cleared'))
          AND ($2::text IS NULL OR a.type = $2)
          AND ($3::text IS NULL OR a.device_id = $3)
          AND ($4::text IS NULL OR d.group_name = $4)
          AND ($5::timestamptz IS NULL OR a.opened_at >= $5)
          AND ($6::bigint IS NULL OR a.id < $6)
        ORDER BY a.id DESC
        LIMIT $7
        """,
        status,
        type_,
        device_id,
        group,
        since,
        before_id,
        limit,
        tenant,
    )
    return [_alert(r) for r in rows]


async def get_alert(
    conn: asyncpg.Connection | asyncpg.Pool, alert_id: int, tenant: str | None = None
) -> AlertRecord | None:
    row = await conn.fetchrow(
        f"SELECT {_ALERT_COLUMNS} FROM alerts a {_device_scope('$2')} WHERE a.id = $1",
        alert_id,
        tenant,
    )
    return _alert(row) if row else None


async def acknowledge(
    conn: asyncpg.Connection, alert_id: int, by: str, tenant: str | None = None
) -> tuple[str, AlertRecord | None]:
    """("acknowledged" | "already" | "cleared" | "missing", the alert). The acknowledgement and
    its outbox event are one transaction; acknowledging twice keeps the first one."""
    async with conn.transaction():
        row = await conn.fetchrow(
            f"""
            WITH ack AS (
                UPDATE alerts a SET status = 'acknowledged', acknowledged_at = now(),
                       acknowledged_by = $2
                WHERE a.id = $1 AND a.status = 'open'
                  AND ($3::text IS NULL OR EXISTS (
                      SELECT 1 FROM devices d WHERE d.id = a.device_id AND d.tenant = $3))
                RETURNING a.*
            ), ev AS (
                INSERT INTO alert_events (alert_id, device_id, type, transition, at, snapshot)
                SELECT ack.id, ack.device_id, ack.type, 'acknowledged', ack.acknowledged_at,
                       {_SNAPSHOT.format(a="ack")}
                FROM ack
            )
            SELECT {_ALERT_COLUMNS} FROM ack a
            """,
            alert_id,
            by,
            tenant,
        )
        if row is not None:
            return "acknowledged", _alert(row)
        current = await get_alert(conn, alert_id, tenant)
    if current is None:
        return "missing", None
    return ("cleared" if current.status == "cleared" else "already"), current


async def count_alerts(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    since: datetime | None = None,
    tenant: str | None = None,
) -> dict[str, dict[str, int]]:
    """{type: {status: n}} of the alerts opened since `since` (all when None)."""
    rows = await conn.fetch(
        f"""
        SELECT a.type, a.status, count(*) AS n FROM alerts a {_device_scope("$2")}
        WHERE ($1::timestamptz IS NULL OR a.opened_at >= $1)
        GROUP BY a.type, a.status
        """,
        since,
        tenant,
    )
    out: dict[str, dict[str, int]] = {}
    for r in rows:
        out.setdefault(r["type"], {})[r["status"]] = int(r["n"])
    return out


async def device_exists(
    conn: asyncpg.Connection | asyncpg.Pool, device_id: str, tenant: str | None = None
) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM devices WHERE id = $1 "
            "AND ($2::text IS NULL OR tenant = $2))",
            device_id,
            tenant,
        )
    )


async def group_exists(
    conn: asyncpg.Connection | asyncpg.Pool, group: str, tenant: str | None = None
) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM devices WHERE group_name = $1 "
            "AND ($2::text IS NULL OR tenant = $2))",
            group,
            tenant,
        )
    )


# -- outbox: MQTT ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    id: int
    alert_id: int
    device_id: str
    type: str
    transition: str
    at: datetime
    snapshot: dict[str, Any]


def _event(r: asyncpg.Record) -> OutboxEvent:
    return OutboxEvent(
        r["id"], r["alert_id"], r["device_id"], r["type"], r["transition"], r["at"], r["snapshot"]
    )


async def claim_mqtt(conn: asyncpg.Connection, limit: int, lease_s: float) -> list[OutboxEvent]:
    """Events not yet on MQTT, oldest first, leased for `lease_s` (a sender that dies leaves
    them to be taken again; two senders never take the same one at once)."""
    rows = await conn.fetch(
        """
        UPDATE alert_events e SET mqtt_next_at = clock_timestamp() + make_interval(secs => $2),
               mqtt_attempts = e.mqtt_attempts + 1
        WHERE e.id IN (SELECT id FROM alert_events
                        WHERE mqtt_sent_at IS NULL AND mqtt_next_at <= clock_timestamp()
                        ORDER BY mqtt_next_at, id LIMIT $1 FOR UPDATE SKIP LOCKED)
        RETURNING e.id, e.alert_id, e.device_id, e.type, e.transition, e.at, e.snapshot
        """,
        limit,
        lease_s,
    )
    return sorted((_event(r) for r in rows), key=lambda e: e.id)


async def mqtt_sent(conn: asyncpg.Connection, ids: Sequence[int]) -> None:
    await conn.execute(
        "UPDATE alert_events SET mqtt_sent_at = clock_timestamp(), mqtt_error = NULL "
        "WHERE id = ANY($1::bigint[])",
        list(ids),
    )


async def mqtt_retry(
    conn: asyncpg.Connection, ids: Sequence[int], error: str, delay_s: float
) -> None:
    await conn.execute(
        "UPDATE alert_events SET mqtt_error = $2, "
        "mqtt_next_at = clock_timestamp() + make_interval(secs => $3) "
        "WHERE id = ANY($1::bigint[]) AND mqtt_sent_at IS NULL",
        list(ids),
        error[:500],
        delay_s,
    )


async def mqtt_pending_count(conn: asyncpg.Connection | asyncpg.Pool) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM alert_events WHERE mqtt_sent_at IS NULL"))


# -- outbox: grouped webhook notifications -------------------------------------------------


async def group_events(
    conn: asyncpg.Connection,
    webhooks: Sequence[str],
    *,
    group_wait_s: float,
    group_interval_s: float,
    max_per_notification: int,
) -> int:
    """Turn the ungrouped events of each (type, transition) into one notification per webhook
    once the group's oldest event has waited `group_wait_s` and the group's previous
    notification is `group_interval_s` old. One transaction under a lock: two workers never
    group the same events. Returns the notifications created."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('alerts:grouping'))")
    due = await conn.fetch(
        """
        SELECT e.type, e.transition
        FROM alert_events e LEFT JOIN alert_groups g
             ON g.type = e.type AND g.transition = e.transition
        WHERE e.grouped_at IS NULL
        GROUP BY e.type, e.transition, g.last_sent_at
        HAVING min(e.at) <= clock_timestamp() - make_interval(secs => $1)
           AND (g.last_sent_at IS NULL
                OR g.last_sent_at <= clock_timestamp() - make_interval(secs => $2))
        """,
        group_wait_s,
        group_interval_s,
    )
    created = 0
    for d in due:
        ids = [
            r["id"]
            for r in await conn.fetch(
                "UPDATE alert_events SET grouped_at = clock_timestamp() "
                "WHERE grouped_at IS NULL AND type = $1 AND transition = $2 RETURNING id",
                d["type"],
                d["transition"],
            )
        ]
        ids.sort()
        chunks = [
            ids[i : i + max_per_notification] for i in range(0, len(ids), max_per_notification)
        ]
        for hook in webhooks:
            for chunk in chunks:
                await conn.execute(
                    "INSERT INTO alert_notifications (webhook, type, transition, event_ids) "
                    "VALUES ($1, $2, $3, $4)",
                    hook,
                    d["type"],
                    d["transition"],
                    chunk,
                )
                created += 1
        await conn.execute(
            "INSERT INTO alert_groups (type, transition, last_sent_at) "
            "VALUES ($1, $2, clock_timestamp()) ON CONFLICT (type, transition) "
            "DO UPDATE SET last_sent_at = EXCLUDED.last_sent_at",
            d["type"],
            d["transition"],
        )
    return created


@dataclass(frozen=True, slots=True)
class Notification:
    id: int
    webhook: str
    type: str
    transition: str
    event_ids: list[int]
    created_at: datetime
    status: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    delivered_at: datetime | None


_NOTIFICATION_COLUMNS = (
    "id, webhook, type, transition, event_ids, created_at, status, attempts, next_attempt_at, "
    "last_error, delivered_at"
)


def _notification(r: asyncpg.Record) -> Notification:
    return Notification(
        r["id"],
        r["webhook"],
        r["type"],
        r["transition"],
        list(r["event_ids"]),
        r["created_at"],
        r["status"],
        r["attempts"],
        r["next_attempt_at"],
        r["last_error"],
        r["delivered_at"],
    )


async def claim_notification(
    conn: asyncpg.Connection, webhook: str, lease_s: float
) -> Notification | None:
    """The webhook's oldest due notification, leased (attempts counted now, so a sender that
    crashes mid-request still moves towards `failed`)."""
    row = await conn.fetchrow(
        f"""
        UPDATE alert_notifications n SET attempts = n.attempts + 1,
               lease_until = clock_timestamp() + make_interval(secs => $2),
               next_attempt_at = clock_timestamp() + make_interval(secs => $2)
        WHERE n.id = (SELECT id FROM alert_notifications
                       WHERE webhook = $1 AND status = 'pending'
                         AND next_attempt_at <= clock_timestamp()
                       ORDER BY next_attempt_at, id LIMIT 1 FOR UPDATE SKIP LOCKED)
        RETURNING {_NOTIFICATION_COLUMNS}
        """,
        webhook,
        lease_s,
    )
    return _notification(row) if row else None


async def events(conn: asyncpg.Connection | asyncpg.Pool, ids: Sequence[int]) -> list[OutboxEvent]:
    rows = await conn.fetch(
        "SELECT id, alert_id, device_id, type, transition, at, snapshot FROM alert_events "
        "WHERE id = ANY($1::bigint[]) ORDER BY id",
        list(ids),
    )
    return [_event(r) for r in rows]


async def notification_delivered(conn: asyncpg.Connection, notification_id: int) -> None:
    await conn.execute(
        "UPDATE alert_notifications SET status = 'delivered', delivered_at = clock_timestamp(), "
        "lease_until = NULL, last_error = NULL WHERE id = $1",
        notification_id,
    )


async def notification_failed(
    conn: asyncpg.Connection, notification_id: int, error: str, retry_in_s: float | None
) -> None:
    """A failed attempt: retried after `retry_in_s`, or given up (`failed`) when None."""
    await conn.execute(
        """
        UPDATE alert_notifications SET last_error = $2, lease_until = NULL,
               status = CASE WHEN $3::float8 IS NULL THEN 'failed' ELSE 'pending' END,
               next_attempt_at = clock_timestamp() + make_interval(secs => coalesce($3, 0))
        WHERE id = $1 AND status = 'pending'
        """,
        notification_id,
        error[:500],
        retry_in_s,
    )


async def list_notifications(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    status: str | None,
    before_id: int | None,
    limit: int,
) -> list[Notification]:
    rows = await conn.fetch(
        f"""
        SELECT {_NOTIFICATION_COLUMNS} FROM alert_notifications
        WHERE ($1::text IS NULL OR status = $1) AND ($2::bigint IS NULL OR id < $2)
        ORDER BY id DESC LIMIT $3
        """,
        status,
        before_id,
        limit,
    )
    return [_notification(r) for r in rows]


async def retry_notification(conn: asyncpg.Connection | asyncpg.Pool, notification_id: int) -> bool:
    """Put a failed notification back in the queue (after the receiver was fixed)."""
    result: str = await conn.execute(
        "UPDATE alert_notifications SET status = 'pending', attempts = 0, "
        "next_attempt_at = clock_timestamp() WHERE id = $1 AND status = 'failed'",
        notification_id,
    )
    return result.endswith(" 1")


async def prune_outbox(conn: asyncpg.Connection, older_than_s: float) -> tuple[int, int]:
    """Forget what was delivered long ago: delivered notifications, then events already on MQTT
    and grouped that no undelivered notification still lists. Alerts themselves are kept.
    Returns (notifications, events) deleted."""
    notes: str = await conn.execute(
        "DELETE FROM alert_notifications WHERE status = 'delivered' "
        "AND delivered_at < clock_timestamp() - make_interval(secs => $1)",
        older_than_s,
    )
    evs: str = await conn.execute(
        """
        DELETE FROM alert_events e
        WHERE e.at < clock_timestamp() - make_interval(secs => $1)
          AND e.mqtt_sent_at IS NOT NULL AND e.grouped_at IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM alert_notifications n
                           WHERE n.status <> 'delivered' AND e.id = ANY(n.event_ids))
        """,
        older_than_s,
    )
    return int(notes.split()[-1]), int(evs.split()[-1])


# -- derived conditions (worker/alerts.py sources over derived data) ------------------------------


async def open_alert_devices(conn: asyncpg.Connection, types: Sequence[str]) -> set[str]:
    """Devices with an alert of one of `types` not cleared (the partial unique index holds
    exactly those rows)."""
    rows = await conn.fetch(
        "SELECT DISTINCT device_id FROM alerts "
        "WHERE type = ANY($1::text[]) AND status <> 'cleared'",
        list(types),
    )
    return {r["device_id"] for r in rows}


async def water_flagged_since(
    conn: asyncpg.Connection, since: Mapping[str, datetime], flag: str
) -> set[str]:
    """The meters of `since` with a reading carrying `flag` at or after their own time (device
    time, through the primary key)."""
    if not since:
        return set()
    rows = await conn.fetch(
        """
        SELECT s.id FROM unnest($1::text[], $2::timestamptz[]) AS s(id, since)
        WHERE EXISTS (SELECT 1 FROM water_meter_readings r
                      WHERE r.device_id = s.id AND r.ts >= s.since AND $3 = ANY (r.alarms))
        """,
        list(since),
        list(since.values()),
        flag,
    )
    return {r["id"] for r in rows}
