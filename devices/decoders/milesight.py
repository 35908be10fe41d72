"""Milesight distance / fill-level sensors: EM310-UDL, EM400-UDL, EM400-MUD, EM500-UDL, WS201.

All of them speak Milesight's "channel / type" TLV format (default fPort 85): a frame is a
sequence of `channel id (1 byte) | channel type (1 byte) | value`, the value length being fixed
by the (id, type) pair, multi-byte values little-endian. The pairs a model sends differ, so each
model has its own table; the walk over the frame is shared.

Channels read, by model (units as Milesight documents them):
- every model: 0x01 0x75 battery (uint8, %);
- EM310-UDL: 0x03 0x82 distance (uint16, mm), 0x04 0x00 position (0 normal, 1 tilt);
- EM400-UDL / EM400-MUD: 0x03 0x67 temperature (int16, 0.1 °C), 0x04 0x82 distance (uint16, mm),
  0x05 0x00 position, 0x06 0x88 location (NB-IoT variant, 9 bytes, skipped),
  0x83 0x67 temperature + threshold-alarm status, 0x84 0x82 distance + threshold-alarm status;
- EM500-UDL: 0x03 0x82 distance (uint16, mm), 0x83 0xE9 distance alarm (distance, mutation,
  status), 0x20 0xCE history point (uint32 Unix time + uint16 distance, mm);
- WS201: 0x03 0x82 distance (uint16, mm), 0x04 0xD6 remaining (uint8, %).

Channel 0xFF carries device attributes (protocol/hardware/firmware version, serial number,
LoRaWAN class, power-on, reset): they are skipped. Other 0xFF / 0xFE types are replies to
downlink commands, whose lengths differ per model and firmware; nothing after them is a
measurement, so the walk stops there. A frame with no distance (nor WS201 remaining level),
e.g. the power-on attribute frame, is a well-formed frame without a measurement. An unknown
channel anywhere else makes the rest of the frame unreadable (its length is unknown), so the
frame is rejected as undecodable rather than half-read.

Mapping to readings:
- position "tilt" -> alarm `tilt`. Milesight's own codec names the key `position`; the TTN
  device-repository codec for the EM310-UDL names it `tilt` (same bytes, same meaning).
- The threshold alarms (0x83 0x67 temperature, 0x84 0x82 / 0x83 0xE9 distance) are user-set
  thresholds on the measured values, not one of our waste alarms (fire, tilt, lid_open): the
  values are kept, the alarm status is left out.
- WS201 `remaining` is the percentage of content left in the monitored container (the device
  computes it from its configured depth), i.e. the fill level: it becomes `fill_pct` directly,
  without the registered depth. Other models report a distance only: fill comes from depth_mm.
- A distance of 0xFFFD..0xFFFF is a sensor status code (0xFFFD = "out of measuring range" in
  Milesight's EM400 documentation), not a distance: the frame is undecodable.
- EM500-UDL history points are stored at their own time; their timestamps are Unix seconds,
  so they are UTC by definition (no device time zone is involved).
- The fPort is not checked: 85 is only the default application port, and it is configurable.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from devices.decoders.base import Decoder, DecoderInfo, Uplink
from devices.decoders.util import undecodable, waste_from_distance
from devices.kinds import DeviceKind
from devices.readings import Reading, WasteColumnReading
from devices.rejections import Rejection, RejectReason

DEFAULT_PORT = 85

# Attribute channels (id 0xFF): type -> value length. Reported on power-on / on request.
_ATTRIBUTE_SIZES: dict[int, int] = {
    0x01: 1,  # IPSO / protocol version
    0x09: 2,  # hardware version
    0x0A: 2,  # firmware version
    0x0B: 1,  # device status (power on)
    0x0F: 1,  # LoRaWAN class
    0x16: 8,  # serial number
    0xFE: 1,  # reset event
    0xFF: 2,  # TSL version
}

_DISTANCE_ERROR_MIN = 0xFFFD


@dataclass
class _Frame:
    """What one frame said, filled channel by channel (local to one decode call)."""

    model: str
    battery_pct: float | None = None
    temperature_c: float | None = None
    distance_mm: float | None = None
    remaining_pct: float | None = None
    tilt: bool = False
    history: list[tuple[datetime, float]] = field(default_factory=list)


_Handler = Callable[[_Frame, bytes], None]


@dataclass(frozen=True)
class _Channel:
    size: int
    read: _Handler


def _u16(v: bytes) -> int:
    return int.from_bytes(v[:2], "little")


def _s16(v: bytes) -> int:
    return int.from_bytes(v[:2], "little", signed=True)


def _distance(frame: _Frame, raw: int) -> int:
    if raw >= _DISTANCE_ERROR_MIN:
        raise undecodable(
            f"Milesight {frame.model}: distance 0x{raw:04X} is a sensor status code "
            "(out of measuring range / no reading), not a distance"
        )
    return raw


def _battery(f: _Frame, v: bytes) -> None:
    f.battery_pct = float(v[0])


def _distance_u16(f: _Frame, v: bytes) -> None:
    f.distance_mm = float(_distance(f, _u16(v)))


def _temperature(f: _Frame, v: bytes) -> None:
    f.temperature_c = _s16(v) / 10


def _position(f: _Frame, v: bytes) -> None:
    if v[0] not in (0, 1):
        raise undecodable(f"Milesight {f.model}: position value {v[0]} is not 0 (normal) or 1")
    f.tilt = v[0] == 1


def _temperature_threshold(f: _Frame, v: bytes) -> None:
    # temperature + threshold-alarm status (v[2]): the status is not one of our alarms.
    f.temperature_c = _s16(v) / 10


def _distance_threshold(f: _Frame, v: bytes) -> None:
    # distance + threshold-alarm status (v[2]): the status is not one of our alarms.
    f.distance_mm = float(_distance(f, _u16(v)))


def _em500_distance_alarm(f: _Frame, v: bytes) -> None:
    # distance (2) + distance mutation (2) + alarm status (1). Milesight's codec divides both
    # 16-bit values by 10 for this channel only and labels the result mm, i.e. the raw unit
    # is 0.1 mm; we follow it. The mutation and the alarm status are not stored.
    f.distance_mm = _distance(f, _u16(v)) / 10


def _em500_history(f: _Frame, v: bytes) -> None:
    ts = datetime.fromtimestamp(int.from_bytes(v[0:4], "little"), tz=UTC)
    f.history.append((ts, float(_distance(f, _u16(v[4:6])))))


def _remaining(f: _Frame, v: bytes) -> None:
    f.remaining_pct = float(v[0])


def _skip(f: _Frame, v: bytes) -> None:
    return None


_BATTERY = _Channel(1, _battery)

EM310_UDL: Mapping[tuple[int, int], _Channel] = {
    (0x01, 0x75): _BATTERY,
    (0x03, 0x82): _Channel(2, _distance_u16),
    (0x04, 0x00): _Channel(1, _position),
}

EM400: Mapping[tuple[int, int], _Channel] = {
    (0x01, 0x75): _BATTERY,
    (0x03, 0x67): _Channel(2, _temperature),
    (0x04, 0x82): _Channel(2, _distance_u16),
    (0x05, 0x00): _Channel(1, _position),
    (0x06, 0x88): _Channel(9, _skip),  # NB-IoT location + motion status
    (0x83, 0x67): _Channel(3, _temperature_threshold),
    (0x84, 0x82): _Channel(3, _distance_threshold),
}

EM500_UDL: Mapping[tuple[int, int], _Channel] = {
    (0x01, 0x75): _BATTERY,
    (0x03, 0x82): _Channel(2, _distance_u16),
    (0x83, 0xE9): _Channel(5, _em500_distance_alarm),
    (0x20, 0xCE): _Channel(6, _em500_history),
}

WS201: Mapping[tuple[int, int], _Channel] = {
    (0x01, 0x75): _BATTERY,
    (0x03, 0x82): _Channel(2, _distance_u16),
    (0x04, 0xD6): _Channel(1, _remaining),
}


def parse(model: str, channels: Mapping[tuple[int, int], _Channel], data: bytes) -> _Frame:
    """Walk a Milesight TLV frame with one model's channel table."""
    frame = _Frame(model=model)
    if not data:
        raise undecodable(f"Milesight {model}: empty frame")
    i = 0
    while i < len(data):
        if i + 2 > len(data):
            raise undecodable(f"Milesight {model}: channel header truncated at byte {i}")
        cid, ctype = data[i], data[i + 1]
        at = i
        i += 2
        channel = channels.get((cid, ctype))
        if channel is not None:
            size = channel.size
        elif cid == 0xFF and ctype in _ATTRIBUTE_SIZES:
            size = _ATTRIBUTE_SIZES[ctype]
        elif cid in (0xFE, 0xFF):
            break  # downlink reply / configuration: no measurement follows
        else:
            raise undecodable(
                f"Milesight {model}: unknown channel 0x{cid:02X} 0x{ctype:02X} at byte {at}"
            )
        if i + size > len(data):
            raise undecodable(
                f"Milesight {model}: channel 0x{cid:02X} 0x{ctype:02X} needs {size} value "
                f"bytes at byte {i}, frame has {len(data) - i}"
            )
        if channel is not None:
            channel.read(frame, data[i : i + size])
        i += size
    return frame


def readings(frame: _Frame, uplink: Uplink) -> list[Reading]:
    out: list[Reading] = []
    alarms = ("tilt",) if frame.tilt else ()
    if frame.remaining_pct is not None:
        out.append(
            WasteColumnReading(
                ts=uplink.time,
                fill_pct=frame.remaining_pct,
                distance_mm=frame.distance_mm,
                temperature_c=frame.temperature_c,
                battery_pct=frame.battery_pct,
                alarms=alarms,
            )
        )
    elif frame.distance_mm is not None:
        out.append(
            waste_from_distance(
                uplink.time,
                frame.distance_mm,
                uplink.attributes,
                temperature_c=frame.temperature_c,
                battery_pct=frame.battery_pct,
                alarms=alarms,
            )
        )
    for ts, distance in frame.history:
        out.append(waste_from_distance(ts, distance, uplink.attributes))
    if not out:
        raise Rejection(
            RejectReason.NO_MEASUREMENT,
            f"Milesight {frame.model}: frame carries no distance or fill level "
            "(attribute / configuration frame)",
        )
    return out


def _decoder(
    name: str, model: str, channels: Mapping[tuple[int, int], _Channel], description: str
) -> Decoder:
    def decode(uplink: Uplink) -> list[Reading]:
        return readings(parse(model, channels, uplink.data), uplink)

    return Decoder(
        info=DecoderInfo(
            name=name,
            vendor="Milesight",
            model=model,
            kind=DeviceKind.WASTE_COLUMN,
            description=description,
        ),
        decode=decode,
    )


DECODERS: list[Decoder] = [
    _decoder(
        "milesight-em310-udl",
        "EM310-UDL",
        EM310_UDL,
        "Ultrasonic distance/level sensor: distance (mm), battery %, tilt. Needs depth_mm.",
    ),
    _decoder(
        "milesight-em400-udl",
        "EM400-UDL",
        EM400,
        "Ultrasonic distance/level sensor: distance (mm), temperature, battery %, tilt. "
        "Needs depth_mm.",
    ),
    _decoder(
        "milesight-em400-mud",
        "EM400-MUD",
        EM400,
        "Multifunctional ultrasonic distance/level sensor: distance (mm), temperature, "
        "battery %, tilt. Needs depth_mm.",
    ),
    _decoder(
        "milesight-em500-udl",
        "EM500-UDL",
        EM500_UDL,
        "Ultrasonic distance/level sensor: distance (mm), battery %, timestamped history "
        "points. Needs depth_mm.",
    ),
    _decoder(
        "milesight-ws201",
        "WS201",
        WS201,
        "Fill level monitoring sensor: device-computed remaining level (%) stored as fill, "
        "distance (mm), battery %.",
    ),
]
