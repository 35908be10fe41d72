"""The binary payloads real LoRaWAN devices send, built from what the simulated devices measure.

Pure: bytes in, bytes out, no clock, no I/O. Each encoder is the inverse of one of the
platform's decoders (`devices.decoders`), written from the layout that decoder documents, so
the simulator exercises the very decoding path a field deployment takes:

- waste column: Milesight EM310-UDL (`milesight-em310-udl`), fPort 85: battery, distance,
  position;
- parking space: Bosch Parking Lot Sensor (`bosch-pls`): fPort 1 status on every change,
  fPort 2 heartbeat with temperature;
- water meter: Kamstrup flowIQ 2200 (`kamstrup-flowiq2200-lorawan`), fPort 1: M-Bus volume,
  flow and info codes.

What each model cannot carry is lost on the way, as it would be in the field: the EM310-UDL has
no temperature and no fire / lid alarm (only tilt), the Bosch sensor reports no battery level,
the flowIQ frame no battery level (its info codes still flag a low battery).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from devices.kinds import DeviceKind
from simulators.behaviour import Telemetry, quimper_ambient_c


@dataclass(frozen=True, slots=True)
class Frame:
    """One LoRaWAN application payload: FRMPayload bytes and the fPort they go on."""

    port: int
    data: bytes


def _u8(value: float, lo: int = 0, hi: int = 0xFF) -> int:
    return min(hi, max(lo, round(value)))


# --- Milesight EM310-UDL ----------------------------------------------------------------------
#
# Milesight channel/type TLV frame, multi-byte values little-endian:
#   01 75 battery (uint8, %) | 03 82 distance (uint16, mm) | 04 00 position (0 normal, 1 tilt)

EM310_UDL_PORT = 85
_EM310_MAX_DISTANCE_MM = 0xFFFC  # 0xFFFD-0xFFFF are sensor status codes, not distances


def em310_udl(*, distance_mm: float, battery_pct: float, tilt: bool = False) -> Frame:
    distance = min(_EM310_MAX_DISTANCE_MM, max(0, round(distance_mm)))
    return Frame(
        EM310_UDL_PORT,
        bytes([0x01, 0x75, _u8(battery_pct, 0, 100), 0x03, 0x82])
        + distance.to_bytes(2, "little")
        + bytes([0x04, 0x00, 1 if tilt else 0]),
    )


def column_distance_mm(payload: Mapping[str, Any], depth_mm: float) -> float:
    """What the ultrasonic sensor measures: the reported distance, or the fill level seen from
    the top of a column `depth_mm` deep."""
    distance = payload.get("distance_mm")
    if distance is not None:
        return float(distance)
    return depth_mm * (1 - float(payload["fill_pct"]) / 100)


# --- Bosch Parking Lot Sensor -----------------------------------------------------------------
#
# The frame type is the fPort: 1 parking status (sent on every change, byte 0 bit 0 occupied),
# 2 heartbeat (byte 0 bit 0 occupied, byte 1 temperature in °C as a signed byte).

BOSCH_STATUS_PORT = 1
BOSCH_HEARTBEAT_PORT = 2


def bosch_pls_status(occupied: bool) -> Frame:
    return Frame(BOSCH_STATUS_PORT, bytes([0x01 if occupied else 0x00]))


def bosch_pls_heartbeat(occupied: bool, temperature_c: float | None = None) -> Frame:
    data = bytes([0x01 if occupied else 0x00])
    if temperature_c is not None:
        data += _u8(temperature_c, -128, 127).to_bytes(1, "little", signed=True)
    return Frame(BOSCH_HEARTBEAT_PORT, data)


# --- Kamstrup flowIQ 2200 ---------------------------------------------------------------------
#
# An M-Bus application layer (EN 13757-3): CI 0x78 (no transport header), then data records
# `DIF VIF [VIFE] value` (values little-endian, type B signed binary):
#   04 13     volume, 32-bit, litres (VIF 0x13 = 10^-3 m³): the index
#   02 3B     volume flow, 16-bit, l/h (VIF 0x3B = 10^-3 m³/h)
#   02 FF 25  Kamstrup info codes (manufacturer VIFE 0x25), 16 bits
# No date/time record: the meter's clock has minute resolution, and the reading then takes the
# network's reception time, which keeps frames sent seconds apart distinct.

FLOWIQ_PORT = 1
_CI_NO_HEADER = 0x78
# Info code bits, as the decoder maps them (6 and 7, ambient temperature, have no alarm).
_INFO_BITS: dict[str, int] = {
    "dry": 0,
    "backflow": 1,
    "leak": 2,
    "burst": 3,
    "tamper": 4,
    "low_battery": 5,
}
_FLOW_MAX_LH = 0x7FFF  # 0x8000 is the type B "invalid" marker


def flowiq2200(*, index_m3: float, flow_m3h: float | None = None,
               alarms: Iterable[str] = ()) -> Frame:
    litres = round(index_m3 * 1000)
    if not 0 <= litres < 1 << 31:
        raise ValueError(f"index {index_m3} m³ does not fit a 32-bit litre register")
    data = bytes([_CI_NO_HEADER, 0x04, 0x13]) + litres.to_bytes(4, "little", signed=True)
    if flow_m3h is not None:
        flow = max(-_FLOW_MAX_LH, min(_FLOW_MAX_LH, round(flow_m3h * 1000)))
        data += bytes([0x02, 0x3B]) + flow.to_bytes(2, "little", signed=True)
    info = 0
    for alarm in alarms:
        if alarm in _INFO_BITS:
            info |= 1 << _INFO_BITS[alarm]
    data += bytes([0x02, 0xFF, 0x25]) + info.to_bytes(2, "little")
    return Frame(FLOWIQ_PORT, data)


# --- models bound to the simulated kinds ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceModel:
    """The real device a simulated kind is dressed as, and the decoder the platform binds."""

    kind: DeviceKind
    vendor: str
    model: str
    decoder: str  # a name in devices.decoders.DECODERS


MODELS: dict[DeviceKind, DeviceModel] = {
    DeviceKind.WATER_METER: DeviceModel(
        DeviceKind.WATER_METER, "Kamstrup", "flowIQ 2200", "kamstrup-flowiq2200-lorawan"),
    DeviceKind.WASTE_COLUMN: DeviceModel(
        DeviceKind.WASTE_COLUMN, "Milesight", "EM310-UDL", "milesight-em310-udl"),
    DeviceKind.PARKING_SENSOR: DeviceModel(
        DeviceKind.PARKING_SENSOR, "Bosch", "Parking Lot Sensor", "bosch-pls"),
}


class PayloadEncoder:
    """Turns each native reading of a fleet into its model's frame.

    Stateful only where the device is: a parking sensor sends a status frame when its
    occupancy changed since its previous frame and a heartbeat otherwise (and for its first
    frame, whose predecessor is unknown).
    """

    def __init__(self) -> None:
        self._parking: dict[str, bool] = {}

    def frame(self, msg: Telemetry, attributes: Mapping[str, Any]) -> Frame:
        p = msg.payload
        if msg.kind is DeviceKind.WATER_METER:
            return flowiq2200(index_m3=float(p["index_m3"]), flow_m3h=p.get("flow_m3h"),
                              alarms=p.get("alarms", ()))
        if msg.kind is DeviceKind.WASTE_COLUMN:
            depth = attributes.get("depth_mm")
            if not depth and p.get("distance_mm") is None:
                raise ValueError(f"{msg.device_id}: a fill level needs the column's depth_mm")
            return em310_udl(
                distance_mm=column_distance_mm(p, float(depth or 0)),
                battery_pct=float(p.get("battery_pct", 100.0)),
                tilt="tilt" in p.get("alarms", ()),
            )
        occupied = bool(p["occupied"])
        previous = self._parking.get(msg.device_id)
        self._parking[msg.device_id] = occupied
        if previous is not None and previous != occupied:
            return bosch_pls_status(occupied)
        ts = datetime.fromisoformat(p["ts"])
        return bosch_pls_heartbeat(occupied, quimper_ambient_c(ts))


__all__ = [
    "BOSCH_HEARTBEAT_PORT",
    "BOSCH_STATUS_PORT",
    "EM310_UDL_PORT",
    "FLOWIQ_PORT",
    "MODELS",
    "DeviceModel",
    "Frame",
    "PayloadEncoder",
    "bosch_pls_heartbeat",
    "bosch_pls_status",
    "column_distance_mm",
    "em310_udl",
    "flowiq2200",
]
