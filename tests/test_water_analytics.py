"""Water consumption and leak rules without I/O, on numbers worked out by hand."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics import water as wa

T0 = datetime(2026, 1, 10, tzinfo=UTC)
PARIS = ZoneInfo("Europe/Paris")


def r(minutes: float, index: float) -> wa.Reading:
    return wa.Reading(wa.epoch(T0 + timedelta(minutes=minutes)), index)


def hours_of(
    readings: list[wa.Reading], resets: list[wa.IndexReset] | None = None, **kw: float
) -> tuple[dict[int, wa.Hour], list[wa.Interval]]:
    p = wa.MeterParams(**kw)
    ivs = wa.intervals(readings, resets or [], p)
    return {round((h.hour - wa.epoch(T0)) / 3600): h for h in wa.hourly(ivs, p)}, ivs


def vols(hours: dict[int, wa.Hour]) -> dict[int, float]:
    return {k: round(h.volume_m3, 9) for k, h in hours.items()}


def test_a_delta_is_split_linearly_over_the_hours_it_spans() -> None:
    # 10:30 -> 11:30, 60 L: half of the hour-long interval in each hour, 30 L each.
    hours, _ = hours_of([r(630, 100.000), r(690, 100.060)])
    assert vols(hours) == {10: 0.030, 11: 0.030}


def test_jitter_of_one_and_a_half_litres_counts_zero_and_is_not_counted_again() -> None:
    # 100.000 -> 99.9985 (-1.5 L: jitter, 0) -> 100.010: +10 L above the reference 100.000,
    # not +11.5 L above the dip.
    hours, ivs = hours_of([r(0, 100.000), r(60, 99.9985), r(120, 100.010)])
    assert vols(hours) == {0: 0.0, 1: 0.010}
    assert [iv.kind for iv in ivs] == [wa.JITTER, wa.OK]
    assert wa.anomalies(ivs) == []


def test_an_undeclared_decrease_is_flagged_and_counts_nothing() -> None:
    # A replacement nobody declared: 500 -> 100 is neither -400 m3 nor +99,600 m3.
    hours, ivs = hours_of([r(0, 500.000), r(60, 100.000), r(120, 100.050)])
    assert vols(hours) == {0: 0.0, 1: 0.050}
    assert not hours[0].measured  # its volume is unknown, not zero
    assert wa.anomalies(ivs) == [
        wa.Anomaly(wa.epoch(T0 + timedelta(hours=1)), "index_decrease", -400.0)
    ]


def test_a_register_rollover_counts_what_went_through() -> None:
    # R = 100,000: 99,999.900 -> 0.150 is 100,000 - 99,999.9 + 0.15 = 0.25 m3.
    hours, ivs = hours_of([r(0, 99_999.900), r(60, 0.150)], register_m3=100_000.0)
    assert vols(hours) == {0: pytest.approx(0.25)}
    assert ivs[0].kind == wa.ROLLOVER
    # Without a declared register the same drop is an index decrease.
    hours, ivs = hours_of([r(0, 99_999.900), r(60, 0.150)])
    assert vols(hours) == {0: 0.0} and ivs[0].kind == wa.INDEX_DECREASE


def test_a_spike_above_q4_is_excluded_and_flagged() -> None:
    # +10 m3 in one hour > Q4 3.125 m3/h: excluded; the next hour's 50 L counts.
    hours, ivs = hours_of([r(0, 100.0), r(60, 110.0), r(120, 110.05)])
    assert vols(hours) == {0: 0.0, 1: 0.05}
    assert [a.kind for a in wa.anomalies(ivs)] == ["spike"]
    # A meter with a larger Q4 (attribute) passes it.
    hours, _ = hours_of([r(0, 100.0), r(60, 110.0)], q4_m3h=16.0)
    assert vols(hours) == {0: 10.0}


def test_a_declared_replacement_counts_both_registers_without_a_spike() -> None:
    # Old register 1500.000 (00:00), 1500.100 (01:00), removed at 01:30 reading 1500.120;
    # new one starts at 0.000 and reads 0.030 (02:00), 0.080 (03:00).
    # Pair 01:00 -> 02:00: (1500.120 - 1500.100) + (0.030 - 0) = 0.050.
    readings = [r(0, 1500.000), r(60, 1500.100), r(120, 0.030), r(180, 0.080)]
    reset = wa.IndexReset(wa.epoch(T0 + timedelta(minutes=90)), 0.0, 1500.120)
    hours, ivs = hours_of(readings, [reset])
    assert vols(hours) == {0: 0.100, 1: 0.050, 2: 0.050}
    assert [iv.kind for iv in ivs] == [wa.OK, wa.RESET, wa.OK]
    # Old final unknown: nothing counted between the last old reading and the swap: 0.030.
    reset = wa.IndexReset(wa.epoch(T0 + timedelta(minutes=90)), 0.0, None)
    hours, _ = hours_of(readings, [reset])
    assert vols(hours) == {0: 0.100, 1: 0.030, 2: 0.050}


def test_hours_inside_a_gap_over_six_hours_are_estimated_and_not_measured() -> None:
    # 00:00 -> 08:00, 0.8 m3: 0.1 per hour, all estimated; 08:00 -> 09:00 is read.
    hours, _ = hours_of([r(0, 0.0), r(480, 0.8), r(540, 0.85)])
    assert vols(hours) == {h: 0.1 for h in range(8)} | {8: 0.05}
    assert all(hours[h].estimated and not hours[h].measured for h in range(8))
    assert not hours[8].estimated and hours[8].measured


def test_an_hour_is_measured_only_when_readings_about_an_hour_apart_cover_it() -> None:
    # Readings at :17 past each hour: the hour 01:00-02:00 is covered by 00:17-01:17 and
    # 01:17-02:17; the first hour (00:00-00:17 missing) and the last are partial.
    hours, _ = hours_of([r(17 + 60 * k, 0.012 * k) for k in range(4)])
    assert [k for k, h in sorted(hours.items()) if h.measured] == [1, 2]
    assert hours[1].volume_m3 == pytest.approx(0.012)
    # Twice a day: nothing is measured, whatever the volume.
    hours, _ = hours_of([r(0, 0.0), r(720, 0.144), r(1440, 0.288)])
    assert not any(h.measured for h in hours.values())


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.integers(min_value=1, max_value=30 * 3600),  # seconds to the next reading
            st.floats(min_value=0, max_value=1.0, allow_nan=False),  # litres... up to 1 m3
        ),
        min_size=1,
        max_size=60,
    ),
    start=st.integers(min_value=0, max_value=3599),
    cut=st.data(),
)
def test_hours_add_up_to_the_index_change_over_any_range(
    steps: list[tuple[int, float]], start: int, cut: st.DataObject
) -> None:
    """Sum over hours [a, b) = interpolated index at b - interpolated index at a; over all the
    hours, last index - first index."""
    t, idx = float(start), 1234.0
    readings = [wa.Reading(t, idx)]
    for dt, dv in steps:
        t += dt
        idx += min(dv, 3.0 * dt / 3600)  # within Q4: plain consumption only
        readings.append(wa.Reading(t, idx))
    p = wa.MeterParams()
    ivs = wa.intervals(readings, [], p)
    assert all(iv.kind == wa.OK for iv in ivs)
    hours = wa.hourly(ivs, p)
    total = sum(h.volume_m3 for h in hours)
    assert total == pytest.approx(readings[-1].index_m3 - readings[0].index_m3, abs=1e-9)

    def index_at(x: float) -> float:
        for a, b in itertools.pairwise(readings):
            if a.t <= x <= b.t:
                return a.index_m3 + (b.index_m3 - a.index_m3) * (x - a.t) / (b.t - a.t)
        raise AssertionError(x)

    i = cut.draw(st.integers(min_value=0, max_value=len(hours) - 1))
    j = cut.draw(st.integers(min_value=i, max_value=len(hours) - 1))
    lo = max(hours[i].hour, readings[0].t)
    hi = min(hours[j].hour + wa.HOUR, readings[-1].t)
    part = sum(h.volume_m3 for h in hours[i : j + 1])
    assert part == pytest.approx(index_at(hi) - index_at(lo), abs=1e-9)


# -- local buckets -----------------------------------------------------------------------------


def test_paris_spring_forward_day_has_23_hours_and_fall_back_day_25() -> None:
    spring = wa.bucket_edges(
        datetime(2026, 3, 29, tzinfo=PARIS), datetime(2026, 3, 30, tzinfo=PARIS), "day", PARIS
    )
    assert [e.isoformat() for e in spring] == [
        "2026-03-29T00:00:00+01:00",
        "2026-03-30T00:00:00+02:00",
    ]
    assert spring[1].astimezone(UTC) - spring[0].astimezone(UTC) == timedelta(hours=23)
    fall = wa.bucket_edges(
        datetime(2026, 10, 25, tzinfo=PARIS), datetime(2026, 10, 26, tzinfo=PARIS), "day", PARIS
    )
    assert fall[1].astimezone(UTC) - fall[0].astimezone(UTC) == timedelta(hours=25)
    hours = wa.bucket_edges(fall[0], fall[1], "hour", PARIS)
    assert len(hours) == 26  # 25 buckets
    assert [e.isoformat() for e in hours[1:5]] == [
        "2026-10-25T01:00:00+02:00",
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:00:00+01:00",
        "2026-10-25T03:00:00+01:00",
    ]


def test_months_and_rounding_down_of_start() -> None:
    edges = wa.bucket_edges(
        datetime(2026, 1, 15, 12, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=PARIS), "month", PARIS
    )
    assert [e.isoformat() for e in edges] == [
        "2026-01-01T00:00:00+01:00",
        "2026-02-01T00:00:00+01:00",
        "2026-03-01T00:00:00+01:00",
    ]


def test_a_zone_with_half_hour_offsets_is_refused_and_so_is_a_huge_range() -> None:
    kolkata = ZoneInfo("Asia/Kolkata")
    with pytest.raises(wa.BucketError) as err:
        wa.bucket_edges(
            datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 3, tzinfo=UTC), "day", kolkata
        )
    assert err.value.param == "tz"
    with pytest.raises(wa.BucketError) as err:
        wa.bucket_edges(
            datetime(2020, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC), "hour", PARIS
        )
    assert err.value.param == "start"


# -- leak verdicts -----------------------------------------------------------------------------

TH = wa.LeakThresholds()


def night(day: int, lph: float | None, **kw: object) -> wa.MeterDay:
    start = datetime(2026, 1, day, tzinfo=PARIS)
    values: dict[str, object] = {
        "day_start": start,
        "night_start": start + timedelta(hours=2),
        "night_min_lph": lph,
        "max_hour_l": lph,
        "max_hour_at": start,
        "continuous": False,
        "leak_alarm_at": None,
        "burst_alarm_at": None,
    }
    values.update(kw)
    return wa.MeterDay(**values)  # type: ignore[arg-type]


def verdict(days: list[wa.MeterDay]) -> wa.LeakVerdict | None:
    return wa.judge(days[-1], wa.night_run(days, TH), TH)


def test_three_nights_at_12_lph_is_a_leak_and_at_6_lph_suspected() -> None:
    v = verdict([night(11, 0.0), night(12, 12.0), night(13, 12.0), night(14, 12.0)])
    assert v is not None and (v.status, v.nights, v.night_min_lph) == ("leak", 3, 12.0)
    assert v.since == datetime(2026, 1, 12, 2, tzinfo=PARIS)
    v = verdict([night(12, 6.0), night(13, 6.0), night(14, 6.0)])
    assert v is not None and (v.status, v.nights) == ("suspected", 3)
    # Two nights only, or a night that could not be measured in between: nothing.
    assert verdict([night(13, 12.0), night(14, 12.0)]) is None
    assert verdict([night(12, 12.0), night(13, None), night(14, 12.0)]) is None
    # A missing day breaks the run as well.
    assert verdict([night(11, 12.0), night(13, 12.0), night(14, 12.0)]) is None


def test_a_burst_night_and_a_meter_alarm() -> None:
    at = datetime(2026, 1, 14, 10, tzinfo=PARIS)
    # 150 L/h through the night (one night is enough): a burst since 02:00.
    v = verdict([night(14, 150.0, max_hour_l=400.0, max_hour_at=at)])
    assert v is not None and (v.status, v.since, v.nights) == (
        "burst",
        datetime(2026, 1, 14, 2, tzinfo=PARIS),
        1,
    )
    assert v.reasons == ("night minimum at burst flow",)
    # 150 L in an hour of the day with quiet nights: a bath, a business; not listed.
    assert verdict([night(14, 0.0, max_hour_l=150.0, max_hour_at=at)]) is None
    # 99 L/h through the night: not a burst (and one night is not a leak run).
    assert verdict([night(14, 99.0)]) is None
    v = verdict([night(14, 0.0, leak_alarm_at=at)])
    assert v is not None and v.status == "leak"
    v = verdict([night(14, 1.0, continuous=True)])
    assert v is not None and v.status == "suspected"
