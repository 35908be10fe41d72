"""The platform's domain answers scored against the simulated territory's known truth.

Two weeks of a small fleet go the real way: `territory simulate --history 14d --no-live`
publishes through Mosquitto, a running `territory ingest` stores into PostgreSQL, the worker's
derived-data jobs run once, and the API's answers are compared with `simulators.truth`, which
replays the same worlds without their sensors. The window holds the autumn clock change
(Sunday 2026-10-25, a 25-hour day in Europe/Paris).

The fleet's districts and zones get a suffix at registration so that no other test's devices
(the simulator's names are fixed) are counted with them; the simulator's worlds do not depend on
the attributes, so the truth is unchanged.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from fastapi.testclient import TestClient

from devices.kinds import DeviceKind
from simulators.behaviour import ALL_KINDS, PARIS, build_fleet, history
from simulators.truth import FleetTruth, MeterTruth, ground_truth
from territory.config import Settings
from tests.conftest import ingest_env, wait_for
from worker import waste as waste_job
from worker import water as water_job
from worker.parking import parking_job
from worker.service import Worker

pytestmark = pytest.mark.integration

SEED = "known-truth-1"
PREFIX = "truth"  # fixed: the figures printed below are reproducible run to run
SUFFIX = " (truth)"
END = datetime(2026, 10, 30, 12, 0, tzinfo=PARIS)
DAYS = 14
# `--history 14d` is 336 real hours; aware arithmetic in PARIS would add the clock change's hour
EPOCH = (END.astimezone(UTC) - timedelta(days=DAYS)).astimezone(PARIS)
DST_DAY = date(2026, 10, 25)  # clocks go back: 25 hours
SIZES = {DeviceKind.WATER_METER: 100, DeviceKind.WASTE_COLUMN: 12, DeviceKind.PARKING_SENSOR: 24}
TABLES = {
    DeviceKind.WATER_METER: "water_meter_readings",
    DeviceKind.WASTE_COLUMN: "waste_column_readings",
    DeviceKind.PARKING_SENSOR: "parking_sensor_readings",
}
FRESHNESS = timedelta(hours=6.5)  # TERRITORY_PARKING_FRESHNESS_S's default

# The detector's settings (docs/water.md), restated: the truth below is judged by them.
SUSPECTED_LPH = 5.0
LEAK_LPH = 10.0
BURST_LPH = 100.0


def _query(settings: Settings, sql: str, *args: object) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(settings.database_url)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    return asyncio.run(run())


def _local_midnight(d: date) -> datetime:
    return datetime(d.year, d.month, d.day, tzinfo=PARIS)


def _at(d: date, hour: int) -> datetime:
    return datetime(d.year, d.month, d.day, hour, tzinfo=PARIS)


@dataclass(frozen=True)
class Territory:
    truth: FleetTruth
    settings: Settings
    published: int
    seconds: float


@pytest.fixture(scope="module")
def territory(settings: Settings, api: TestClient, ingest: Any) -> Iterator[Territory]:
    fleet = build_fleet(ALL_KINDS, SIZES, seed=SEED, id_prefix=PREFIX, epoch=EPOCH)
    for d in fleet:
        body = d.registration.as_request()
        attrs = dict(body.get("attributes") or {})
        for key in ("district", "zone"):
            if key in attrs:
                attrs[key] = attrs[key] + SUFFIX
        body["attributes"] = attrs
        if body.get("group"):
            body["group"] = body["group"] + SUFFIX
        r = api.post("/devices", json=body)
        assert r.status_code in (201, 409), r.text  # 409: a database kept from an earlier run
    expected = {k: 0 for k in TABLES}
    for m in history(fleet, END, hours=DAYS * 24):
        expected[m.kind] += 1

    started = time.monotonic()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "territory.cli",
            "simulate",
            "--no-register",
            "--history",
            f"{DAYS}d",
            "--history-end",
            END.isoformat(),
            "--epoch",
            EPOCH.isoformat(),
            "--no-live",
            "--water-meters",
            str(SIZES[DeviceKind.WATER_METER]),
            "--waste-columns",
            str(SIZES[DeviceKind.WASTE_COLUMN]),
            "--parking-spaces",
            str(SIZES[DeviceKind.PARKING_SENSOR]),
            "--seed",
            SEED,
            "--id-prefix",
            PREFIX,
        ],
        env=ingest_env(settings),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    match = re.search(r"history\s+(\d+) in", out.stderr)
    assert match, out.stderr[-3000:]
    published = int(match.group(1))
    assert published == sum(expected.values()), (expected, out.stderr[-2000:])

    def stored() -> bool:
        for kind, table in TABLES.items():
            n = _query(
                settings,
                f"SELECT count(*) AS n FROM {table} WHERE device_id LIKE $1",
                f"{PREFIX}-%",
            )[0]["n"]
            if n != expected[kind]:
                return False
        return True

    wait_for(stored, timeout=120, interval=0.5)

    async def derive() -> None:
        w = Worker(
            settings,
            [parking_job(), waste_job.JOB, water_job.JOB],
            margin=timedelta(0),
        )
        try:
            await w.run_once()
        finally:
            await w.close()

    asyncio.run(derive())
    seconds = time.monotonic() - started
    truth = ground_truth(seed=SEED, epoch=EPOCH, end=END, per_kind=SIZES, id_prefix=PREFIX)
    print(f"\nknown truth: {published} readings published, stored and derived in {seconds:.1f}s")
    yield Territory(truth, settings, published, seconds)


# -- water: leaks ---------------------------------------------------------------------------------


def _flow_expectation(m: MeterTruth, day: date) -> str | None:
    """What the flow rules must say of meter `m` on local `day`, from the truth alone; "?" when
    the truth sits on a rule's edge (a leak starting or ending inside a window it is judged
    on). None: no flow rule applies.

    - night rule: a leak under the burst size at ≥ 5 L/h throughout the nights (02:00-05:00)
      of `day` and the two before → `leak` at ≥ 10 L/h, `suspected` from 5 to 10 (sizes are
      within ±8 % of 3, 4, 6, 7, 12, 15, 30, 60 L/h: never within 1 L/h of a threshold, the
      index's resolution);
    - continuous flow: a leak through the whole local day → `suspected` (a healthy home sleeps
      3.5 h a night: never);
    - a burst (≥ 100 L/h) through the night of `day` → `burst`; by day no flow rule sees it
      (an hour of 100 L by day is a bath or a business: docs/water.md).
    Twice-a-day meters have no measured hours: no flow rule applies to them.
    """
    if not m.hourly_data or m.leak is None:
        return None
    leak = m.leak
    ds, de = _local_midnight(day), _local_midnight(day + timedelta(days=1))
    until = leak.until or datetime.max.replace(tzinfo=UTC)
    if leak.since >= de or until <= ds:
        return None
    if leak.flow_lh >= BURST_LPH:
        if leak.since <= _at(day, 2) and until >= _at(day, 5):
            return "burst"
        overlaps_night = leak.since < _at(day, 5) and until > _at(day, 2)
        return "?" if overlaps_night else None
    first_night = _at(day - timedelta(days=2), 2)
    if leak.flow_lh >= SUSPECTED_LPH:
        if leak.since <= first_night and until >= _at(day, 5):
            return "leak" if leak.flow_lh >= LEAK_LPH else "suspected"
        if leak.since <= _at(day, 5):
            return "?"  # fewer than three nights yet, or a night partly without the leak
    if leak.since <= ds and until >= de:
        return "suspected"
    return "?"


_RANK = {None: 0, "suspected": 1, "leak": 2, "burst": 3}


def _flow_status(item: dict[str, Any]) -> str | None:
    """The status the flow rules alone gave an item (its reasons without the meter's alarms).
    The night rule's `leak` needs its last three nights at 10 L/h; a simulated leak's flow is
    constant, so the night of the day itself decides which of the two it is."""
    best: str | None = None
    for reason in item["reasons"]:
        if reason.startswith("night minimum"):
            status = "leak" if (item["night_min_lph"] or 0) >= LEAK_LPH else "suspected"
        elif reason == "continuous flow":
            status = "suspected"
        elif reason == "night minimum at burst flow":
            status = "burst"
        else:
            continue
        if _RANK[status] > _RANK[best]:
            best = status
    return best


def test_leaks_against_truth(territory: Territory, api: TestClient) -> None:
    truth = territory.truth
    first = EPOCH.astimezone(PARIS).date() + timedelta(days=3)
    last = END.astimezone(PARIS).date() - timedelta(days=1)  # the last whole simulated day
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    leakers = [m for m in truth.meters.values() if m.leak is not None]
    assert len(leakers) == 10  # the simulator's known 10 %

    tp = fp = fn = wrong = 0
    alarm_missed: list[tuple[str, date]] = []
    flow_listed_healthy: list[tuple[str, date, Any]] = []
    sparse_listed = 0
    for day in days:
        listed: dict[str, dict[str, Any]] = {}
        for district in truth.district_meters():
            r = api.get("/water/leaks", params={"group": district + SUFFIX, "date": str(day)})
            assert r.status_code == 200, r.text
            for item in r.json()["items"]:
                listed[item["device_id"]] = item
        for m in truth.meters.values():
            item = listed.get(m.device_id)
            got = _flow_status(item) if item else None
            want = _flow_expectation(m, day)
            if want == "?":
                continue
            if want in ("leak", "burst"):
                if got == want:
                    tp += 1
                else:
                    fn += 1
                    print(f"  missed {m.device_id} {day}: want {want}, got {item}")
            elif got in ("leak", "burst"):
                fp += 1
                print(f"  false {got} {m.device_id} {day}: truth {m.leak}, {item}")
            elif want != got:
                wrong += 1
                print(f"  {m.device_id} {day}: want {want}, got {got} ({item})")
            if got is not None and m.leak is None:
                flow_listed_healthy.append((m.device_id, day, item))
            # The meter's own alarm, on every reading after 6 h of leak, always lists it.
            if (
                m.leak is not None
                and m.leak.active(_at(day, 12))
                and (_at(day, 12) - m.leak.since >= timedelta(hours=6))
            ):
                if not m.hourly_data:
                    continue  # its readings may fall before the alarm starts: checked below
                if item is None or item["status"] not in ("leak", "burst"):
                    alarm_missed.append((m.device_id, day))
        # A meter the truth says is not leaking is never listed, whatever its data rate, and a
        # twice-a-day meter only on its own alarms.
        for dev, item in listed.items():
            m = truth.meters[dev]
            if not m.hourly_data:
                assert all(r.startswith("meter alarm") for r in item["reasons"]), item
                sparse_listed += 1
            assert m.leak is not None and m.leak.since < _local_midnight(day + timedelta(days=1)), (
                dev,
                day,
                item,
            )
    recall = tp / (tp + fn) if tp + fn else math.nan
    precision = tp / (tp + fp) if tp + fp else math.nan
    print(
        f"\nleaks (flow rules, {len(days)} days x {len(truth.meters)} meters): "
        f"precision {precision:.3f}, recall {recall:.3f} "
        f"(tp {tp}, fp {fp}, fn {fn}, wrong suspected {wrong}); twice-a-day meters listed on "
        f"their own alarms: {sparse_listed} meter-days"
    )
    assert tp + fn >= 20  # enough visible leak-days to score
    assert recall >= 0.9
    assert precision >= 0.9
    assert wrong == 0
    assert not flow_listed_healthy
    assert not alarm_missed


# -- water: consumption ---------------------------------------------------------------------------


def test_district_daily_consumption_against_truth(territory: Territory, api: TestClient) -> None:
    """A day's volume is the interpolated index at its end minus at its start; the truth is the
    water actually drawn between the two midnights. They differ only by how the use inside the
    two readings' intervals that straddle each midnight was split (linearly by the platform,
    as it happened in the truth) and by the index's 1-litre resolution, so per meter and day
    the difference is at most the truth's volume in those two intervals plus 2 L. The
    comparison asserts that bound summed over the district, and prints the relative error."""
    truth = territory.truth
    readings: dict[str, list[datetime]] = {}
    for row in _query(
        territory.settings,
        "SELECT device_id, ts FROM water_meter_readings WHERE device_id LIKE $1 ORDER BY ts",
        f"{PREFIX}-wm-%",
    ):
        readings.setdefault(row["device_id"], []).append(row["ts"])

    def straddle_l(m: MeterTruth, t: datetime) -> float:
        ts = readings[m.device_id]
        i = bisect.bisect_right(ts, t)
        if i == 0 or i >= len(ts):
            return math.inf
        if ts[i - 1] == t:
            return 0.0
        return m.consumption_l(ts[i - 1], ts[i])

    first = EPOCH.astimezone(PARIS).date() + timedelta(days=1)
    last = END.astimezone(PARIS).date() - timedelta(days=1)
    assert first < DST_DAY < last
    worst = 0.0
    dst_checked = 0
    for district, meters in truth.district_meters().items():
        r = api.get(
            "/water/consumption",
            params={
                "group": district + SUFFIX,
                "bucket": "day",
                "start": _local_midnight(first).isoformat(),
                "end": _local_midnight(last + timedelta(days=1)).isoformat(),
            },
        )
        assert r.status_code == 200, r.text
        items = r.json()["items"]
        assert len(items) == (last - first).days + 1
        for k, item in enumerate(items):
            day = first + timedelta(days=k)
            ds, de = _local_midnight(day), _local_midnight(day + timedelta(days=1))
            assert datetime.fromisoformat(item["start"]) == ds
            assert item["meters"] == len(meters)
            want_l = sum(truth.meters[d].consumption_l(ds, de) for d in meters)
            bound_l = sum(
                straddle_l(truth.meters[d], ds) + straddle_l(truth.meters[d], de) + 2.0
                for d in meters
            )
            got_l = item["volume_m3"] * 1000
            assert abs(got_l - want_l) <= bound_l, (district, day, got_l, want_l, bound_l)
            worst = max(worst, abs(got_l - want_l) / want_l)
            if day == DST_DAY:
                assert de.astimezone(UTC) - ds.astimezone(UTC) == timedelta(hours=25)
                print(
                    f"  {district} {day} (25 h): {got_l:.0f} L, truth {want_l:.0f} L, "
                    f"bound {bound_l:.0f} L"
                )
                dst_checked += 1
    assert dst_checked == len(truth.district_meters())
    # Over the whole window only its two ends are split: the total is the truth's within them.
    for district, meters in truth.district_meters().items():
        r = api.get(
            "/water/consumption",
            params={
                "group": district + SUFFIX,
                "bucket": "day",
                "start": _local_midnight(first).isoformat(),
                "end": _local_midnight(last + timedelta(days=1)).isoformat(),
            },
        )
        got = sum(i["volume_m3"] for i in r.json()["items"]) * 1000
        a, b = _local_midnight(first), _local_midnight(last + timedelta(days=1))
        want = sum(truth.meters[d].consumption_l(a, b) for d in meters)
        bound = sum(
            straddle_l(truth.meters[d], a) + straddle_l(truth.meters[d], b) + 2.0 for d in meters
        )
        assert abs(got - want) <= bound, (district, got, want, bound)
    print(f"\nconsumption: worst district-day relative error {worst:.2%}")


# -- waste ----------------------------------------------------------------------------------------


def test_waste_forecasts_and_emptyings_against_truth(territory: Territory, api: TestClient) -> None:
    truth = territory.truth
    # The ETA looks past the history's end: the same worlds, replayed further.
    later = ground_truth(
        seed=SEED,
        epoch=EPOCH,
        end=END + timedelta(days=45),
        per_kind={DeviceKind.WASTE_COLUMN: SIZES[DeviceKind.WASTE_COLUMN]},
        kinds=(DeviceKind.WASTE_COLUMN,),
        id_prefix=PREFIX,
    )
    errors_h: list[float] = []
    for dev, col in later.columns.items():
        r = api.get(f"/waste/columns/{dev}/forecast")
        assert r.status_code == 200, r.text
        f = r.json()
        last = _query(
            territory.settings,
            "SELECT max(ts) AS ts FROM waste_column_readings WHERE device_id = $1",
            dev,
        )[0]["ts"]
        assert last is not None
        emptied = col.last_emptied(last)
        crossed = [
            t for t in col.reached_threshold if t <= last and (emptied is None or t > emptied)
        ]
        want = crossed[-1] if crossed else col.next_reached_threshold(last)
        if want is None or f["eta_threshold"] is None:
            print(f"  {dev}: no comparison (truth {want}, forecast {f['eta_threshold']})")
            continue
        got = datetime.fromisoformat(f["eta_threshold"])
        err = (got - want).total_seconds() / 3600
        errors_h.append(abs(err))
        print(
            f"  {dev} {col.stream:9s} fill {f['fill_pct']}% rate {f['rate_pct_per_day']} "
            f"({f['rate_source']}, {f['reliability']}): eta {got:%m-%d %H:%M} "
            f"truth {want.astimezone(PARIS):%m-%d %H:%M} error {err:+.1f} h"
        )
    mean = statistics.fmean(errors_h)
    median = statistics.median(errors_h)
    print(
        f"\nwaste ETA to threshold: {len(errors_h)} columns, mean abs error {mean:.1f} h, "
        f"median {median:.1f} h"
    )
    assert len(errors_h) >= len(later.columns) * 2 // 3
    assert median <= 12.0
    assert mean <= 24.0

    # Emptyings: every simulated one the sensor could see is detected, within 3 hours.
    matched = missed = 0
    extra: list[datetime] = []
    tol = timedelta(hours=3)
    for dev, col in truth.columns.items():
        rows = _query(
            territory.settings,
            "SELECT ts FROM waste_emptyings WHERE device_id = $1 AND source = 'sensor' ORDER BY ts",
            dev,
        )
        found = [r["ts"] for r in rows]
        seen = _query(
            territory.settings,
            "SELECT min(ts) AS a, max(ts) AS b FROM waste_column_readings WHERE device_id = $1",
            dev,
        )[0]
        simulated = [t for t in col.emptied if seen["a"] + tol < t < seen["b"] - 2 * tol]
        used: set[datetime] = set()
        for t in simulated:
            near = [f for f in found if abs(f - t) <= tol and f not in used]
            if near:
                used.add(near[0])
                matched += 1
            else:
                missed += 1
                print(f"  emptying missed: {dev} {t.astimezone(PARIS)}")
        for f in found:
            if f not in used and seen["a"] + tol < f < seen["b"] - 2 * tol:
                extra.append(f)
                print(
                    f"  emptying not simulated: {dev} {f.astimezone(PARIS)}, truth fill "
                    f"{col.fill_at(f - tol):.0f}% 3 h before, {col.fill_at(f + tol):.0f}% after"
                )
    recall = matched / (matched + missed)
    precision = matched / (matched + len(extra))
    print(
        f"waste emptyings: {matched} matched within 3 h, {missed} missed, {len(extra)} extra "
        f"(precision {precision:.3f}, recall {recall:.3f})"
    )
    # Two pile readings in a row just after a deposit (each reading has a 15 % chance of one
    # within 20 min of a deposit), then the true level, look like a column emptied from 27 %
    # to 8 %: the single-reading spike test cannot tell, so precision is not 1.
    assert matched >= 20
    assert recall >= 0.95
    assert precision >= 0.9


# -- parking --------------------------------------------------------------------------------------


def test_parking_zone_counts_and_occupancy_against_truth(
    territory: Territory, api: TestClient
) -> None:
    truth = territory.truth
    heard: dict[str, list[datetime]] = {}
    for row in _query(
        territory.settings,
        "SELECT device_id, ts FROM parking_sensor_readings WHERE device_id LIKE $1 ORDER BY ts",
        f"{PREFIX}-ps-%",
    ):
        heard.setdefault(row["device_id"], []).append(row["ts"])
    silent = [s for s in truth.spaces.values() if s.silent_since is not None]

    def expected(zone: str, t: datetime) -> dict[str, int]:
        counts = {"free": 0, "occupied": 0, "unknown": 0}
        for s in truth.spaces.values():
            if s.zone != zone:
                continue
            ts = heard.get(s.device_id, [])
            i = bisect.bisect_right(ts, t)
            if i == 0 or t - ts[i - 1] >= FRESHNESS:
                counts["unknown"] += 1
            else:
                # a silent sensor still fresh shows what it said last, whatever happened since
                counts["occupied" if s.occupied_at(ts[i - 1]) else "free"] += 1
        return counts

    instants = [END - timedelta(days=d, hours=h) for d in (0, 1, 3, 6, 9) for h in (0.5, 7, 15)]
    if silent:
        s0 = silent[0].silent_since
        assert s0 is not None
        instants += [s0 + FRESHNESS + timedelta(hours=2), s0 + timedelta(minutes=30)]
    zones = sorted({s.zone for s in truth.spaces.values()})
    unknown_seen = 0
    for t in instants:
        r = api.get("/parking/zones", params={"at": t.isoformat()})
        assert r.status_code == 200, r.text
        got = {z["zone"]: z for z in r.json()["items"]}
        for zone in zones:
            z = got[zone + SUFFIX]
            want = expected(zone, t)
            assert {k: z[k] for k in want} == want, (zone, t, z, want)
            assert z["total"] == truth.zone_counts(zone, t).total
            unknown_seen += z["unknown"]
    print(
        f"\nparking: zone counts equal to the truth at {len(instants)} instants in "
        f"{len(zones)} zones ({len(silent)} sensors went silent; {unknown_seen} unknown counted)"
    )
    if silent:
        assert unknown_seen > 0

    # Occupancy history, hour by hour over the last two days, sampled from the truth each minute.
    start = END.replace(minute=0) - timedelta(days=2)
    worst = 0.0
    for zone in zones:
        r = api.get(
            f"/parking/zones/{zone + SUFFIX}/occupancy",
            params={"start": start.isoformat(), "end": END.isoformat(), "bucket": "1h"},
        )
        assert r.status_code == 200, r.text
        for item in r.json()["items"]:
            a = datetime.fromisoformat(item["start"])
            occ = known = 0
            for k in range(60):
                t = a + timedelta(minutes=k, seconds=30)
                for s in truth.spaces.values():
                    if s.zone != zone:
                        continue
                    ts = heard.get(s.device_id, [])
                    i = bisect.bisect_right(ts, t)
                    if i and t - ts[i - 1] < FRESHNESS:
                        known += 1
                        occ += s.occupied_at(ts[i - 1])
            if not known:
                assert item["occupancy"] is None
                continue
            assert item["occupancy"] is not None
            diff = abs(item["occupancy"] - occ / known)
            worst = max(worst, diff)
            assert diff <= 0.03, (zone, a, item, occ / known)
    print(f"parking occupancy per hour: worst difference from the truth {worst:.4f}")
