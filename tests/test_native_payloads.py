"""The native payload schemas, tested as pure functions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from devices.kinds import DeviceKind
from devices.native import decode_native, fill_from_distance
from devices.readings import ParkingReading, WasteColumnReading, WaterMeterReading
from devices.rejections import Rejection, RejectReason

NOW = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)


def decode(kind: DeviceKind, raw: bytes, **attrs: object):  # type: ignore[no-untyped-def]
    return decode_native(kind, raw, received_at=NOW, attributes=attrs)


def reason(kind: DeviceKind, raw: bytes, **attrs: object) -> RejectReason:
    with pytest.raises(Rejection) as info:
        decode(kind, raw, **attrs)
    return info.value.reason


def test_water_meter_full_payload() -> None:
    r = decode(
        DeviceKind.WATER_METER,
        b'{"ts":"2026-11-26T06:55:00+01:00","index_m3":123.456,"flow_m3h":0.02,'
        b'"battery_pct":87,"alarms":["leak","backflow"]}',
    )
    assert isinstance(r, WaterMeterReading)
    assert r.ts == datetime(2026, 11, 26, 5, 55, tzinfo=UTC)
    assert (r.index_m3, r.flow_m3h, r.battery_pct) == (123.456, 0.02, 87)
    assert r.alarms == ("backflow", "leak")


def test_missing_ts_defaults_to_received_time() -> None:
    r = decode(DeviceKind.PARKING_SENSOR, b'{"occupied":true}')
    assert r == ParkingReading(ts=NOW, occupied=True, battery_pct=None)


def test_waste_distance_converted_with_registered_depth() -> None:
    r = decode(DeviceKind.WASTE_COLUMN, b'{"distance_mm":450}', depth_mm=1800)
    assert isinstance(r, WasteColumnReading)
    assert r.fill_pct == 75.0
    assert r.distance_mm == 450


def test_waste_fill_given_directly_wins_over_distance() -> None:
    r = decode(DeviceKind.WASTE_COLUMN, b'{"fill_pct":40,"distance_mm":450}', depth_mm=1800)
    assert isinstance(r, WasteColumnReading)
    assert r.fill_pct == 40


@pytest.mark.parametrize(
    ("distance", "depth", "fill"),
    [(0, 1000, 100.0), (1000, 1000, 0.0), (1500, 1000, 0.0), (333, 1000, 66.7)],
)
def test_fill_from_distance_clamps(distance: float, depth: float, fill: float) -> None:
    assert fill_from_distance(distance, depth) == fill


@pytest.mark.parametrize(
    ("kind", "raw", "expected"),
    [
        (DeviceKind.WATER_METER, b"{not json", RejectReason.MALFORMED_JSON),
        (DeviceKind.WATER_METER, b"\xff\xfe", RejectReason.MALFORMED_JSON),
        (DeviceKind.WATER_METER, b"[1,2]", RejectReason.SCHEMA_VIOLATION),
        (DeviceKind.WATER_METER, b"{}", RejectReason.SCHEMA_VIOLATION),
        (DeviceKind.WATER_METER, b'{"index_m3":-1}', RejectReason.SCHEMA_VIOLATION),
        (DeviceKind.WATER_METER, b'{"index_m3":"12 m3"}', RejectReason.SCHEMA_VIOLATION),
        (
            DeviceKind.WATER_METER,
            b'{"index_m3":1,"alarms":["fire"]}',
            RejectReason.SCHEMA_VIOLATION,
        ),
        (DeviceKind.WATER_METER, b'{"index_m3":1,"extra":2}', RejectReason.SCHEMA_VIOLATION),
        (
            DeviceKind.WATER_METER,
            b'{"index_m3":1,"ts":"2026-11-26T06:00:00"}',
            RejectReason.SCHEMA_VIOLATION,
        ),
        (DeviceKind.WASTE_COLUMN, b'{"fill_pct":101}', RejectReason.SCHEMA_VIOLATION),
        (DeviceKind.WASTE_COLUMN, b'{"temperature_c":20}', RejectReason.SCHEMA_VIOLATION),
        (DeviceKind.WASTE_COLUMN, b'{"distance_mm":100}', RejectReason.MISSING_ATTRIBUTE),
        (DeviceKind.PARKING_SENSOR, b'{"occupied":"maybe"}', RejectReason.SCHEMA_VIOLATION),
        (DeviceKind.PARKING_SENSOR, b'{"battery_pct":50}', RejectReason.SCHEMA_VIOLATION),
    ],
)
def test_bad_payloads_are_rejected_with_a_reason(
    kind: DeviceKind, raw: bytes, expected: RejectReason
) -> None:
    assert reason(kind, raw) == expected


def test_schema_violation_detail_names_the_field() -> None:
    with pytest.raises(Rejection) as info:
        decode(DeviceKind.WATER_METER, b'{"index_m3":-5}')
    assert "index_m3" in info.value.detail


def test_future_timestamp_beyond_ten_minutes_rejected() -> None:
    ahead = (NOW + timedelta(minutes=11)).isoformat()
    raw = f'{{"occupied":false,"ts":"{ahead}"}}'.encode()
    assert reason(DeviceKind.PARKING_SENSOR, raw) == RejectReason.FUTURE_TIMESTAMP


def test_slightly_ahead_and_late_timestamps_accepted() -> None:
    for ts in (NOW + timedelta(minutes=9), NOW - timedelta(days=30)):
        raw = f'{{"occupied":false,"ts":"{ts.isoformat()}"}}'.encode()
        assert decode(DeviceKind.PARKING_SENSOR, raw).ts == ts


def test_nan_is_not_a_number_we_store() -> None:
    assert reason(DeviceKind.WATER_METER, b'{"index_m3":NaN}') in (
        RejectReason.MALFORMED_JSON,
        RejectReason.SCHEMA_VIOLATION,
    )


@pytest.mark.parametrize(
    ("kind", "raw"),
    [
        # A boolean is never a number, a number never a boolean, a string neither.
        (DeviceKind.WATER_METER, b'{"index_m3": true}'),
        (DeviceKind.WATER_METER, b'{"index_m3": "12.5"}'),
        (DeviceKind.WATER_METER, b'{"index_m3": 1, "battery_pct": false}'),
        (DeviceKind.WASTE_COLUMN, b'{"fill_pct": true}'),
        (DeviceKind.PARKING_SENSOR, b'{"occupied": "yes"}'),
        (DeviceKind.PARKING_SENSOR, b'{"occupied": 1}'),
        (DeviceKind.PARKING_SENSOR, b'{"occupied": 0}'),
        (DeviceKind.PARKING_SENSOR, b'{"occupied": "true"}'),
        # ts is an RFC 3339 string with seconds and an offset, as the docs say.
        (DeviceKind.PARKING_SENSOR, b'{"occupied": true, "ts": 1764133200}'),
        (DeviceKind.PARKING_SENSOR, b'{"occupied": true, "ts": "1764133200"}'),
        (DeviceKind.PARKING_SENSOR, b'{"occupied": true, "ts": "2026-11-26"}'),
        (DeviceKind.PARKING_SENSOR, b'{"occupied": true, "ts": "2026-11-26T06:00+01:00"}'),
        (DeviceKind.PARKING_SENSOR, b'{"occupied": true, "ts": "2026-11-26T06:00:00"}'),
        (DeviceKind.PARKING_SENSOR, b'{"occupied": true, "ts": "2026-02-30T06:00:00Z"}'),
        (DeviceKind.PARKING_SENSOR, b'{"occupied": true, "ts": "-infinity"}'),
        (DeviceKind.WATER_METER, b'{"index_m3": NaN}'),
        (DeviceKind.WATER_METER, b'{"index_m3": 1e309}'),
    ],
)
def test_coercions_that_would_invent_data_are_schema_violations(
    kind: DeviceKind, raw: bytes
) -> None:
    assert reason(kind, raw) == RejectReason.SCHEMA_VIOLATION


def test_an_integer_is_a_number_and_rfc3339_variants_are_read() -> None:
    assert decode(DeviceKind.WATER_METER, b'{"index_m3": 12}').index_m3 == 12
    for text, expected in [
        ("2026-11-26T05:55:00Z", datetime(2026, 11, 26, 5, 55, tzinfo=UTC)),
        ("2026-11-26 06:55:00+01:00", datetime(2026, 11, 26, 5, 55, tzinfo=UTC)),
        ("2026-11-26t05:55:00.123456789z", datetime(2026, 11, 26, 5, 55, 0, 123456, tzinfo=UTC)),
    ]:
        raw = f'{{"occupied": false, "ts": "{text}"}}'.encode()
        assert decode(DeviceKind.PARKING_SENSOR, raw).ts == expected, text


def test_ts_rejection_says_what_is_wrong() -> None:
    with pytest.raises(Rejection) as info:
        decode(DeviceKind.PARKING_SENSOR, b'{"occupied": true, "ts": "2026-11-26T06:00:00"}')
    assert "no UTC offset" in info.value.detail
    with pytest.raises(Rejection) as info:
        decode(DeviceKind.PARKING_SENSOR, b'{"occupied": true, "ts": 1764133200}')
    assert "RFC 3339" in info.value.detail
