"""The simulator speaks LoRaWAN: real devices' payloads in ChirpStack v4 / TTS v3 envelopes.

Pure and fast: every frame is encoded by `simulators.encoders`, wrapped by `simulators.lorawan`,
then read back with the platform's own envelope parsers (`ingest.sources`) and decoders
(`devices.decoders`), and must give back what the simulated device measured.
"""

from __future__ import annotations

import argparse
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from paho.mqtt.client import topic_matches_sub

from api.schemas import DeviceCreate
from devices.decoders import DECODERS, Uplink
from devices.decoders.ranges import check_ranges
from devices.kinds import DeviceKind, all_kinds
from devices.native import decode_native, fill_from_distance
from devices.readings import ParkingReading, Reading, WasteColumnReading, WaterMeterReading
from devices.rejections import Rejection, RejectReason
from ingest.sources import (
    DEFAULT_TOPICS,
    Envelope,
    IdentityKind,
    SourceKind,
    parse_chirpstack,
    parse_tts,
)
from simulators.behaviour import (
    PARIS,
    Incident,
    ParkingSpace,
    SimDevice,
    Telemetry,
    WasteColumn,
    WaterMeter,
    build_fleet,
    history,
)
from simulators.cli import add_arguments
from simulators.encoders import (
    MODELS,
    PayloadEncoder,
    bosch_pls_heartbeat,
    bosch_pls_status,
    em310_udl,
    flowiq2200,
)
from simulators.faults import FUTURE_SHIFT, FaultInjector, FaultType, encode
from simulators.fleet import register_devices
from simulators.lorawan import (
    NetworkServerWire,
    WireFormat,
    bind_lorawan,
    dev_eui_for,
    tts_device_id,
)

MONDAY = datetime(2026, 3, 2, tzinfo=PARIS)
FORMATS = [WireFormat.CHIRPSTACK, WireFormat.TTS]
PARSERS = {WireFormat.CHIRPSTACK: parse_chirpstack, WireFormat.TTS: parse_tts}
SOURCES = {WireFormat.CHIRPSTACK: SourceKind.CHIRPSTACK, WireFormat.TTS: SourceKind.TTS}


def _decode(
    name: str, data: bytes, port: int, ts: datetime, attributes: dict[str, Any] | None = None
) -> list[Reading]:
    return DECODERS[name].decode(Uplink(data=data, port=port, time=ts, attributes=attributes or {}))


def _fleet(per_kind: int = 4, seed: int = 1) -> list[SimDevice]:
    fleet = build_fleet(per_kind=per_kind, seed=seed)
    bind_lorawan(fleet)
    return fleet


def _ts(msg: Telemetry) -> datetime:
    return datetime.fromisoformat(msg.payload["ts"])


# --- encoders, against our decoders -----------------------------------------------------------


def test_models_are_decoders_of_the_right_kind() -> None:
    for kind, model in MODELS.items():
        assert model.kind is kind
        assert DECODERS[model.decoder].info.kind is kind


def test_em310_udl_round_trip() -> None:
    # Milesight's documented example: battery 92 %, distance 2116 mm, position tilt.
    assert em310_udl(distance_mm=2116, battery_pct=92, tilt=True).data == bytes.fromhex(
        "01755C03824408040001"
    )
    ts = MONDAY
    for distance, battery, tilt in [
        (0, 0, False),
        (437.4, 99.6, False),
        (1893, 57.2, True),
        (65_532, 100, False),
    ]:
        frame = em310_udl(distance_mm=distance, battery_pct=battery, tilt=tilt)
        assert frame.port == 85
        [r] = _decode("milesight-em310-udl", frame.data, frame.port, ts, {"depth_mm": 1900})
        assert isinstance(r, WasteColumnReading)
        assert r.distance_mm is not None and abs(r.distance_mm - distance) <= 0.5
        assert r.battery_pct is not None and abs(r.battery_pct - battery) <= 0.5
        assert r.alarms == (("tilt",) if tilt else ())
        assert r.ts == ts


def test_simulated_columns_round_trip_through_the_em310() -> None:
    columns = [d for d in _fleet(30, seed=3) if isinstance(d, WasteColumn)]
    assert {c.report for c in columns} == {"fill", "distance", "both"}
    columns[0].incidents = [Incident("tilt", MONDAY, MONDAY + timedelta(days=2))]  # knocked over
    encoder = PayloadEncoder()
    for c in columns:
        attrs = c.registration.attributes
        for i in range(8):
            ts = MONDAY + timedelta(hours=3 * i)
            msg = c.telemetry(ts)
            assert msg is not None
            p = msg.payload
            frame = encoder.frame(msg, attrs)
            [r] = _decode(c.registration.decoder or "", frame.data, frame.port, ts, attrs)
            assert isinstance(r, WasteColumnReading)
            check_ranges(r)
            # The sensor measures a distance: a column reporting both sends its distance;
            # 1 mm is < 0.1 % of any column, and fill is reported to 0.1 %.
            if "distance_mm" in p:
                assert r.distance_mm == p["distance_mm"]
                expected = fill_from_distance(p["distance_mm"], attrs["depth_mm"])
            else:
                expected = p["fill_pct"]
            assert abs(r.fill_pct - expected) <= 0.11
            assert r.battery_pct is not None and abs(r.battery_pct - p["battery_pct"]) <= 0.5
            assert ("tilt" in r.alarms) == ("tilt" in p.get("alarms", ()))
    assert columns[0].telemetry(MONDAY + timedelta(days=1)) is not None


def test_bosch_frames_round_trip() -> None:
    # The published examples: status "occupied" is 01 on fPort 1; heartbeat 01 FF on fPort 2
    # is occupied at -1 °C.
    assert bosch_pls_status(True).port == 1 and bosch_pls_status(True).data == b"\x01"
    assert bosch_pls_heartbeat(True, -1.2).data == bytes.fromhex("01FF")
    for occupied in (False, True):
        s = bosch_pls_status(occupied)
        [r] = _decode("bosch-pls", s.data, s.port, MONDAY)
        assert isinstance(r, ParkingReading) and r.occupied is occupied
        for temp in (-20.4, 0.0, 11.6, 45.0):
            h = bosch_pls_heartbeat(occupied, temp)
            assert h.port == 2
            [r] = _decode("bosch-pls", h.data, h.port, MONDAY)
            assert isinstance(r, ParkingReading) and r.occupied is occupied
            assert r.temperature_c is not None and abs(r.temperature_c - temp) <= 0.5


def test_parking_sends_status_on_change_and_heartbeats_otherwise() -> None:
    space = next(d for d in _fleet(3) if isinstance(d, ParkingSpace))
    encoder = PayloadEncoder()
    ports: list[int] = []
    previous: bool | None = None
    for i in range(3 * 24 * 60):  # three days: heartbeats come after 3 h without a change
        ts = MONDAY + timedelta(minutes=i)
        msg = space.telemetry(ts)
        if msg is None:
            continue
        frame = encoder.frame(msg, {})
        changed = previous is not None and previous != msg.payload["occupied"]
        assert frame.port == (1 if changed else 2)
        [r] = _decode("bosch-pls", frame.data, frame.port, ts)
        assert isinstance(r, ParkingReading) and r.occupied is msg.payload["occupied"]
        if frame.port == 2:
            assert r.temperature_c is not None and -10 < r.temperature_c < 35
        previous = msg.payload["occupied"]
        ports.append(frame.port)
    assert ports.count(1) > 5 and ports.count(2) > 3


def test_flowiq2200_round_trip() -> None:
    ts = MONDAY
    cases: list[tuple[float, float | None, tuple[str, ...]]] = [
        (0.0, 0.0, ()),
        (1234.567, 0.342, ("leak",)),
        (20_000.001, 3.9, ("leak", "low_battery")),
        (7.5, None, ("backflow", "burst", "dry", "leak", "low_battery", "tamper")),
        (42.0, -0.125, ("backflow",)),
    ]
    for index, flow, alarms in cases:
        frame = flowiq2200(index_m3=index, flow_m3h=flow, alarms=alarms)
        [r] = _decode("kamstrup-flowiq2200-lorawan", frame.data, frame.port, ts)
        assert isinstance(r, WaterMeterReading)
        assert abs(r.index_m3 - index) < 0.0005  # litres
        if flow is None:
            assert r.flow_m3h is None
        else:
            assert r.flow_m3h is not None and abs(r.flow_m3h - flow) < 0.0005  # l/h
        assert r.alarms == tuple(sorted(alarms))
        assert r.ts == ts  # no meter clock in the frame: the network's time
    with pytest.raises(ValueError):
        flowiq2200(index_m3=3e6)


def test_simulated_meters_round_trip_through_the_flowiq() -> None:
    meters = [d for d in _fleet(40, seed=6) if isinstance(d, WaterMeter)]
    meters[0].start_leak(MONDAY - timedelta(hours=8), 0.03)
    encoder = PayloadEncoder()
    alarms_seen: set[str] = set()
    for m in meters:
        for i in range(6):
            ts = MONDAY + timedelta(hours=4 * i)
            msg = m.telemetry(ts)
            assert msg is not None
            p = msg.payload
            frame = encoder.frame(msg, m.registration.attributes)
            [r] = _decode(m.registration.decoder or "", frame.data, frame.port, ts)
            assert isinstance(r, WaterMeterReading)
            check_ranges(r)
            assert abs(r.index_m3 - p["index_m3"]) < 0.0005
            if "flow_m3h" in p:
                assert r.flow_m3h is not None and abs(r.flow_m3h - p["flow_m3h"]) < 0.0005
            else:  # a twice-a-day pulse module measures no flow
                assert r.flow_m3h is None
            assert r.alarms == tuple(sorted(p.get("alarms", ())))
            alarms_seen |= set(r.alarms)
    assert {"leak", "low_battery"} <= alarms_seen <= {"leak", "low_battery", "burst"}


# --- identities and registration -------------------------------------------------------------


def test_dev_euis_are_stable_hex_and_registered_with_a_decoder() -> None:
    fleet = _fleet(10)
    euis = [d.registration.dev_eui for d in fleet]
    assert all(e is not None and re.fullmatch(r"[0-9a-f]{16}", e) for e in euis)
    assert len(set(euis)) == len(euis)
    again = build_fleet(per_kind=10, seed=99)  # another seed: same ids, same DevEUIs
    bind_lorawan(again)
    assert [d.registration.dev_eui for d in again] == euis
    assert dev_eui_for("sim-wm-0001") == fleet[0].registration.dev_eui
    for d in fleet:
        body = d.registration.as_request()
        assert body["decoder"] == MODELS[d.kind].decoder
        assert body["dev_eui"] == d.registration.dev_eui
        created = DeviceCreate.model_validate(body)
        assert created.dev_eui == body["dev_eui"] and created.decoder == body["decoder"]
        if d.kind is DeviceKind.WASTE_COLUMN:
            assert body["attributes"]["depth_mm"] > 0
    assert tts_device_id("Load.Test_1-wm-0001") == "load-test-1-wm-0001"


def test_registration_binds_existing_devices_with_a_patch() -> None:
    seen: list[tuple[str, str, dict[str, Any]]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append((request.method, request.url.path, body))
        if request.method == "POST":
            return httpx.Response(409 if body["id"].endswith("1") else 201, json={})
        return httpx.Response(200, json={})

    regs = [d.registration for d in _fleet(2)]
    result = register_devices(
        regs, api_url="http://api.test", admin_key="k", transport=httpx.MockTransport(handler)
    )
    assert (result.created, result.existing) == (3, 3)
    patches = {path: body for method, path, body in seen if method == "PATCH"}
    by_id = {r.id: r for r in regs}
    assert set(patches) == {f"/devices/{i}" for i in by_id if i.endswith("1")}
    for path, body in patches.items():
        reg = by_id[path.rsplit("/", 1)[1]]
        assert body == {"dev_eui": reg.dev_eui, "decoder": reg.decoder}


# --- envelopes, against the platform's parsers ------------------------------------------------


def _envelopes(
    fmt: WireFormat, fleet: list[SimDevice], hours: float = 10, seed: int = 1
) -> list[tuple[Telemetry, str, bytes, Envelope]]:
    wire = NetworkServerWire(fmt, fleet, seed=seed)
    out = []
    for msg in history(fleet, MONDAY + timedelta(hours=12), hours=hours):
        o = wire.encode(msg)
        assert o.topic is not None and o.device_id == msg.device_id and o.fault is None
        out.append((msg, o.topic, o.body, PARSERS[fmt](o.topic, o.body)))
    return out


@pytest.mark.parametrize("fmt", FORMATS)
def test_envelopes_carry_identity_port_bytes_and_frame_counter(fmt: WireFormat) -> None:
    fleet = _fleet(4)
    regs = {d.device_id: d.registration for d in fleet}
    expected_frames = PayloadEncoder()
    fcnt: dict[str, int] = {}
    sent = _envelopes(fmt, fleet)
    for msg, topic, body, env in sent:
        reg = regs[msg.device_id]
        assert topic_matches_sub(DEFAULT_TOPICS[SOURCES[fmt]], topic)
        assert env.identity is IdentityKind.DEV_EUI and env.key == reg.dev_eui
        frame = expected_frames.frame(msg, reg.attributes)
        assert (env.port, env.data) == (frame.port, frame.data)
        assert env.time == _ts(msg).astimezone(UTC)
        assert env.radio is not None
        assert env.radio.frame_counter == fcnt.get(msg.device_id, 0)
        fcnt[msg.device_id] = env.radio.frame_counter + 1
        assert env.radio.rssi_dbm is not None and -140 < env.radio.rssi_dbm < -30
        assert env.radio.snr_db is not None and -20 <= env.radio.snr_db <= 14
        assert env.radio.gateway_id is not None and re.fullmatch(
            r"[0-9a-f]{16}", env.radio.gateway_id
        )
        obj = json.loads(body)
        if fmt is WireFormat.CHIRPSTACK:
            assert topic.split("/")[3] == reg.dev_eui
            assert obj["fCnt"] == env.radio.frame_counter
        else:
            assert topic.split("/")[3] == obj["end_device_ids"]["device_id"]
            assert ("f_cnt" in obj["uplink_message"]) == (env.radio.frame_counter > 0)
    assert set(fcnt) == set(regs) and max(fcnt.values()) >= 8


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_envelope_decodes_to_what_the_device_measured(fmt: WireFormat) -> None:
    fleet = _fleet(6, seed=4)
    regs = {d.device_id: d.registration for d in fleet}
    kinds: set[DeviceKind] = set()
    for msg, _topic, _body, env in _envelopes(fmt, fleet, hours=6, seed=4):
        reg = regs[msg.device_id]
        assert env.time is not None and reg.decoder is not None
        readings = _decode(reg.decoder, env.data, env.port or 0, env.time, reg.attributes)
        native = decode_native(
            msg.kind, encode(msg.payload), received_at=env.time, attributes=reg.attributes
        )
        [r] = readings
        check_ranges(r)
        assert r.ts == native.ts
        if isinstance(r, WaterMeterReading):
            assert isinstance(native, WaterMeterReading)
            assert abs(r.index_m3 - native.index_m3) < 0.0005 and r.alarms == native.alarms
        elif isinstance(r, WasteColumnReading):
            assert isinstance(native, WasteColumnReading)
            if native.distance_mm is not None:  # what the sensor measured
                assert r.distance_mm == native.distance_mm
            else:
                assert abs(r.fill_pct - native.fill_pct) <= 0.11
        else:
            assert isinstance(r, ParkingReading) and isinstance(native, ParkingReading)
            assert r.occupied is native.occupied
        kinds.add(msg.kind)
    assert kinds == set(all_kinds())


def test_same_seed_same_envelopes() -> None:
    def bodies(seed: int) -> list[bytes]:
        return [b for _m, _t, b, _e in _envelopes(WireFormat.CHIRPSTACK, _fleet(3, seed), 1, seed)]

    assert bodies(5) == bodies(5)
    assert bodies(5) != bodies(6)


# --- faults in network-server formats ---------------------------------------------------------


@pytest.mark.parametrize("fault", list(FaultType))
@pytest.mark.parametrize("fmt", FORMATS)
def test_faults_apply_to_the_envelopes(fmt: WireFormat, fault: FaultType) -> None:
    fleet = _fleet(5)
    wire = NetworkServerWire(fmt, fleet, seed=1)
    injector = FaultInjector(1.0, [fault], seed=1, wire=wire)
    now = MONDAY + timedelta(hours=12)
    messages = list(history(fleet, now, hours=2))[:60]
    out = [o for m in messages for o in injector.apply(m, now=now)]
    drained = injector.drain()
    out += drained
    parse = PARSERS[fmt]
    # (with out_of_order, the message a held one waits for goes out unfaulted)
    assert out and all(o.fault in (fault, None) and o.topic is not None for o in out)
    assert sum(o.fault is fault for o in out) >= injector.counts[fault] > 0
    assert all(topic_matches_sub(DEFAULT_TOPICS[SOURCES[fmt]], o.topic or "") for o in out)
    if fault is FaultType.MALFORMED:
        assert len(out) == len(messages)
        for o in out:
            with pytest.raises(Rejection) as err:
                parse(o.topic or "", o.body)
            assert err.value.reason is RejectReason.MALFORMED_JSON
    elif fault is FaultType.SCHEMA:
        assert len(out) == len(messages)
        for o in out:
            assert isinstance(json.loads(o.body), dict)
            with pytest.raises(Rejection) as err:
                parse(o.topic or "", o.body)
            assert err.value.reason is RejectReason.SCHEMA_VIOLATION
    elif fault is FaultType.FUTURE:
        for o in out:
            env = parse(o.topic or "", o.body)
            assert env.time is not None and env.time >= now + FUTURE_SHIFT
    elif fault is FaultType.DUPLICATE:
        assert len(out) == 2 * len(messages)
        assert [o.body for o in out[::2]] == [o.body for o in out[1::2]]
        counters = [parse(o.topic or "", o.body).radio for o in out[::2]]
        assert all(c is not None and c.frame_counter is not None for c in counters)
    elif fault is FaultType.OUT_OF_ORDER:
        frames = [(o.device_id, parse(o.topic or "", o.body)) for o in out]
        # Every frame arrives once...
        seen = sorted((d, e.radio.frame_counter if e.radio else -1) for d, e in frames)
        assert len(seen) == len(set(seen)) == len(messages)
        # ...but held ones after a later frame of the same device.
        last: dict[str, datetime] = {}
        late = 0
        for d, e in frames:
            assert e.time is not None
            if d in last and e.time < last[d]:
                late += 1
            last[d] = max(e.time, last.get(d, e.time))
        assert late == injector.counts[fault] - len(drained) > 0


# --- CLI --------------------------------------------------------------------------------------


def test_cli_format_option() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert parser.parse_args([]).format is WireFormat.NATIVE
    assert parser.parse_args(["--format", "chirpstack"]).format is WireFormat.CHIRPSTACK
    assert parser.parse_args(["--format", "tts"]).format is WireFormat.TTS
    with pytest.raises(SystemExit):
        parser.parse_args(["--format", "sigfox"])
