"""Parking computations, without I/O: every expected figure is worked out by hand below."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta

import pytest

from analytics import parking as pk
from benchmarks.parking_forecast_backtest import backtest

H = 3600.0


def t(hh: int, mm: int, day: int = 1) -> float:
    """POSIX seconds of 2026-06-<day> hh:mm UTC."""
    return datetime(2026, 6, day, hh, mm, tzinfo=UTC).timestamp()


def by_start(slots: list[pk.SlotTotals]) -> dict[float, tuple[float, float]]:
    return {s.start: (s.known_s, s.occupied_s) for s in slots}


# --- Calendar ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("year", "easter"),
    [
        (2008, date(2008, 3, 23)),  # early extreme of the recent past
        (2019, date(2019, 4, 21)),
        (2024, date(2024, 3, 31)),
        (2025, date(2025, 4, 20)),
        (2026, date(2026, 4, 5)),
        (2038, date(2038, 4, 25)),  # the latest possible date
    ],
)
def test_easter_sunday(year: int, easter: date) -> None:
    assert pk.easter_sunday(year) == easter


def test_french_holidays_2026() -> None:
    # Easter 2026 is 5 April: Easter Monday 6 April, Ascension = Easter + 39 days = 14 May
    # (a Thursday), Whit Monday = Easter + 50 days = 25 May.
    assert sorted(pk.french_public_holidays(2026)) == [
        date(2026, 1, 1),
        date(2026, 4, 6),
        date(2026, 5, 1),
        date(2026, 5, 8),
        date(2026, 5, 14),
        date(2026, 5, 25),
        date(2026, 7, 14),
        date(2026, 8, 15),
        date(2026, 11, 1),
        date(2026, 11, 11),
        date(2026, 12, 25),
    ]


def test_day_types() -> None:
    assert pk.day_type(date(2026, 5, 14)) == "sunday_holiday"  # Ascension, a Thursday
    assert pk.day_type(date(2026, 5, 25)) == "sunday_holiday"  # Whit Monday
    assert pk.day_type(date(2026, 5, 13)) == "weekday"  # the Wednesday before
    assert pk.day_type(date(2026, 5, 16)) == "saturday"
    assert pk.day_type(date(2026, 5, 17)) == "sunday_holiday"  # a Sunday
    assert pk.day_type(date(2026, 8, 15)) == "sunday_holiday"  # Assumption on a Saturday
    assert pk.day_type(date(2027, 3, 29)) == "sunday_holiday"  # Easter Monday 2027 (28 March)


# --- DST and local slots -------------------------------------------------------------------


def test_local_day_slots_on_dst_days() -> None:
    # 29 March 2026: clocks go 02:00 → 03:00, a 23 h day = 92 quarter hours; 25 October 2026:
    # 03:00 → 02:00, a 25 h day = 100 quarter hours.
    assert len(pk.local_day_slots(date(2026, 3, 29))) == 92
    assert len(pk.local_day_slots(date(2026, 10, 25))) == 100
    assert len(pk.local_day_slots(date(2026, 10, 26))) == 96
    spring = pk.local_day_slots(date(2026, 3, 29))
    assert spring[0] == datetime(2026, 3, 28, 23, 0, tzinfo=UTC)  # 00:00 CET = 23:00 UTC
    assert spring[-1] == datetime(2026, 3, 29, 21, 45, tzinfo=UTC)  # 23:45 CEST


def test_local_slot_keys_around_dst() -> None:
    # Spring: 00:45 UTC is 01:45 CET; 01:00 UTC is already 03:00 CEST (02:xx never happens).
    assert pk.local_slot(datetime(2026, 3, 29, 0, 45, tzinfo=UTC)) == (date(2026, 3, 29), "01:45")
    assert pk.local_slot(datetime(2026, 3, 29, 1, 0, tzinfo=UTC)) == (date(2026, 3, 29), "03:00")
    # Autumn: 00:30 UTC is 02:30 CEST and 01:30 UTC is 02:30 CET: the same wall-clock slot.
    assert pk.local_slot(datetime(2026, 10, 25, 0, 37, tzinfo=UTC)) == (
        date(2026, 10, 25),
        "02:30",
    )
    assert pk.local_slot(datetime(2026, 10, 25, 1, 30, tzinfo=UTC)) == (
        date(2026, 10, 25),
        "02:30",
    )


# --- Time-weighted occupancy ---------------------------------------------------------------


def test_one_space_occupied_from_10_05_to_10_20() -> None:
    # Readings: 09:50 free, 10:05 occupied, 10:20 free; 15-minute buckets 10:00 and 10:15.
    # 10:00 bucket: free 10:00-10:05 (5 min) + occupied 10:05-10:15 (10 min): known 15 min,
    #   occupancy 10/15.
    # 10:15 bucket: occupied 10:15-10:20 (5 min) + free 10:20-10:30 (10 min): occupancy 5/15.
    readings = [(t(9, 50), False), (t(10, 5), True), (t(10, 20), False)]
    slots = by_start(pk.slot_seconds([(readings, 6.5 * H)], t(10, 0), t(10, 30), 900))
    assert slots == {t(10, 0): (900.0, 600.0), t(10, 15): (900.0, 300.0)}


def test_five_minute_slots_of_the_same_space() -> None:
    # Same readings, 5-minute slots: 10:00 free, 10:05/10:10/10:15 occupied, 10:20/10:25 free.
    readings = [(t(9, 50), False), (t(10, 5), True), (t(10, 20), False)]
    slots = by_start(pk.slot_seconds([(readings, 6.5 * H)], t(10, 0), t(10, 30), 300))
    assert slots == {
        t(10, 0): (300.0, 0.0),
        t(10, 5): (300.0, 300.0),
        t(10, 10): (300.0, 300.0),
        t(10, 15): (300.0, 300.0),
        t(10, 20): (300.0, 0.0),
        t(10, 25): (300.0, 0.0),
    }


def test_two_spaces_one_going_stale_mid_bucket() -> None:
    # Space A as above. Space B: one reading, occupied at 09:10, freshness 1 h, so known
    # 09:10-10:10 and unknown after.
    # 10:00 bucket: A known 900 s, occupied 600 s; B known 600 s (10:00-10:10), all occupied.
    #   known 1500, occupied 1200: occupancy 1200/1500 = 0.8, free_avg = 300/900 = 1/3 space.
    # 10:15 bucket: A known 900, occupied 300; B unknown: occupancy 300/900, free_avg 600/900.
    a = [(t(9, 50), False), (t(10, 5), True), (t(10, 20), False)]
    b = [(t(9, 10), True)]
    slots = by_start(pk.slot_seconds([(a, 6.5 * H), (b, 1 * H)], t(10, 0), t(10, 30), 900))
    assert slots == {t(10, 0): (1500.0, 1200.0), t(10, 15): (900.0, 300.0)}


def test_a_stale_interval_becomes_unknown_after_the_freshness_window() -> None:
    # One reading, free at 08:00, freshness 6.5 h: known 08:00-14:30, then unknown; the
    # 14:00 bucket (1 h slots) has 30 min known, the 15:00 bucket none (no row).
    readings = [(t(8, 0), False)]
    slots = by_start(pk.slot_seconds([(readings, 6.5 * H)], t(8, 0), t(16, 0), 3600))
    assert slots[t(14, 0)] == (1800.0, 0.0)
    assert t(15, 0) not in slots
    assert sum(k for k, _ in slots.values()) == 6.5 * H


def test_an_interval_spanning_many_slots_with_partial_ends() -> None:
    # Occupied at 10:02 with a 1 h window, nothing after: known 10:02-11:02.
    # 15-min slots: 10:00 → 13 min (780 s), 10:15, 10:30, 10:45 → 900 s, 11:00 → 2 min (120 s).
    readings = [(t(10, 2), True)]
    slots = by_start(pk.slot_seconds([(readings, 1 * H)], t(10, 0), t(11, 15), 900))
    assert slots == {
        t(10, 0): (780.0, 780.0),
        t(10, 15): (900.0, 900.0),
        t(10, 30): (900.0, 900.0),
        t(10, 45): (900.0, 900.0),
        t(11, 0): (120.0, 120.0),
    }


def test_a_reading_before_the_range_carries_into_it() -> None:
    # Occupied at 09:00, free at 10:07; range from 10:00 in 5-min slots:
    # 10:00 slot occupied 300 s; 10:05 slot occupied 2 min (120 s) then free 3 min (180 s).
    readings = [(t(9, 0), True), (t(10, 7), False)]
    slots = by_start(pk.slot_seconds([(readings, 6.5 * H)], t(10, 0), t(10, 10), 300))
    assert slots == {t(10, 0): (300.0, 300.0), t(10, 5): (300.0, 120.0)}


def test_slot_bounds_must_be_aligned() -> None:
    with pytest.raises(ValueError):
        pk.slot_seconds([], t(10, 1), t(10, 30), 300)


def test_merge_ranges() -> None:
    # 10:02-10:03 widens to 10:00-10:05, which touches 10:04-10:20 (widened 10:00-10:20);
    # an empty span at 11:00 still recomputes its slot 11:00-11:05.
    got = pk.merge_ranges([(t(10, 4), t(10, 20)), (t(10, 2), t(10, 3)), (t(11, 0), t(11, 0))])
    assert got == [(t(10, 0), t(10, 20)), (t(11, 0), t(11, 5))]


# --- Forecast ------------------------------------------------------------------------------


def test_nowcast_formula() -> None:
    # profile(t+h) 40, observed 10, profile(t) 20: departure -10.
    # h = 0: 40 - 10 = 30; h = 60: 40 - 10·e^-1 = 40 - 3.6788 = 36.3212.
    assert pk.nowcast(40, 10, 20, 0) == pytest.approx(30.0)
    assert pk.nowcast(40, 10, 20, 60) == pytest.approx(36.3212, abs=1e-4)


def _hand_made_history() -> dict[date, dict[str, float]]:
    # "Today" is Wednesday 20 May 2026. Weekdays before it, most recent first, skipping the
    # holidays 14 May (Ascension) and 8 May: 19, 18, 15, 13, 12, 11, 7, 6 May: those eight make
    # the weekday profile. Their 12:00 values sorted: 0 18 19 20 20 21 22 100 → median 20.
    recent = [date(2026, 5, d) for d in (19, 18, 15, 13, 12, 11, 7, 6)]
    noon = [20, 21, 19, 100, 18, 0, 22, 20]
    history: dict[date, dict[str, float]] = {}
    for d, v in zip(recent, noon, strict=True):
        history[d] = {"12:00": v, "12:15": 26, "12:30": 32}
    # Older weekdays: ignored (only the last eight count), or the median would move to 500.
    for day in (5, 4):
        history[date(2026, 5, day)] = {"12:00": 500, "12:15": 500, "12:30": 500}
    for day in (30, 29, 28, 27, 24, 23, 22, 21):
        history[date(2026, 4, day)] = {"12:00": 500, "12:15": 500, "12:30": 500}
    # Holidays, a Saturday and a Sunday: not weekdays.
    for d in (date(2026, 5, 14), date(2026, 5, 8), date(2026, 5, 1), date(2026, 5, 17)):
        history[d] = {"12:00": 999, "12:15": 999, "12:30": 999}
    history[date(2026, 5, 16)] = {"12:00": 777, "12:15": 777, "12:30": 777}
    # Today itself is never part of the profile.
    history[date(2026, 5, 20)] = {"12:00": 5000, "12:15": 5000, "12:30": 5000}
    return history


def test_profile_uses_the_last_eight_same_type_days() -> None:
    profile = pk.build_profile(_hand_made_history(), date(2026, 5, 20))
    assert profile.by_type["weekday"] == {"12:00": 20, "12:15": 26, "12:30": 32}
    # Sundays and holidays with data: 17, 14, 8 and 1 May.
    assert profile.days_used == {"weekday": 8, "saturday": 1, "sunday_holiday": 4}


def test_forecast_blends_observation_into_the_profile() -> None:
    # Now: 20 May 2026 10:00 UTC = 12:00 CEST; profile(12:00) = 20, 14 free observed:
    # departure -6. 12:15 (h = 15): 26 - 6·e^-0.25 = 26 - 6·0.77880 = 21.3272.
    # 12:30 (h = 30): 32 - 6·e^-0.5 = 32 - 6·0.60653 = 28.3608.
    profile = pk.build_profile(_hand_made_history(), date(2026, 5, 20))
    now = datetime(2026, 5, 20, 10, 0, tzinfo=UTC)
    points = pk.forecast(profile, 14, now, 30)
    assert [p.start for p in points] == [
        datetime(2026, 5, 20, 10, 15, tzinfo=UTC),
        datetime(2026, 5, 20, 10, 30, tzinfo=UTC),
    ]
    assert points[0].free_expected == pytest.approx(21.3272, abs=1e-4)
    assert points[1].free_expected == pytest.approx(28.3608, abs=1e-4)
    assert {p.basis for p in points} == {"nowcast"}
    # Capacity 25: 28.36 is clipped to the zone's 25 spaces.
    assert pk.forecast(profile, 14, now, 30, capacity=25)[1].free_expected == 25


def test_forecast_between_slots_uses_time_to_each_slot_start() -> None:
    # Now 10:05 UTC (12:05 local, slot 12:00, profile 20), 14 free: the 12:15 slot is h = 10 min
    # ahead: 26 - 6·e^(-10/60) = 26 - 6·0.846482 = 20.9211.
    profile = pk.build_profile(_hand_made_history(), date(2026, 5, 20))
    now = datetime(2026, 5, 20, 10, 5, tzinfo=UTC)
    first = pk.forecast(profile, 14, now, 15)[0]
    assert first.start == datetime(2026, 5, 20, 10, 15, tzinfo=UTC)
    assert first.free_expected == pytest.approx(20.9211, abs=1e-4)


def test_forecast_falls_back_with_little_history() -> None:
    now = datetime(2026, 5, 20, 10, 0, tzinfo=UTC)
    # Two weekdays only (fewer than 3): the any-day profile of the last 8 days stands in. The
    # days are 19 May (12:00 → 10, 12:15 → 30) and Sunday 17 May (12:00 → 30, 12:15 → 50):
    # medians 20 and 40. Observed 14, departure -6: 12:15 → 40 - 6·e^-0.25 = 35.3272.
    history = {
        date(2026, 5, 19): {"12:00": 10.0, "12:15": 30.0},
        date(2026, 5, 18): {"12:00": 10.0, "12:15": 30.0},
        date(2026, 5, 17): {"12:00": 30.0, "12:15": 50.0},
    }
    # With 18 and 19 May both weekdays the medians are over three days: 12:00 → 10, 12:15 → 30.
    # Drop the 18th to be left with two days: medians (10+30)/2 = 20 and (30+50)/2 = 40.
    del history[date(2026, 5, 18)]
    profile = pk.build_profile(history, date(2026, 5, 20))
    p = pk.forecast(profile, 14, now, 15)[0]
    assert p.free_expected == pytest.approx(35.3272, abs=1e-4)
    # No history at all: persistence.
    empty = pk.build_profile({}, date(2026, 5, 20))
    assert [(x.free_expected, x.basis) for x in pk.forecast(empty, 14, now, 30)] == [
        (14, "persistence"),
        (14, "persistence"),
    ]


def test_forecast_without_a_profile_for_now_approaches_the_profile() -> None:
    # Profile only has 12:15 = 26 (nothing for 12:00): 26 + (14 - 26)·e^-0.25 = 26 - 9.3456.
    history = {date(2026, 5, d): {"12:15": 26.0} for d in (19, 18, 15, 13)}
    profile = pk.build_profile(history, date(2026, 5, 20))
    p = pk.forecast(profile, 14, datetime(2026, 5, 20, 10, 0, tzinfo=UTC), 15)[0]
    assert p.basis == "profile_blend"
    assert p.free_expected == pytest.approx(26 - 12 * math.exp(-0.25), abs=1e-9)


def test_forecast_crosses_the_spring_dst_gap() -> None:
    # Sunday 29 March 2026, now 00:45 UTC = 01:45 CET. The next slot, 01:00 UTC, is 03:00 CEST.
    # Sunday/holiday profile from 22, 15, 8 and 1 March (and 6 April is not before today).
    history = {
        date(2026, 3, d): {"01:45": 10.0, "02:00": 99.0, "03:00": 40.0} for d in (22, 15, 8, 1)
    }
    profile = pk.build_profile(history, date(2026, 3, 29))
    now = datetime(2026, 3, 29, 0, 45, tzinfo=UTC)
    p = pk.forecast(profile, 10, now, 15)[0]
    # Observed equals the profile at 01:45, so the forecast is the 03:00 profile: 40.
    assert (p.start, p.free_expected) == (datetime(2026, 3, 29, 1, 0, tzinfo=UTC), 40.0)


def test_horizon_slots_count() -> None:
    now = datetime(2026, 5, 20, 10, 0, tzinfo=UTC)
    empty = pk.build_profile({}, date(2026, 5, 20))
    # Slot starts after now and at most horizon ahead: 10:15 ... 12:00 is eight slots, from
    # 10:00 as from 10:01 (12:15 would be 134 min ahead); a 20-minute horizon holds only 10:15.
    assert len(pk.forecast(empty, 1, now, 120)) == 8
    late = pk.forecast(empty, 1, now + timedelta(minutes=1), 120)
    assert (len(late), late[-1].start) == (8, datetime(2026, 5, 20, 12, 0, tzinfo=UTC))
    assert len(pk.forecast(empty, 1, now, 20)) == 1


def test_backtest_forecast_beats_same_as_now_at_60_min() -> None:
    # A simulated zone with a strong daily profile: at an hour, where the profile has moved,
    # the nowcast must do clearly better than "as many free places as now".
    result = backtest(weeks=6, eval_days=7, capacity=200, seed=3)
    mae, mae_naive, n = result[60]
    assert n > 600
    assert mae < 0.8 * mae_naive


def test_profile_candidate_days() -> None:
    # Wednesday 20 May 2026, a forecast within the day: weekdays only. The 12 most recent
    # weekdays (skipping the holidays 14, 8 and 1 May): 19 18 15 13 12 11 7 6 5 4 May, 30 and
    # 29 April; plus the last 12 days of any type for the fallback: 8 to 19 May.
    days = pk.profile_candidate_days(date(2026, 5, 20), date(2026, 5, 20))
    assert days == [date(2026, 4, 29), date(2026, 4, 30)] + [date(2026, 5, d) for d in range(4, 20)]
    # Friday 22 May to Saturday 23 May: Saturdays are read too (the last twelve within 70 days
    # are only ten: 16 May back to 14 March).
    days = pk.profile_candidate_days(date(2026, 5, 22), date(2026, 5, 23))
    saturdays = [d for d in days if d.weekday() == 5]
    assert saturdays[0] == date(2026, 3, 14) and saturdays[-1] == date(2026, 5, 16)
    assert len(saturdays) == 10


def test_local_day_bounds_on_the_autumn_dst_day() -> None:
    # 25 October 2026 starts at 00:00 CEST (22:00 UTC the day before) and ends at 00:00 CET
    # (23:00 UTC): 25 hours.
    lo, hi = pk.local_day_bounds(date(2026, 10, 25))
    assert lo == datetime(2026, 10, 24, 22, 0, tzinfo=UTC)
    assert hi == datetime(2026, 10, 25, 23, 0, tzinfo=UTC)


def test_history_by_local_slot_averages_the_repeated_hour() -> None:
    d = date(2026, 10, 25)
    rows = [(d, "01:45", 3.0), (d, "02:00", 0.0), (d, "02:00", 1.0), (d, "03:00", 2.0)]
    assert pk.history_by_local_slot(rows) == {d: {"01:45": 3.0, "02:00": 0.5, "03:00": 2.0}}
