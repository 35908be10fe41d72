"""The waste job: keeps each column's emptyings and forecast current (docs/waste.md).

A column is recomputed when it has new readings or a new crew confirmation, from its last
emptying that nothing new can undo (storage.waste.column_inputs), never from the whole history
once it has one: the cost of a run follows the columns that reported, times the length of their
current cycle. Columns without a rate of their own then take their stream's median.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

from analytics.waste import (
    CREW_MERGE,
    ColumnParams,
    Point,
    eta,
    forecast_column,
    reading_fill,
    valid_points,
    with_stream_rate,
)
from storage import waste as wq
from storage.changes import Window, changed_devices
from territory.config import Settings
from worker.jobs import Job


async def recompute_column(
    conn: asyncpg.Connection, device: wq.ColumnDevice, since: datetime
) -> None:
    params = ColumnParams.from_attributes(device.attributes)
    inputs = await wq.column_inputs(conn, device.id, since, CREW_MERGE)
    context: Point | None = None
    for r in inputs.before:
        fill = reading_fill(r, params)
        if fill is not None:
            context = Point(r.ts, fill)
            break
    f = forecast_column(
        valid_points(inputs.readings, params),
        inputs.crew,
        params,
        context=context,
        anchor=inputs.anchor,
        past_rates=inputs.past_rates,
    )
    last = inputs.readings[-1] if inputs.readings else (inputs.before[0] if inputs.before else None)
    await wq.save_column(conn, device.id, inputs.anchor, f, last)


async def refresh_stream_rates(conn: asyncpg.Connection) -> int:
    medians = await wq.stream_medians(conn)
    rows = await wq.fallback_columns(conn)
    changed = []
    for row in rows:
        before = (row.forecast.rate_pct_per_day, row.forecast.eta_threshold)
        row.forecast.rate_pct_per_day = None
        row.forecast.rate_source = None
        f = with_stream_rate(row.forecast, medians.get(row.stream))
        if f.rate_source is None and f.fill_pct is not None and f.fill_ts is not None:
            f.eta_threshold = eta(f.fill_pct, f.fill_ts, None, f.threshold_pct)
            f.reliability = "low"
        if (f.rate_pct_per_day, f.eta_threshold) != before:
            changed.append(row)
    if changed:
        await wq.set_stream_rates(conn, changed)
    return len(changed)


async def run(conn: asyncpg.Connection, window: Window, settings: Settings) -> int:
    since = await changed_devices(conn, "waste_column_readings", window)
    for dev, ts in (await changed_devices(conn, "waste_crew_emptied", window)).items():
        since[dev] = min(ts, since.get(dev, ts))
    columns = await wq.waste_columns(conn, list(since))
    for dev_id in sorted(columns):
        await recompute_column(conn, columns[dev_id], since[dev_id])
    await refresh_stream_rates(conn)
    return len(columns)


JOB = Job("waste", run, interval_s=10.0)
