"""The simulated territory behaves as the domain notes say, and its ground truth is exact.

Pure and fast: worlds are replayed in memory, no broker, no database. The expected figures come
from docs/simulation.md (148 L per person per day, days to 80 % per stream, Quimper's parking
demand curve), not from the code under test.
"""

from __future__ import annotations

import argparse
import functools
import itertools
from collections import Counter
from datetime import date, datetime, timedelta
from pathlib import Path
from statistics import mean

import pytest

from devices.attributes import WasteStream
from devices.kinds import DeviceKind
from simulators.behaviour import (
    DEV_FLEET,
    PARIS,
    ROUNDS,
    STREAMS,
    TWICE_A_DAY_S,
    ParkingSpace,
    WasteColumn,
    WaterMeter,
    build_fleet,
    history,
)
from simulators.cli import add_arguments, fleet_sizes, parse_duration_hours
from simulators.daytypes import day_type, easter_sunday, french_holidays
from simulators.truth import FleetTruth, ground_truth
from territory.cli import _simulator_epoch, build_parser

EPOCH = datetime(2026, 3, 2, tzinfo=PARIS)  # a Monday, winter time
HOUR = timedelta(hours=1)


def _meters(n: int, seed: int | str = 1) -> list[WaterMeter]:
    fleet = build_fleet([DeviceKind.WATER_METER], n, seed=seed, epoch=EPOCH)
    return [m for m in fleet if isinstance(m, WaterMeter)]


def _hourly_litres(m: WaterMeter, day: date) -> list[float]:
    """Litres per local clock hour of `day`, from the meter's own (litre-rounded) index."""
    start = datetime.combine(day, datetime.min.time(), tzinfo=PARIS)
    index = []
    for h in range(25):
        payload = m.next_payload(start + HOUR * h)
        assert payload is not None
        index.append(float(payload["index_m3"]))
    return [round((b - a) * 1000, 3) for a, b in itertools.pairwise(index)]


# --- water ----------------------------------------------------------------------------------


def test_healthy_homes_have_a_zero_hour_every_night() -> None:
    meters = [m for m in _meters(80) if m.profile == "household" and m.leak is None]
    assert len(meters) > 50
    for m in meters:
        for d in range(14):
            litres = _hourly_litres(m, EPOCH.date() + timedelta(days=d))
            night = litres[2:5]  # 02:00-05:00 local
            assert min(night) == 0.0, (m.device_id, d, night)
            assert sum(litres) > 0


def test_businesses_never_draw_water_for_a_whole_day() -> None:
    meters = [m for m in _meters(150) if m.profile == "business"]
    assert len(meters) >= 10
    for m in meters:
        for d in range(7):
            assert min(_hourly_litres(m, EPOCH.date() + timedelta(days=d))) == 0.0


def test_a_month_of_households_uses_148_litres_per_person_per_day() -> None:
    truth = ground_truth(
        seed=3,
        epoch=EPOCH,
        end=EPOCH + timedelta(days=30),
        per_kind=300,
        kinds=[DeviceKind.WATER_METER],
    )
    homes = [m for m in truth.meters.values() if m.profile == "household" and m.leak is None]
    litres = sum(m.consumption_l(EPOCH, truth.end) for m in homes)
    persons = sum(m.persons for m in homes)
    assert 140 <= litres / persons / 30 <= 156
    assert 2.3 <= persons / len(homes) <= 2.8  # ~2.5 people per home


def test_the_hourly_shape_of_a_household_day() -> None:
    truth = ground_truth(
        seed=4,
        epoch=EPOCH,
        end=EPOCH + timedelta(days=7),
        per_kind=200,
        kinds=[DeviceKind.WATER_METER],
    )
    homes = [m for m in truth.meters.values() if m.profile == "household" and m.leak is None]
    by_hour = [0.0] * 24
    for m in homes:
        for d in range(5):  # Monday to Friday
            for h in range(24):
                t = EPOCH + timedelta(days=d, hours=h)
                by_hour[h] += m.consumption_l(t, t + HOUR)
    share = [v / sum(by_hour) * 100 for v in by_hour]
    assert share[8] > 5 and share[20] > 5  # the morning and evening peaks (7.5 %, 7.3 %)
    assert sum(share[2:5]) < 1.5  # asleep (0.6 + 0.5 + 0.6 %, less where nobody stirs)
    assert share[8] > 3 * share[15] / 2  # 7.5 % against 3.5 %


def test_about_one_home_in_ten_leaks_at_every_size() -> None:
    truth = ground_truth(
        seed=5,
        epoch=EPOCH,
        end=EPOCH + timedelta(days=10),
        per_kind=200,
        kinds=[DeviceKind.WATER_METER],
    )
    leaking = truth.leaked_ever()
    assert 16 <= len(leaking) <= 24  # 10 % of 200
    assert all(m.profile == "household" for m in leaking)
    flows = [m.leak.flow_lh for m in leaking if m.leak is not None]
    assert any(f < 5 for f in flows)  # under every threshold
    assert any(5 <= f < 10 for f in flows)  # suspected
    assert any(10 <= f < 100 for f in flows)  # leak
    assert any(f >= 100 for f in flows)  # burst
    for m in leaking:
        assert m.leak is not None
        if m.leak.flow_lh >= 100:  # bursts are repaired within hours
            assert m.leak.until is not None and m.leak.until - m.leak.since <= timedelta(hours=8)
        else:
            assert m.leak.until is None


def test_leaking_homes_have_a_night_minimum_at_least_their_leak() -> None:
    meters = [m for m in _meters(200, seed=6) if m.leak is not None and m.leak.until is None]
    assert len(meters) >= 12
    for m in meters:
        assert m.leak is not None
        first = (max(m.leak.since, EPOCH) + timedelta(days=1)).astimezone(PARIS).date()
        for d in range(5):
            night = _hourly_litres(m, first + timedelta(days=d))[2:5]
            assert min(night) >= m.leak.flow_lh - 1.0  # the index is read to the litre


def test_the_default_fleet_publishes_every_district() -> None:
    truth = ground_truth(seed=0, epoch=EPOCH, end=EPOCH + HOUR, per_kind=DEV_FLEET)
    districts = truth.district_meters()
    assert set(districts) == {
        "Centre-ville",
        "Kerfeunteun",
        "Ergué-Armel",
        "Penhars",
        "Moulin-Vert",
    }
    assert all(len(ids) >= 10 for ids in districts.values())
    cadences = Counter(m.cadence_s for m in truth.meters.values())
    assert cadences[3600] > cadences[900] > cadences[TWICE_A_DAY_S] > 0
    assert 4 <= len([m for m in truth.meters.values() if m.leak is not None]) <= 8


def test_twice_a_day_modules_send_only_their_index() -> None:
    meter = next(m for m in _meters(100) if m.cadence_s == TWICE_A_DAY_S)
    sent = list(history([meter], EPOCH + timedelta(days=3), hours=72))
    assert len(sent) == 6
    assert all(set(s.payload) <= {"ts", "index_m3", "battery_pct", "alarms"} for s in sent)


def test_readings_are_the_truth_whenever_and_however_often_they_are_asked() -> None:
    end = EPOCH + timedelta(days=3)
    truth = ground_truth(seed=7, epoch=EPOCH, end=end, per_kind=6)
    polled = build_fleet(per_kind=6, seed=7, epoch=EPOCH)
    for d in polled:  # ask at odd times first: it must not change what happens later
        for i in range(50):
            d.next_payload(EPOCH + timedelta(minutes=37 * i))
    fresh = build_fleet(per_kind=6, seed=7, epoch=EPOCH)
    ts = EPOCH + timedelta(days=2, hours=5, minutes=11)
    for a, b in zip(polled, fresh, strict=True):
        if isinstance(a, WaterMeter):
            pa, pb = a.next_payload(ts), b.next_payload(ts)
            assert pa == pb
            assert pa is not None and pa["index_m3"] == round(
                truth.meters[a.device_id].index_m3(ts), 3
            )
        elif isinstance(a, WasteColumn) and isinstance(b, WasteColumn):
            assert a.next_payload(ts) == b.next_payload(ts)
            assert a.fill_pct == b.fill_pct == truth.columns[a.device_id].fill_at(ts)
        elif isinstance(a, ParkingSpace) and isinstance(b, ParkingSpace):
            a.next_payload(ts)
            b.next_payload(ts)
            assert a.occupied == b.occupied == truth.spaces[a.device_id].occupied_at(ts)


# --- waste ----------------------------------------------------------------------------------


def test_columns_reach_80_percent_within_their_streams_range() -> None:
    columns = [
        c
        for c in build_fleet([DeviceKind.WASTE_COLUMN], 160, seed=8, epoch=EPOCH)
        if isinstance(c, WasteColumn)
    ]
    days: dict[str, list[float]] = {}
    for c in columns:
        c.round_name = None  # no crew: let it fill from empty
        c.on_demand_pct = None
        c._fill = 0.0
        c.incidents = []
        c.fill_at((EPOCH + timedelta(days=35)).timestamp())
        assert c.reached_threshold, c.device_id
        days.setdefault(c.stream, []).append((c.reached_threshold[0] - EPOCH.timestamp()) / 86400)
    expected: dict[WasteStream, tuple[int, int]] = {
        "residual": (3, 7),
        "packaging": (7, 14),
        "paper": (7, 14),
        "glass": (14, 30),
    }
    assert set(days) == set(expected)
    for stream, (lo, hi) in expected.items():
        assert all(lo <= d <= hi for d in days[stream]), (
            stream,
            min(days[stream]),
            max(days[stream]),
        )
        assert STREAMS[stream].days_to_80 == (lo, hi)


def test_columns_are_emptied_by_their_round_and_their_truth_is_consistent() -> None:
    end = EPOCH + timedelta(days=28)
    truth = ground_truth(seed=9, epoch=EPOCH, end=end, per_kind=40, kinds=[DeviceKind.WASTE_COLUMN])
    reached = 0
    for c in truth.columns.values():
        rnd = ROUNDS[c.round]
        assert rnd.stream == c.stream
        assert c.emptied, c.device_id
        on_schedule = 0
        for t in c.emptied:
            local = t.astimezone(PARIS)
            assert 6 <= local.hour < 18 and local.weekday() < 6  # crews' hours
            assert c.fill_at(t) <= 2.0  # emptied (what is left sticks to the walls)
            on_schedule += rnd.runs_on(local.date())
        assert on_schedule >= len(c.emptied) / 2
        gaps = [b - a for a, b in itertools.pairwise(c.emptied)]
        assert all(g <= timedelta(days=7 * rnd.every_weeks) for g in gaps)
        for t in c.reached_threshold:
            assert c.fill_at(t - timedelta(seconds=1)) < c.threshold_pct <= c.fill_at(t)
            emptied_before = c.last_emptied(t)
            if emptied_before is not None:
                assert c.next_reached_threshold(emptied_before) == t
        reached += len(c.reached_threshold)
    assert reached >= 20  # fast columns fill before their crew comes: the collection list


def test_column_readings_are_noisy_like_the_field() -> None:
    end = EPOCH + timedelta(days=14)
    columns = [
        c
        for c in build_fleet([DeviceKind.WASTE_COLUMN], 40, seed=10, epoch=EPOCH)
        if isinstance(c, WasteColumn)
    ]
    depth = {c.device_id: c.depth_mm for c in columns}
    truth = ground_truth(
        seed=10, epoch=EPOCH, end=end, per_kind=40, kinds=[DeviceKind.WASTE_COLUMN]
    )
    sent = list(history(columns, end, hours=14 * 24))
    assert len(sent) == 40 * 14 * 24
    blind = beyond = lid = spikes = close = 0
    for msg in sent:
        p = msg.payload
        ts = datetime.fromisoformat(p["ts"])
        true_fill = truth.columns[msg.device_id].fill_at(ts)
        if "distance_mm" in p:
            d = p["distance_mm"]
            blind += d < 200
            beyond += d > depth[msg.device_id] + 100
            shown = (depth[msg.device_id] - d) / depth[msg.device_id] * 100
        else:
            shown = p["fill_pct"]
        lid += "lid_open" in p.get("alarms", [])
        spikes += shown > true_fill + 8
        close += abs(shown - true_fill) < 5 or true_fill > 85  # the blind zone caps fills
    n = len(sent)
    assert 0 < blind < 0.03 * n and 0 < beyond < 0.03 * n and 0 < lid < 0.03 * n
    assert 0 < spikes < 0.1 * n
    assert close > 0.85 * n


def test_a_few_known_columns_burn_or_tip_over() -> None:
    truth = ground_truth(
        seed=0,
        epoch=EPOCH,
        end=EPOCH + timedelta(days=30),
        per_kind=DEV_FLEET,
        kinds=[DeviceKind.WASTE_COLUMN],
    )
    incidents = [(c.device_id, i) for c in truth.columns.values() for i in c.incidents]
    kinds = Counter(i.kind for _, i in incidents)
    assert 1 <= kinds["fire"] <= 3 and 1 <= kinds["tilt"] <= 4
    columns = {
        c.device_id: c
        for c in build_fleet([DeviceKind.WASTE_COLUMN], 40, seed=0, epoch=EPOCH)
        if isinstance(c, WasteColumn)
    }
    for device_id, inc in incidents:
        c = columns[device_id]
        p = c.next_payload(inc.since + timedelta(minutes=10))
        assert p is not None and inc.kind in p["alarms"]
        if inc.kind == "fire":
            assert p["temperature_c"] >= 55
        assert inc.until is not None  # a fire is put out; a tipped column set upright
        after = c.next_payload(inc.until + timedelta(minutes=1))
        assert after is not None and inc.kind not in after.get("alarms", [])


# --- parking --------------------------------------------------------------------------------


@functools.cache
def _parking_truth() -> FleetTruth:
    return ground_truth(
        seed=11,
        epoch=EPOCH,
        end=EPOCH + timedelta(weeks=4),
        per_kind=200,
        kinds=[DeviceKind.PARKING_SENSOR],
    )


def _occupancy(zone: str) -> dict[tuple[str, int], float]:
    """Mean true occupancy per (day type, local hour) over four weeks."""
    truth = _parking_truth()
    end = truth.end
    spaces = [s for s in truth.spaces.values() if s.zone == zone]
    acc: dict[tuple[str, int], list[bool]] = {}
    t = EPOCH + timedelta(days=1)
    while t < end:
        local = t.astimezone(PARIS)
        key = (day_type(local.date()), local.hour)
        acc.setdefault(key, []).extend(s.occupied_at(t) for s in spaces)
        t += timedelta(minutes=15)
    return {k: mean(v) for k, v in acc.items()}


def test_parking_follows_quimper_centres_demand_curve() -> None:
    occ = _occupancy("Centre-ville")

    def hours(day: str, a: int, b: int) -> float:
        return mean(occ[(day, h)] for h in range(a, b))

    afternoon, early = hours("weekday", 14, 17), hours("weekday", 7, 9)
    assert afternoon > 0.8  # demand 1.0
    assert early < 0.7 * afternoon  # demand 0.50 (the centre fills up later)
    assert hours("weekday", 9, 12) > early  # 0.87
    assert hours("weekday", 20, 22) < afternoon  # 0.77
    assert hours("sunday_holiday", 14, 17) < 0.6 * afternoon
    assert hours("weekday", 2, 5) < 0.3


def test_one_car_park_is_full_on_working_days() -> None:
    occ = _occupancy("Parking de la Providence")
    assert mean(occ[("weekday", h)] for h in range(10, 17)) > 0.9


def test_parking_messages_are_the_truth_with_heartbeats_and_silent_sensors() -> None:
    end = EPOCH + timedelta(days=5)
    truth = ground_truth(
        seed=12, epoch=EPOCH, end=end, per_kind=60, kinds=[DeviceKind.PARKING_SENSOR]
    )
    fleet = build_fleet([DeviceKind.PARKING_SENSOR], 60, seed=12, epoch=EPOCH)
    sent: dict[str, list[tuple[datetime, bool]]] = {}
    for msg in history(fleet, end, hours=5 * 24):
        ts = datetime.fromisoformat(msg.payload["ts"])
        sent.setdefault(msg.device_id, []).append((ts, msg.payload["occupied"]))
    silent = [s for s in truth.spaces.values() if s.silent_since is not None]
    assert 1 <= len(silent) <= 4
    for zone in {s.zone for s in truth.spaces.values()}:
        counts = truth.zone_counts(zone, end)
        assert counts.total == 15 and counts.occupied + counts.free == counts.total
        assert counts.silent == sum(s.zone == zone for s in silent)
        assert counts.reporting_occupied + counts.reporting_free == 15 - counts.silent
    for s in truth.spaces.values():
        msgs = sent[s.device_id]
        assert all(occ == s.occupied_at(ts) for ts, occ in msgs)
        stop = s.silent_since or end
        assert all(ts < stop for ts, _ in msgs)
        # Every change before it went silent was reported when it happened, to the ms.
        reported = {ts for ts, _ in msgs}
        changes = [t for t, _ in s.changes if EPOCH < t < stop]
        assert all(t in reported for t in changes)
        # Never more than 3 h without a message while alive.
        stamps = [EPOCH] + [ts for ts, _ in msgs]
        assert all(b - a <= timedelta(hours=3) for a, b in itertools.pairwise(stamps))


# --- determinism ----------------------------------------------------------------------------


def test_same_seed_same_history_other_seed_other_history() -> None:
    def bodies(seed: str) -> list[dict[str, object]]:
        fleet = build_fleet(per_kind=5, seed=seed, epoch=EPOCH)
        return [m.payload for m in history(fleet, EPOCH + timedelta(days=2), hours=48)]

    assert bodies("a") == bodies("a")
    assert bodies("a") != bodies("b")


def test_history_hours_are_elapsed_hours_across_a_clock_change() -> None:
    """The same end, in Europe/Paris or at its fixed offset, gives the same readings: 48 h
    before 2026-10-26 12:00 (the clocks went back on the 25th) is 2026-10-24 13:00 CEST."""
    end = datetime(2026, 10, 26, 12, 0, tzinfo=PARIS)
    fixed = datetime.fromisoformat(end.isoformat())
    epoch = datetime(2026, 10, 24, 13, 0, tzinfo=PARIS)

    def readings(e: datetime) -> list[tuple[str, str]]:
        fleet = build_fleet(per_kind=3, seed="dst", epoch=epoch)
        return [(m.device_id, str(m.payload["ts"])) for m in history(fleet, e, hours=48)]

    in_paris = readings(end)
    assert in_paris == readings(fixed)
    assert min(datetime.fromisoformat(ts) for _, ts in in_paris) >= epoch


# --- day types ------------------------------------------------------------------------------


def test_french_day_types() -> None:
    assert easter_sunday(2026) == date(2026, 4, 5)
    assert easter_sunday(2027) == date(2027, 3, 28)
    holidays = french_holidays(2026)
    assert len(holidays) == 11
    assert {date(2026, 4, 6), date(2026, 5, 14), date(2026, 5, 25)} <= holidays  # Easter
    # Monday, Ascension, Whit Monday
    assert day_type(date(2026, 5, 14)) == "sunday_holiday"  # a Thursday
    assert day_type(date(2026, 5, 16)) == "saturday"
    assert day_type(date(2026, 5, 15)) == "weekday"


# --- command line ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "hours"),
    [
        ("30d", 720.0),
        ("7d", 168.0),
        ("12h", 12.0),
        ("90m", 1.5),
        ("0", 0.0),
        ("36", 36.0),
        ("1.5d", 36.0),
        (" 2D ", 48.0),
    ],
)
def test_history_durations(text: str, hours: float) -> None:
    assert parse_duration_hours(text) == hours


@pytest.mark.parametrize("bad", ["", "d", "-1d", "3w", "1d2h", "abc"])
def test_bad_history_durations_are_refused(bad: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration_hours(bad)


def test_simulate_history_options() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        [
            "--history",
            "2d",
            "--no-live",
            "--water-meters",
            "60",
            "--parking-spaces",
            "120",
            "--devices",
            "40",
            "--history-end",
            "2026-11-30T12:00:00",
            "--pace",
            "schedule",
        ]
    )
    assert args.history_hours == 48 and args.no_live and args.pace == "schedule"
    assert args.history_end == datetime(2026, 11, 30, 12, tzinfo=PARIS)
    assert fleet_sizes(args) == {
        DeviceKind.WATER_METER: 60,
        DeviceKind.WASTE_COLUMN: 40,
        DeviceKind.PARKING_SENSOR: 120,
    }
    assert parser.parse_args(["--backfill-hours", "5"]).history_hours == 5  # former name
    with pytest.raises(SystemExit):
        parser.parse_args(["--history", "soon"])


def test_run_seeds_a_month_of_history_by_default(tmp_path: Path) -> None:
    parser = build_parser()
    args = parser.parse_args(["run"])
    assert args.history == "30d" and args.sim_devices is None
    assert parser.parse_args(["run", "--history", "0"]).history == "0"
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "--history", "a while"])
    # The world's epoch is kept across runs, so a restart replays the same world...
    first = _simulator_epoch(tmp_path, 30 * 24)
    assert _simulator_epoch(tmp_path, 30 * 24) == first
    assert _simulator_epoch(tmp_path, 24) == first
    # ...and moves back only for a longer history than the world has.
    longer = _simulator_epoch(tmp_path, 60 * 24)
    assert first - longer >= timedelta(days=29)


def test_the_running_index_agrees_with_the_day_by_day_sum_across_the_clock_change() -> None:
    epoch = datetime(2026, 3, 25, tzinfo=PARIS)  # summer time starts on Sunday the 29th
    meters = [
        m
        for m in build_fleet([DeviceKind.WATER_METER], 30, seed=13, epoch=epoch)
        if isinstance(m, WaterMeter)
    ]
    for m in meters:
        previous = m.index0_m3
        for h in range(0, 10 * 24, 7):
            t = (epoch + timedelta(hours=h)).timestamp()
            index = m.index_at(t)  # the running sum
            exact = (
                m.index0_m3
                + (m.used_l(epoch.timestamp(), t) + m.leaked_l(epoch.timestamp(), t)) / 1000
            )
            assert index == pytest.approx(exact, abs=1e-9)
            assert index >= previous
            previous = index
    sent = list(
        history(
            build_fleet(per_kind=5, seed=13, epoch=epoch), epoch + timedelta(days=7), hours=7 * 24
        )
    )
    offsets = {m.payload["ts"][-6:] for m in sent}
    assert offsets == {"+01:00", "+02:00"}


def _linear_buckets(readings: list[tuple[float, float]], start: float, hours: int) -> list[float]:
    """Hourly litres from (time, index m³) readings, each delta spread evenly over its interval:
    what the platform computes from a meter's own readings (docs: Water, consumption)."""
    buckets = [0.0] * hours
    for (t0, i0), (t1, i1) in itertools.pairwise(readings):
        litres = (i1 - i0) * 1000
        first = max(0, int((t0 - start) // 3600))
        for h in range(first, min(hours, int((t1 - start) // 3600) + 1)):
            a, b = start + h * 3600, start + (h + 1) * 3600
            overlap = min(b, t1) - max(a, t0)
            if overlap > 0:
                buckets[h] += litres * overlap / (t1 - t0)
    return buckets


def test_a_zero_night_hour_survives_splitting_readings_into_hours() -> None:
    meters = [m for m in _meters(120, seed=14) if m.leak is None and m.cadence_s != TWICE_A_DAY_S]
    days = 10
    start = EPOCH.timestamp()
    for m in meters:
        times = [t for t in m.report_times(EPOCH - HOUR, EPOCH + timedelta(days=days) + HOUR)]
        readings = [(t, float(m.payload_at(t)["index_m3"])) for t in times]
        buckets = _linear_buckets(readings, start, days * 24)
        for d in range(days):
            night = buckets[d * 24 + 2 : d * 24 + 5]  # 02:00-05:00 local (winter time)
            assert min(night) == 0.0, (m.device_id, m.cadence_s, d, night)
