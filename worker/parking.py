"""The `parking` job: keeps `parking_zone_slots` (time-weighted occupancy per zone and 5-minute
slot) in step with the parking sensors' readings.

A new reading of a space changes that space's states from the reading's time up to the space's
next reading (or the freshness window after the newest new reading). The job widens those spans
to whole slots, merges them per zone, and recomputes each merged span of each zone from all the
zone's readings there, replacing the stored slots: running it twice changes nothing, and the
cost follows the new readings, not the history. The first run rebuilds everything.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime

import asyncpg

from analytics.parking import SLOT_S, merge_ranges, slot_seconds
from storage import parking as pq
from storage.changes import Window
from territory.config import Settings
from worker.jobs import Job

JOB_NAME = "parking"


async def run(conn: asyncpg.Connection, window: Window, settings: Settings) -> int:
    fresh = settings.parking_freshness_s
    spans = await pq.affected_spans(conn, window, fresh)
    if window.first_run:
        await pq.clear_zone_slots(conn)
    by_zone: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for s in spans:
        by_zone[s.zone].append((s.lo.timestamp(), s.hi.timestamp()))
    written = 0
    for zone in sorted(by_zone):
        for lo, hi in merge_ranges(by_zone[zone], SLOT_S):
            lo_dt = datetime.fromtimestamp(lo, UTC)
            hi_dt = datetime.fromtimestamp(hi, UTC)
            spaces = await pq.zone_readings(conn, zone, lo_dt, hi_dt, fresh)
            slots = slot_seconds(spaces, lo, hi, SLOT_S)
            await pq.replace_zone_slots(
                conn,
                zone,
                lo_dt,
                hi_dt,
                [(datetime.fromtimestamp(s.start, UTC), s.known_s, s.occupied_s) for s in slots],
            )
            written += len(slots)
    return written


def parking_job() -> Job:
    return Job(JOB_NAME, run, interval_s=5.0)
