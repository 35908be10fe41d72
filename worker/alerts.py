"""The alert engine: condition sources say what is true of each device now; the engine turns
that into alert state changes (open, repeat, clear) and their outbox events, in the job's one
transaction.

A condition source is `async def evaluate(conn, cycle) -> Sequence[Condition]`, added to
`sources()`. It returns a Condition for each (device, type) it has an opinion on this cycle:
`active=True` opens the alert (or counts a repeat on the one open), `active=False` clears it;
a (device, type) it says nothing about keeps its state. `cycle` tells it the time, the settings,
the job's window of the change feed and the devices with new readings, so a source can be
incremental (look only at what changed) or judge the whole fleet each time. For example the
derived water leak status (suspected / leak / burst), once it exists, plugs in as below, where
the storage query returns the meters whose status is not `none` plus those with a leak or
burst alert still open (both small, through indexes), so that every change is seen whenever
the water job commits it:

    async def leak_status(conn, cycle):
        out = []
        for m in await water.leak_status_for_alerts(conn):
            out.append(Condition(m.device_id, "leak", m.status in ("leak", "burst"),
                                 detail={"source": "night_flow", "status": m.status},
                                 repeat=False))
            out.append(Condition(m.device_id, "burst", m.status == "burst", repeat=False))
        return out

    def sources():
        return [silence_source, flag_source(exclude=("leak", "burst")), leak_status]

`flag_source(exclude=...)` leaves those two types to the derived status (or keep both: when two
sources speak of one (device, type) in a cycle, active wins).

Hysteresis lives in the sources (analytics/alerts.py); the engine itself never opens an alert
for a device that is not active, and clears every alert of a decommissioned device.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from analytics import alerts as rules
from storage import alerts as store
from storage.changes import Window
from territory.config import Settings
from worker.jobs import Job

log = logging.getLogger("territory.worker.alerts")

JOB_NAME = "alerts"


@dataclass(frozen=True)
class Condition:
    device_id: str
    type: str
    active: bool
    severity: str | None = None  # None: the type's default (analytics.alerts.SEVERITY)
    detail: Mapping[str, Any] = field(default_factory=dict)
    # False for a source that restates a standing condition every cycle: the open alert's
    # count then stays as it is instead of counting cycles.
    repeat: bool = True


@dataclass(frozen=True)
class Cycle:
    settings: Settings
    now: datetime
    window: Window
    # kind → devices with readings stored in the window (or since, see sync_activity)
    changed: Mapping[str, Sequence[str]]


Source = Callable[[asyncpg.Connection, Cycle], Awaitable[Sequence[Condition]]]


# -- sources --------------------------------------------------------------------------------------


async def silence_source(conn: asyncpg.Connection, cycle: Cycle) -> Sequence[Condition]:
    """offline and sensor_stale: deadlines crossed open, deadlines moved past now (the device
    was heard again) clear. Only rows that change are read, through partial indexes."""
    out: list[Condition] = []
    for s in await store.trip_silences(conn, cycle.now):
        detail = {
            "last_received_at": s.last_received_at.isoformat() if s.last_received_at else None,
            "deadline": s.deadline.isoformat(),
            "never_heard": s.last_received_at is None,
        }
        out.append(Condition(s.device_id, s.type, True, detail=detail))
    for s in await store.untrip_silences(conn, cycle.now):
        out.append(Condition(s.device_id, s.type, False, detail={"clear_reason": "heard_again"}))
    return out


def flag_source(exclude: Collection[str] = ()) -> Source:
    """Device alarm flags (leak, burst, backflow, tamper, fire, tilt, low battery), the battery
    level and the bin fill level, for the devices with new readings only."""

    async def evaluate(conn: asyncpg.Connection, cycle: Cycle) -> Sequence[Condition]:
        s = cycle.settings
        out: list[Condition] = []
        for kind, ids in cycle.changed.items():
            for dev in await store.recent_readings(conn, kind, ids, s.alert_flag_clear_readings):
                recent = [rules.RecentReading(alarms, fill) for _, alarms, fill in dev.readings]
                verdicts = rules.flag_verdicts(kind, recent, s.alert_flag_clear_readings)
                battery = rules.battery_verdict(
                    verdicts.pop("battery_low", None),
                    dev.battery_pct,
                    s.alert_battery_low_pct.get(kind, 15.0),
                    s.alert_battery_clear_margin_pct,
                )
                if battery is not None:
                    verdicts["battery_low"] = battery
                if kind == "waste_column":
                    threshold = rules.threshold_from(
                        dev.attributes, "threshold_pct", s.alert_bin_full_pct
                    )
                    full = rules.bin_full_verdict(
                        recent[0].fill_pct if recent else None,
                        threshold,
                        s.alert_bin_full_clear_margin_pct,
                    )
                    if full is not None:
                        verdicts["bin_full"] = full
                out.extend(
                    Condition(dev.device_id, t, v.active, detail=v.detail)
                    for t, v in verdicts.items()
                    if t not in exclude
                )
        return out

    return evaluate


def sources() -> list[Source]:
    """Every condition source the engine runs, in order."""
    return [silence_source, flag_source()]


# -- the job --------------------------------------------------------------------------------------


def _silence_fingerprint(settings: Settings) -> str:
    data = {
        "intervals": settings.alert_expected_interval_s,
        "factor": rules.OFFLINE_FACTOR + rules.OFFLINE_GRACE,
        "freshness": settings.parking_freshness_s,
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


async def apply(
    conn: asyncpg.Connection, conditions: Sequence[Condition], now: datetime
) -> list[store.Change]:
    """The lifecycle: several sources may speak of one (device, type) in a cycle; active wins.
    Active conditions of devices not active are dropped."""
    active_ids = await store.active_device_ids(
        conn, sorted({c.device_id for c in conditions if c.active})
    )
    merged: dict[tuple[str, str], Condition] = {}
    for c in conditions:
        if c.active and c.device_id not in active_ids:
            continue
        key = (c.device_id, c.type)
        if key not in merged or (c.active and not merged[key].active):
            merged[key] = c
    to_open = [
        (
            c.device_id,
            c.type,
            c.severity or rules.SEVERITY.get(c.type, "warning"),
            c.detail,
            c.repeat,
        )
        for c in merged.values()
        if c.active
    ]
    to_clear = [c for c in merged.values() if not c.active]
    changes = await store.open_or_repeat(conn, to_open, now)
    changes += await store.clear(
        conn,
        [(c.device_id, c.type) for c in to_clear],
        now,
        [str(c.detail.get("clear_reason", "condition_ended")) for c in to_clear],
    )
    return changes


async def run_alerts(conn: asyncpg.Connection, window: Window, settings: Settings) -> int:
    # Readings visible now, from the window's lower line on (re-reading the few above its
    # upper line next time is harmless: activity keeps the newest, verdicts are recomputed).
    await store.plan_each_statement(conn)
    changed: dict[str, list[str]] = {}
    for kind in store.READING_TABLES:
        ids = await store.sync_activity(conn, kind, window.lower)
        if ids:
            changed[kind] = ids
    registry = await store.registry_changes(conn, window.lower)
    fingerprint = _silence_fingerprint(settings)
    full = await store.engine_state(conn, "silence_settings") != fingerprint
    recompute: list[str] | None = None
    if not full:
        recompute = sorted({i for ids in changed.values() for i in ids} | {d.id for d in registry})
    await store.recompute_silence(
        conn,
        recompute,
        intervals_s=settings.alert_expected_interval_s,
        offline_factor=rules.OFFLINE_FACTOR + rules.OFFLINE_GRACE,
        freshness_s=settings.parking_freshness_s,
    )
    if full:
        await store.set_engine_state(conn, "silence_settings", fingerprint)
    now: datetime = await conn.fetchval("SELECT clock_timestamp()")
    cycle = Cycle(settings, now, window, changed)
    conditions: list[Condition] = []
    for source in sources():
        conditions.extend(await source(conn, cycle))
    gone = [d.id for d in registry if not d.active]
    if full or gone:
        conditions.extend(
            Condition(dev, t, False, detail={"clear_reason": "decommissioned"})
            for dev, t in await store.open_alerts_of_inactive_devices(conn, None if full else gone)
        )
    changes = await apply(conn, conditions, now)
    opened = sum(c.transition == "opened" for c in changes)
    cleared = sum(c.transition == "cleared" for c in changes)
    if opened or cleared:
        log.info("alerts: %d opened, %d cleared", opened, cleared)
    return len(changes)


def job(settings: Settings | None = None) -> Job:
    interval = settings.alert_eval_interval_s if settings is not None else 5.0
    return Job(JOB_NAME, run_alerts, interval_s=interval)


async def run_evaluation(settings: Settings, stop: asyncio.Event) -> None:
    """The evaluation loop of `territory worker`: the alert job in a job loop of its own, on
    its own connection, so that a long derived-data job (a first build takes minutes) never
    delays offline detection. The job's lock and window work as for any job."""
    from worker.service import Worker

    await Worker(settings, [job(settings)]).run_forever(stop)


async def evaluate_once(settings: Settings) -> None:
    from worker.service import Worker

    w = Worker(settings, [job(settings)])
    try:
        await w.run_once()
    finally:
        await w.close()
