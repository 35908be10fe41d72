"""The alert engine: condition sources say what is true of each device now; the engine turns
that into alert state changes (open, repeat, clear) and their outbox events, in the job's one
transaction.

A condition source is `async def evaluate(conn, cycle) -> Sequence[Condition]`, added to
`sources()`. It returns a Condition for each (device, type) it has an opinion on this cycle:
`active=True` opens the alert (or counts a repeat on the one open), `active=False` clears it;
a (device, type) it says nothing about keeps its state. `cycle` tells it the time, the settings,
the job's window of the change feed and the devices with new readings, so a source can be
incremental (look only at what changed) or judge the whole fleet each time. `leak_source`
(the water leak detector) and `bin_full_source` (the waste model's filtered level) are sources
over derived data: the first judges the meters the detector lists plus those with a leak or
burst alert open (both small, through indexes), the second the columns the waste job rewrote
in the window. When two sources speak of one (device, type) in a cycle, active wins: the
meters' own leak and burst flags (flag_source) open at once, the detector keeps the alert
open until a whole night without it.

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
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from analytics import alerts as rules
from analytics import water as wa
from storage import alerts as store
from storage import waste as wq
from storage import water as ws
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
    """Device alarm flags (leak, burst, backflow, tamper, fire, tilt, low battery) and the
    battery level, for the devices with new readings only. (`bin_full` reads the waste model's
    filtered level: bin_full_source.)"""

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
                out.extend(
                    Condition(dev.device_id, t, v.active, detail=v.detail)
                    for t, v in verdicts.items()
                    if t not in exclude
                )
        return out

    return evaluate


LEAK_TYPES = ("leak", "burst")


async def leak_source(conn: asyncpg.Connection, cycle: Cycle) -> Sequence[Condition]:
    """`leak` and `burst` from the water leak detector (the per-meter status behind
    GET /water/leaks), judged each cycle on the meters the detector lists today or yesterday
    and on those with such an alert open.

    Per meter, the judged day is today once its night (02:00-05:00) is measured, yesterday
    before; the meter's own alarms of today count at once. Every rule that fires on it counts
    (a burst night and a leak alarm give both alerts). The alert opens when the detector says
    so and clears only when it no longer does on a judged day, i.e. after a whole night
    without it: a night minimum that dips for one reading in the day, or a day that has just
    begun, changes nothing. A clear also waits while a reading of the judged day still carries
    the flag (the water job has not derived it yet), so an alert the flag opened is not
    cleared by a detector running behind."""
    s = cycle.settings
    zone = ZoneInfo(s.water_tz)
    today = cycle.now.astimezone(zone).date()
    yesterday = today - timedelta(days=1)
    t = wa.LeakThresholds(
        suspected_lph=s.water_leak_suspected_lph,
        leak_lph=s.water_leak_lph,
        nights=s.water_leak_nights,
        burst_lph=s.water_burst_lph,
    )
    open_ids = await store.open_alert_devices(conn, LEAK_TYPES)
    rows = await ws.alert_meter_days(conn, [yesterday, today], t.suspected_lph, sorted(open_ids))
    by_meter: dict[str, dict[date, wa.MeterDay]] = {}
    for r in rows:
        by_meter.setdefault(r.device_id, {})[r.day] = wa.MeterDay(
            day_start=datetime(r.day.year, r.day.month, r.day.day, tzinfo=zone),
            night_start=r.night_start,
            night_min_lph=r.night_min_lph,
            max_hour_l=r.max_hour_l,
            max_hour_at=r.max_hour_at,
            continuous=r.continuous,
            leak_alarm_at=r.leak_alarm_at,
            burst_alarm_at=r.burst_alarm_at,
        )
    judged: dict[str, tuple[date, wa.MeterDay | None, wa.MeterDay | None]] = {}
    for dev in sorted(set(by_meter) | open_ids):
        days = by_meter.get(dev, {})
        t_row = days.get(today)
        if t_row is not None and t_row.night_min_lph is not None:
            judged[dev] = (today, t_row, None)
        else:
            judged[dev] = (yesterday, days.get(yesterday), t_row)
    runs: dict[str, wa.NightRun] = {}
    for day in (yesterday, today):
        ids = [
            d
            for d, (j, row, _) in judged.items()
            if j == day and row is not None and (row.night_min_lph or 0.0) >= t.suspected_lph
        ]
        runs.update(await ws.night_runs(conn, ids, day, t.nights, t.suspected_lph, t.leak_lph))
    out: list[Condition] = []
    quiet: dict[str, dict[str, datetime]] = {kind: {} for kind in LEAK_TYPES}
    for dev, (day, row, later) in judged.items():
        statuses: frozenset[str] = frozenset()
        if row is not None:
            statuses = wa.alert_statuses(row, runs.get(dev, wa.NightRun()), t, later)
        elif later is not None:
            statuses = wa.alert_statuses(later, wa.NightRun(), t)
        for kind in LEAK_TYPES:
            if kind in statuses:
                detail: dict[str, Any] = {"source": "leak_detector", "day": day.isoformat()}
                if row is not None and row.night_min_lph is not None:
                    detail["night_min_lph"] = round(row.night_min_lph, 3)
                out.append(Condition(dev, kind, True, detail=detail, repeat=False))
            elif dev in open_ids:
                quiet[kind][dev] = datetime(day.year, day.month, day.day, tzinfo=zone)
    for kind, since in quiet.items():
        still_flagged = await store.water_flagged_since(conn, since, kind)
        out.extend(
            Condition(dev, kind, False, detail={"clear_reason": "detector_quiet_for_a_night"})
            for dev in since
            if dev not in still_flagged
        )
    return out


async def bin_full_source(conn: asyncpg.Connection, cycle: Cycle) -> Sequence[Condition]:
    """`bin_full` on the waste model's filtered level (waste_column_state: spikes, echoes and
    lid-open readings left out) against the column's `threshold_pct` (the model's own, stored
    with the state) or else TERRITORY_ALERT_BIN_FULL_PCT, cleared under threshold - 10 points:
    for the columns the waste job rewrote in this cycle's window."""
    s = cycle.settings
    margin = s.alert_bin_full_clear_margin_pct
    out: list[Condition] = []
    for st in await wq.fill_states_changed(conn, cycle.window.lower, cycle.window.upper):
        # A column without its own threshold: TERRITORY_ALERT_BIN_FULL_PCT, as before.
        threshold = st.threshold_pct if st.threshold_set else s.alert_bin_full_pct
        v = rules.bin_full_verdict(st.fill_pct, threshold, margin)
        if v is not None:
            out.append(Condition(st.device_id, "bin_full", v.active, detail=v.detail))
    return out


def sources() -> list[Source]:
    """Every condition source the engine runs, in order. The meters' own leak and burst flags
    still open alerts at once (flag_source); the leak detector keeps them open and clears
    them (leak_source: active wins within a cycle)."""
    return [silence_source, flag_source(), leak_source, bin_full_source]


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
    for kind in store.reading_kinds():
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
