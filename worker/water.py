"""The `water` job: hourly consumption per meter and per district, and the per-night figures
the leak list reads, recomputed for the meters with new readings or declared resets."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from zoneinfo import ZoneInfo

import asyncpg

from analytics import water as wa
from storage import water as ws
from storage.changes import Window
from territory.config import Settings
from worker.jobs import Job

# Meters recomputed per query: bounds the worker's memory on the first build (a meter read
# hourly for 90 days is ~2,200 readings).
BATCH = 200
# Readings before the recomputed hour replayed to restore the jitter reference (analytics/water):
# a dip chain longer than this could only shift one interval by at most the jitter tolerance.
WARMUP_READINGS = 16


def params_for(info: ws.MeterInfo | None, s: Settings) -> wa.MeterParams:
    return wa.MeterParams(
        q4_m3h=info.q4_m3h if info and info.q4_m3h else s.water_q4_m3h,
        register_m3=info.register_m3 if info else None,
        jitter_m3=s.water_jitter_m3,
        estimated_gap_s=s.water_estimated_gap_s,
        measured_interval_s=s.water_measured_interval_s,
    )


async def _recompute(
    conn: asyncpg.Connection, since: dict[str, datetime], s: Settings
) -> tuple[int, dict[str, datetime], dict[str, date]]:
    slices = await ws.readings_to_recompute(conn, since, WARMUP_READINGS)
    ids = list(slices)
    infos = await ws.meter_info(conn, ids)
    resets = await ws.index_resets_of(conn, ids)
    tz = ZoneInfo(s.water_tz)
    results: list[ws.MeterResult] = []
    districts: dict[str, datetime] = {}
    days: dict[str, date] = {}
    for dev, sl in slices.items():
        info = infos.get(dev)
        p = params_for(info, s)
        ivs = wa.intervals(sl.readings, resets.get(dev, ()), p)
        results.append(
            ws.MeterResult(
                dev,
                info.district if info else None,
                sl.h0,
                wa.hourly(ivs, p),
                wa.anomalies(ivs),
            )
        )
        h0 = wa.from_epoch(sl.h0)
        if info and info.district:
            districts[info.district] = min(h0, districts.get(info.district, h0))
        days[dev] = h0.astimezone(tz).date()
    written = await ws.replace_meter_hours(conn, results)
    return written, districts, days


async def run(conn: asyncpg.Connection, window: Window, s: Settings) -> int:
    await ws.no_jit(conn)
    districts = await ws.relabel_districts(conn, window)
    changed = await ws.changed_meters(conn, window)
    written = 0
    days: dict[str, date] = {}
    items: Sequence[tuple[str, datetime]] = sorted(changed.items())
    for i in range(0, len(items), BATCH):
        n, dist, d = await _recompute(conn, dict(items[i : i + BATCH]), s)
        written += n
        days.update(d)
        for k, v in dist.items():
            districts[k] = min(v, districts.get(k, v))
    await ws.refresh_district_hours(conn, districts)
    await ws.refresh_meter_days(
        conn, days, s.water_tz, s.water_night_start_hour, s.water_night_end_hour
    )
    return written


JOB = Job("water", run, interval_s=30.0)
