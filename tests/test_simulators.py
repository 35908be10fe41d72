"""The simulated fleet behaves like the territory's hardware and injects the faults it claims.

Pure: no broker, no API (registration runs against httpx's in-process MockTransport).
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
from datetime import datetime, timedelta
from statistics import mean
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from devices.attributes import validate_attributes
from devices.kinds import DeviceKind, all_kinds
from devices.native import decode_native, fill_from_distance, payload_model
from devices.rejections import Rejection, RejectReason
from simulators.behaviour import (
    LEAK_ALARM_AFTER,
    PARIS,
    TWICE_A_DAY_S,
    Incident,
    ParkingSpace,
    Registration,
    SimDevice,
    Telemetry,
    WasteColumn,
    WaterMeter,
    build_fleet,
    history,
)
from simulators.cli import add_arguments
from simulators.faults import FUTURE_SHIFT, FaultInjector, FaultType, encode
from simulators.fleet import RegistrationError, parse_mqtt_url, register_devices

DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MONDAY = datetime(2026, 3, 2, tzinfo=PARIS)  # a Monday, winter time (+01:00)
QUARTER = timedelta(minutes=15)


def _day(start: datetime = MONDAY, step: timedelta = QUARTER, hours: int = 24) -> list[datetime]:
    return [start + step * i for i in range(int(timedelta(hours=hours) / step))]


def _of(fleet: list[SimDevice], cls: type[SimDevice]) -> list[Any]:
    return [d for d in fleet if isinstance(d, cls)]


# --- registrations --------------------------------------------------------------------------


def test_registrations_match_the_api_contract() -> None:
    fleet = build_fleet(per_kind=40, seed=3)
    assert len(fleet) == 120
    ids = [d.device_id for d in fleet]
    assert len(set(ids)) == len(ids)
    assert ids[:3] == ["sim-wm-0001", "sim-wc-0001", "sim-ps-0001"]  # kinds interleaved
    for d in fleet:
        body = d.registration.as_request()
        assert set(body) == {"id", "kind", "label", "location", "group", "attributes"}
        assert DEVICE_ID.match(body["id"])
        assert DeviceKind(body["kind"]) is d.kind
        assert 1 <= len(body["label"]) <= 64 and body["group"]
        assert abs(body["location"]["lat"] - 47.996) < 0.06
        assert abs(body["location"]["lon"] - -4.102) < 0.08
        assert validate_attributes(d.kind, body["attributes"]) == body["attributes"]
    columns = _of(fleet, WasteColumn)
    assert {"depth_mm", "capacity_l", "waste_stream"} <= set(columns[0].registration.attributes)
    assert any(c.report == "distance" for c in columns)
    assert all(
        m.registration.attributes["district"] == m.registration.group
        for m in _of(fleet, WaterMeter)
    )
    assert all(
        p.registration.attributes["zone"] == p.registration.group for p in _of(fleet, ParkingSpace)
    )


def test_id_prefix_and_kind_selection() -> None:
    fleet = build_fleet([DeviceKind.PARKING_SENSOR], 3, id_prefix="load.test-1")
    assert [d.device_id for d in fleet] == [
        "load.test-1-ps-0001",
        "load.test-1-ps-0002",
        "load.test-1-ps-0003",
    ]


# --- payloads -------------------------------------------------------------------------------


def test_every_payload_over_a_day_validates_and_decodes() -> None:
    fleet = build_fleet(per_kind=25, seed=7)
    sent = 0
    for ts in _day():
        for d in fleet:
            payload = d.next_payload(ts)
            if payload is None:
                continue
            sent += 1
            payload_model(d.kind).model_validate(payload)
            reading = decode_native(
                d.kind, encode(payload), received_at=ts, attributes=d.registration.attributes
            )
            assert reading.ts == ts
    assert sent > 25 * 2 * 96  # water and columns every time, parking on change/heartbeat


# --- water ----------------------------------------------------------------------------------


def test_water_index_only_grows_and_battery_only_drains() -> None:
    meters = _of(build_fleet([DeviceKind.WATER_METER], 30, seed=1), WaterMeter)
    for m in meters:
        payloads = [m.next_payload(ts) for ts in _day(step=timedelta(minutes=5))]
        index = [p["index_m3"] for p in payloads]
        battery = [p["battery_pct"] for p in payloads]
        assert all(b >= a for a, b in itertools.pairwise(index))
        assert index[-1] > index[0]
        assert all(b <= a for a, b in itertools.pairwise(battery))


def test_households_use_more_water_at_8_than_at_3() -> None:
    fleet = build_fleet([DeviceKind.WATER_METER], 300, seed=2, epoch=MONDAY - timedelta(days=7))
    meters = [
        m
        for m in _of(fleet, WaterMeter)
        if m.profile == "household" and m.leak is None and m.cadence_s != TWICE_A_DAY_S
    ]

    def mean_flow(hour: int) -> float:
        start = MONDAY + timedelta(hours=hour) - timedelta(minutes=30)
        times = [start + timedelta(minutes=6 * i) for i in range(10)]
        return mean(float(m.next_payload(ts)["flow_m3h"]) for m in meters for ts in times)

    at_3, at_8 = mean_flow(3), mean_flow(8)
    assert at_8 > 5 * at_3


def test_businesses_use_water_on_weekdays_not_sundays() -> None:
    meters = [
        m
        for m in _of(build_fleet([DeviceKind.WATER_METER], 300, seed=2), WaterMeter)
        if m.profile == "business"
    ]
    assert meters
    sunday = MONDAY - timedelta(days=1)
    assert all(
        m.mean_flow_m3h(MONDAY + timedelta(hours=10))
        > 10 * m.mean_flow_m3h(sunday + timedelta(hours=10))
        for m in meters
    )


def test_a_leak_shows_as_night_flow_then_raises_the_alarm() -> None:
    meter = _of(build_fleet([DeviceKind.WATER_METER], 1, seed=4), WaterMeter)[0]
    assert meter.cadence_s != TWICE_A_DAY_S  # reports a flow
    evening = MONDAY + timedelta(hours=20)
    meter.next_payload(evening)
    meter.start_leak(evening, flow_m3h=0.02)
    seen: dict[datetime, dict[str, Any]] = {}
    for ts in _day(evening + QUARTER, hours=12):
        seen[ts] = meter.next_payload(ts)
    for ts, p in seen.items():
        assert p["flow_m3h"] >= 0.02  # never back to zero: that is what a leak looks like
        assert ("leak" in p.get("alarms", [])) == (ts - evening >= LEAK_ALARM_AFTER)
    three_am = MONDAY + timedelta(days=1, hours=3)
    assert "leak" in seen[three_am]["alarms"]
    # The leaked volume is in the index too.
    assert seen[three_am]["index_m3"] - seen[evening + QUARTER]["index_m3"] >= 0.02 * 6.5


def test_healthy_meters_are_quiet_at_night_and_raise_no_leak() -> None:
    fleet = build_fleet([DeviceKind.WATER_METER], 100, seed=5, epoch=MONDAY - timedelta(days=7))
    meters = [
        m
        for m in _of(fleet, WaterMeter)
        if m.profile == "household" and m.leak is None and m.cadence_s != TWICE_A_DAY_S
    ]
    alarms = []
    for m in meters:
        for ts in _day(step=timedelta(minutes=30)):
            alarms += m.next_payload(ts).get("alarms", [])
    assert "leak" not in alarms
    night = [m.next_payload(MONDAY + timedelta(days=1, hours=3))["flow_m3h"] for m in meters]
    assert sum(f > 0 for f in night) <= len(night) * 0.05


def test_some_meters_report_low_battery() -> None:
    fleet = _of(build_fleet([DeviceKind.WATER_METER], 400, seed=6), WaterMeter)
    low = [m for m in fleet if "low_battery" in m.next_payload(MONDAY).get("alarms", [])]
    assert 0 < len(low) < len(fleet) * 0.05
    assert all(m.battery_pct < 10 for m in low)


# --- waste ----------------------------------------------------------------------------------


def test_waste_fill_rises_then_drops_after_the_round() -> None:
    columns = _of(build_fleet([DeviceKind.WASTE_COLUMN], 40, seed=8), WasteColumn)
    column = next(c for c in columns if c.stream == "residual" and c.report != "distance")
    column.incidents = []
    week = _day(hours=24 * 8, step=timedelta(minutes=30))
    fills = []
    for ts in week:
        column.next_payload(ts)
        fills.append((ts, column.fill_pct))  # the true fill, not the noisy reading
    assert column.collections, "a column is emptied at least once a week"
    starts = [MONDAY, *column.collections]
    emptied = next(
        c
        for prev, c in zip(starts, column.collections, strict=False)
        if c - prev > timedelta(hours=30)
    )
    before = [f for ts, f in fills if emptied - timedelta(hours=24) <= ts < emptied]
    after = [f for ts, f in fills if emptied < ts <= emptied + timedelta(minutes=30)]
    assert before[-1] > before[0] + 5  # it was filling
    assert after[0] < 5 < before[-1]  # and the round emptied it
    local = emptied.astimezone(PARIS)
    assert 6 <= local.hour < 18 and local.weekday() < 6  # by day, not on Sundays


def test_glass_fills_slower_than_residual() -> None:
    columns = _of(build_fleet([DeviceKind.WASTE_COLUMN], 200, seed=9), WasteColumn)
    glass = [c.fill_rate_pct_per_day for c in columns if c.stream == "glass"]
    residual = [c.fill_rate_pct_per_day for c in columns if c.stream == "residual"]
    assert mean(residual) > 3 * mean(glass)


def test_distance_only_columns_convert_with_their_registered_depth() -> None:
    columns = _of(build_fleet([DeviceKind.WASTE_COLUMN], 60, seed=10), WasteColumn)
    column = next(c for c in columns if c.report == "distance")
    depth = column.registration.attributes["depth_mm"]
    close = 0
    for ts in _day(hours=72):
        p = column.next_payload(ts)
        assert "fill_pct" not in p and "distance_mm" in p
        converted = fill_from_distance(p["distance_mm"], depth)
        # The true fill, but for deposit spikes, echoes and open lids (a few per cent).
        close += abs(converted - column.fill_pct) < 5
    assert close >= 0.9 * 72 * 4
    with pytest.raises(Rejection) as err:  # without the attribute the platform cannot convert
        decode_native(DeviceKind.WASTE_COLUMN, encode(p), received_at=ts, attributes={})
    assert err.value.reason is RejectReason.MISSING_ATTRIBUTE


def test_waste_alarms_happen_and_a_fire_is_hot() -> None:
    columns = _of(build_fleet([DeviceKind.WASTE_COLUMN], 10, seed=11), WasteColumn)
    fire = Incident("fire", MONDAY + timedelta(hours=3), MONDAY + timedelta(hours=4))
    for c in columns:
        c.incidents = [fire]
    payloads = [c.next_payload(ts) for ts in _day(step=timedelta(minutes=10)) for c in columns]
    fires = [p for p in payloads if "fire" in p.get("alarms", [])]
    assert fires and all(p["temperature_c"] >= 55 for p in fires)
    assert any("lid_open" in p.get("alarms", []) for p in payloads)
    assert all(p["temperature_c"] < 30 for p in payloads if "fire" not in p.get("alarms", []))


# --- parking --------------------------------------------------------------------------------


def test_parking_busier_at_14_than_at_3() -> None:
    spaces = _of(build_fleet([DeviceKind.PARKING_SENSOR], 200, seed=12), ParkingSpace)
    occupancy: dict[int, list[bool]] = {3: [], 14: []}
    for ts in _day(MONDAY - timedelta(hours=6), hours=30):
        for s in spaces:
            s.next_payload(ts)
            local = ts.astimezone(PARIS)
            if ts >= MONDAY and local.minute == 0 and local.hour in occupancy:
                occupancy[local.hour].append(bool(s.occupied))
    at_3, at_14 = mean(occupancy[3]), mean(occupancy[14])
    assert at_14 > at_3 + 0.25


def test_parking_publishes_on_change_and_heartbeat_only() -> None:
    space = _of(build_fleet([DeviceKind.PARKING_SENSOR], 1, seed=13), ParkingSpace)[0]
    first = space.next_payload(MONDAY + timedelta(hours=10))
    assert first is not None and isinstance(first["occupied"], bool)
    sent = [
        space.next_payload(MONDAY + timedelta(hours=10, seconds=10 * i)) for i in range(1, 91)
    ]  # 15 minutes, polled every 10 s
    states = [first["occupied"]] + [p["occupied"] for p in sent if p is not None]
    assert all(a != b for a, b in itertools.pairwise(states))  # changes only
    later = MONDAY + timedelta(hours=10) + space.heartbeat * 2
    assert space.next_payload(later) is not None  # the heartbeat is due


# --- faults ---------------------------------------------------------------------------------


def _stream(n: int = 60, seed: int = 0) -> list[Telemetry]:
    fleet = build_fleet(per_kind=5, seed=seed)
    return list(history(fleet, MONDAY + timedelta(hours=12), hours=n / 10 + 1))[:n]


@pytest.mark.parametrize("fault", list(FaultType))
def test_each_fault_type_does_what_it_says(fault: FaultType) -> None:
    messages = _stream()
    injector = FaultInjector(1.0, [fault], seed=1)
    now = MONDAY + timedelta(hours=12)
    out = [o for m in messages for o in injector.apply(m, now=now)]
    drained = injector.drain()  # held back, but their device sent nothing later
    out += drained
    assert all(o.fault is fault for o in out if o.fault is not None)
    faulted = [o for o in out if o.fault is fault]
    assert faulted and injector.counts[fault] > 0
    assert sum(injector.counts.values()) == injector.counts[fault]
    kinds = {m.device_id: m.kind for m in messages}
    if fault is FaultType.MALFORMED:
        assert len(out) == len(messages) == injector.counts[fault]
        for o in out:
            with pytest.raises(ValueError):
                json.loads(o.body)
            with pytest.raises(Rejection) as err:
                decode_native(kinds[o.device_id], o.body, received_at=now, attributes={})
            assert err.value.reason is RejectReason.MALFORMED_JSON
    elif fault is FaultType.SCHEMA:
        assert len(out) == len(messages)
        for o in out:
            assert isinstance(json.loads(o.body), dict)
            with pytest.raises(ValidationError):
                payload_model(kinds[o.device_id]).model_validate_json(o.body)
    elif fault is FaultType.FUTURE:
        for o in out:
            ts = datetime.fromisoformat(json.loads(o.body)["ts"])
            assert ts >= now + FUTURE_SHIFT
            assert ts.utcoffset() is not None
    elif fault is FaultType.DUPLICATE:
        assert len(out) == 2 * len(messages)
        assert [o.body for o in out[::2]] == [o.body for o in out[1::2]]
        assert [o.body for o in out[::2]] == [encode(m.payload) for m in messages]
    elif fault is FaultType.OUT_OF_ORDER:
        # Every message still arrives once...
        assert sorted(o.body for o in out) == sorted(encode(m.payload) for m in messages)
        # ...but held ones arrive after a later reading of the same device.
        last_ts: dict[str, datetime] = {}
        late = 0
        for o in out:
            ts = datetime.fromisoformat(json.loads(o.body)["ts"])
            if o.device_id in last_ts and ts < last_ts[o.device_id]:
                late += 1
                assert o.fault is FaultType.OUT_OF_ORDER
            last_ts[o.device_id] = max(ts, last_ts.get(o.device_id, ts))
        assert late == injector.counts[fault] - len(drained) > 0


def test_fault_probability_is_spread_over_types() -> None:
    messages = _stream(600, seed=2)
    injector = FaultInjector(0.3, seed=3)
    for m in messages:
        injector.apply(m)
    injector.drain()
    assert 0.2 * 600 < injector.total < 0.4 * 600
    assert all(count > 0 for count in injector.counts.values())
    assert FaultInjector(0.0).apply(messages[0]) == [FaultInjector(0.0).apply(messages[0])[0]]


def test_fault_injector_refuses_bad_settings() -> None:
    with pytest.raises(ValueError):
        FaultInjector(1.5)
    with pytest.raises(ValueError):
        FaultInjector(0.5, ["gremlins"])


# --- determinism ----------------------------------------------------------------------------


def _bodies(seed: int | str) -> list[bytes]:
    fleet = build_fleet(per_kind=4, seed=seed)
    injector = FaultInjector(0.2, seed=seed)
    end = MONDAY + timedelta(hours=9)
    out = [o.body for m in history(fleet, end, hours=6) for o in injector.apply(m, now=end)]
    return out + [o.body for o in injector.drain()]


def test_same_seed_same_stream() -> None:
    assert _bodies(42) == _bodies(42)
    assert _bodies(42) != _bodies(43)


def test_history_is_in_timestamp_order_and_ends_before_now() -> None:
    fleet = build_fleet(per_kind=3, seed=1)
    end = MONDAY + timedelta(hours=6)
    stamps = [datetime.fromisoformat(m.payload["ts"]) for m in history(fleet, end, hours=3)]
    assert stamps == sorted(stamps) and stamps[-1] < end and stamps[0] >= end - timedelta(hours=3)
    meters = _of(build_fleet([DeviceKind.WATER_METER], 20), WaterMeter)
    sent: dict[str, list[datetime]] = {}
    for m in history(meters, end, hours=30):
        sent.setdefault(m.device_id, []).append(datetime.fromisoformat(m.payload["ts"]))
    for m in meters:  # each meter on its own cadence
        stamps = sent.get(m.device_id, [])
        assert len(stamps) in (30 * 3600 // m.cadence_s, 30 * 3600 // m.cadence_s + 1)
        assert all(b - a == timedelta(seconds=m.cadence_s) for a, b in itertools.pairwise(stamps))
    assert {m.cadence_s for m in meters} >= {900, 3600}


def test_timestamps_carry_the_paris_offset_across_dst() -> None:
    meter = _of(build_fleet([DeviceKind.WATER_METER], 1), WaterMeter)[0]
    winter = meter.next_payload(datetime(2026, 3, 28, 12, tzinfo=PARIS))["ts"]
    summer = meter.next_payload(datetime(2026, 3, 29, 12, tzinfo=PARIS))["ts"]
    assert winter.endswith("+01:00") and summer.endswith("+02:00")
    with pytest.raises(ValueError):
        meter.next_payload(datetime(2026, 3, 30, 12))


# --- I/O helpers (no network) ---------------------------------------------------------------


def test_parse_mqtt_url() -> None:
    e = parse_mqtt_url("mqtt://sim%40quimper:p%3Ass@broker.local:1884")
    assert (e.host, e.port, e.username, e.password) == ("broker.local", 1884, "sim@quimper", "p:ss")
    assert parse_mqtt_url("mqtt://127.0.0.1").port == 1883
    for bad in ("http://x:1883", "mqtt://", "mqtt://h:notaport"):
        with pytest.raises(ValueError):
            parse_mqtt_url(bad)


def _registrations(n: int) -> list[Registration]:
    return [d.registration for d in build_fleet(per_kind=n, seed=1)]


def test_registration_posts_the_contract_and_accepts_201_and_409() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = json.loads(request.content)
        return httpx.Response(409 if body["id"].endswith("1") else 201, json={})

    regs = _registrations(4)
    result = register_devices(
        regs, api_url="http://api.test/", admin_key="k3y", transport=httpx.MockTransport(handler)
    )
    assert result.created + result.existing == len(regs) and result.existing == 3
    assert {r.url.path for r in seen} == {"/devices"} and {r.method for r in seen} == {"POST"}
    assert all(r.headers["authorization"] == "Bearer k3y" for r in seen)
    assert sorted(json.loads(r.content)["id"] for r in seen) == sorted(r.id for r in regs)
    by_id = {r.id: r.as_request() for r in regs}
    assert all(json.loads(r.content) == by_id[json.loads(r.content)["id"]] for r in seen)


def test_registration_failure_carries_the_response_body() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(422, json={"detail": "attributes.depth_mm: must be > 0"})

    with pytest.raises(RegistrationError, match=r"HTTP 422.*depth_mm"):
        register_devices(
            _registrations(2),
            api_url="http://api.test",
            admin_key="k",
            transport=httpx.MockTransport(handler),
        )


def test_cli_options() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([])
    assert args.kinds == all_kinds() and args.devices == 20 and args.rate == 20
    assert (args.duration, args.count, args.history_hours, args.faults) == (0, 0, 0, 0)
    assert args.qos == 1 and not args.no_register and args.id_prefix == "sim"
    args = parser.parse_args(
        [
            "--kinds",
            "parking_sensor,water_meter",
            "--fault-types",
            "future,duplicate",
            "--faults",
            "0.1",
            "--qos",
            "0",
            "--no-register",
            "--id-prefix",
            "lt",
        ]
    )
    assert args.kinds == [DeviceKind.PARKING_SENSOR, DeviceKind.WATER_METER]
    assert args.fault_types == [FaultType.FUTURE, FaultType.DUPLICATE]
    for bad in (
        ["--kinds", "toaster"],
        ["--faults", "2"],
        ["--id-prefix=_x"],
        ["--rate", "-1"],
        ["--qos", "2"],
        ["--fault-types", "gremlins"],
    ):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)
