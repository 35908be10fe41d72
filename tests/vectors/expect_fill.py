"""What each fill-level corpus sample must become: waste-column readings.

Expected values are computed from the published decoded values (converted to our names and
units), never copied. Distance sensors are registered with a `depth_mm`, so the expected fill
level is `fill_from_distance(published distance in mm, depth)`.
"""

from __future__ import annotations

from typing import Any

from devices.native import fill_from_distance
from tests.vectors.expect import Expect, ExpectFn

COLUMN_DEPTH_MM = 3000  # a 3 m underground column
SMALL_BIN_DEPTH_MM = 1000


def _num(value: Any) -> float:
    """A published number, possibly a string with its unit ("2000 mm", "25 ℃")."""
    return float(str(value).split()[0])


def _milesight(depth_mm: int) -> ExpectFn:
    """Milesight EM310/EM400/EM500: distance mm, battery %, temperature, position -> tilt.

    Milesight's codec names the tilt key `position`; the TTN codec for the EM310-UDL `tilt`.
    """

    def expect(d: dict[str, Any]) -> list[dict[str, Any]]:
        tilted = d.get("position", d.get("tilt")) == "tilt"
        return [
            {
                "distance_mm": d["distance"],
                "fill_pct": fill_from_distance(d["distance"], depth_mm),
                "battery_pct": d.get("battery"),
                "temperature_c": d.get("temperature"),
                "battery_v": None,
                "alarms": ("tilt",) if tilted else (),
            }
        ]

    return expect


def _ws201(d: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "fill_pct": d["remaining"],
            "distance_mm": d["distance"],
            "battery_pct": d["battery"],
            "temperature_c": None,
            "alarms": (),
        }
    ]


def _df702(depth_mm: int) -> ExpectFn:
    def expect(d: dict[str, Any]) -> list[dict[str, Any]]:
        level = _num(d["level"])
        alarms = tuple(a for a, flag in (("fire", d["fire"]), ("tilt", d["tilt"])) if flag)
        return [
            {
                "distance_mm": level,
                "fill_pct": fill_from_distance(level, depth_mm),
                "temperature_c": _num(d["temperature"]),
                "battery_pct": None,
                "alarms": alarms,
            }
        ]

    return expect


def _df703(depth_mm: int) -> ExpectFn:
    def expect(d: dict[str, Any]) -> list[dict[str, Any]]:
        alarms = tuple(
            a for a, flag in (("fire", d["alarmFire"]), ("tilt", d["alarmFall"])) if flag
        )
        return [
            {
                "distance_mm": d["level"],
                "fill_pct": fill_from_distance(d["level"], depth_mm),
                "temperature_c": d["temperature"],
                "battery_pct": None,
                "alarms": alarms,
            }
        ]

    return expect


def _ldds04(depth_mm: int) -> ExpectFn:
    """The smallest of the four distances (cm -> mm): the highest point of the waste."""

    def expect(d: dict[str, Any]) -> list[dict[str, Any]]:
        distances = [d["default"][f"distance{n}"] * 10 for n in (1, 2, 3, 4)]
        highest_point = min(x for x in distances if x > 0)
        return [
            {
                "distance_mm": highest_point,
                "fill_pct": fill_from_distance(highest_point, depth_mm),
                "battery_v": d["lifecycle"]["batteryVoltage"],
                "battery_pct": None,
                "temperature_c": None,
                "alarms": (),
            }
        ]

    return expect


def _brighterbins_fill(d: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "fill_pct": d["fill_level"]["fillLevel"],
            "distance_mm": None,
            "battery_pct": d["lifecycle"]["batteryLevel"],
            "temperature_c": d["lifecycle"]["temperature"],
            "alarms": (),
        }
    ]


def _brighterbins_distance(depth_mm: int) -> ExpectFn:
    def expect(d: dict[str, Any]) -> list[dict[str, Any]]:
        distance_mm = d["distance"]["distance"] * 10  # cm
        return [
            {
                "distance_mm": distance_mm,
                "fill_pct": fill_from_distance(distance_mm, depth_mm),
                "battery_pct": d["lifecycle"]["batteryLevel"],
                "temperature_c": d["lifecycle"]["temperature"],
                "alarms": (),
            }
        ]

    return expect


def _elsys(depth_mm: int) -> ExpectFn:
    def expect(d: dict[str, Any]) -> list[dict[str, Any]]:
        distance_mm = d["default"]["distance"]
        return [
            {
                "distance_mm": distance_mm,
                "fill_pct": fill_from_distance(distance_mm, depth_mm),
                "temperature_c": d["default"]["temperature"],
                "battery_v": d["lifecycle"]["batteryVoltage"],
                "battery_pct": None,
                "alarms": (),
            }
        ]

    return expect


_TILT_KEY = (
    "The TTN device-repository codec names the tilt key `tilt`, Milesight's own codec "
    "`position` (same bytes, same meaning): both map to alarm `tilt`."
)
_THRESHOLD = (
    "The threshold-alarm statuses (Milesight: temperature_alarm / distance_alarm = "
    '"threshold_alarm"; ThingsBoard: temperature_abnormal / distance_alarming = true) are '
    "user thresholds on the measured values, not one of our waste alarms: not stored."
)
_DF70X = (
    "Not stored: the full flag (a fill state already given by fill_pct, not an alarm), the "
    "low-battery flag (no waste alarm for it), tilt angle, GPS position{extra}."
)
_AKENZA_BATTERY = (
    "akenza's batteryLevel is its own volts-to-percent curve: we store battery_v only."
)

EXPECTATIONS: list[Expect] = [
    # --- Milesight EM310-UDL
    Expect(
        file="fill_level/milesight_readme_em310_udl.json",
        decoder="milesight-em310-udl",
        readings=_milesight(COLUMN_DEPTH_MM),
        attributes={"depth_mm": COLUMN_DEPTH_MM},
    ),
    Expect(
        file="fill_level/tb_milesight_em310_udl_chirpstack.json",
        decoder="milesight-em310-udl",
        readings=_milesight(COLUMN_DEPTH_MM),
        attributes={"depth_mm": COLUMN_DEPTH_MM},
    ),
    Expect(
        file="fill_level/tb_milesight_em310_udl_thingsstackcommunity.json",
        decoder="milesight-em310-udl",
        readings=_milesight(COLUMN_DEPTH_MM),
        attributes={"depth_mm": COLUMN_DEPTH_MM},
    ),
    Expect(
        file="fill_level/ttn_milesight_em310_udl_ttn.json",
        decoder="milesight-em310-udl",
        readings=_milesight(COLUMN_DEPTH_MM),
        attributes={"depth_mm": COLUMN_DEPTH_MM},
        divergence=_TILT_KEY,
    ),
    # --- Milesight EM400-UDL / EM400-MUD
    Expect(
        file="fill_level/milesight_readme_em400_udl.json",
        decoder="milesight-em400-udl",
        readings=_milesight(COLUMN_DEPTH_MM),
        attributes={"depth_mm": COLUMN_DEPTH_MM},
    ),
    Expect(
        file="fill_level/ttn_milesight_em400_udl_ttn.json",
        decoder="milesight-em400-udl",
        readings=_milesight(COLUMN_DEPTH_MM),
        attributes={"depth_mm": COLUMN_DEPTH_MM},
    ),
    Expect(
        file="fill_level/tb_milesight_em400_udl_chirpstack.json",
        decoder="milesight-em400-udl",
        readings=_milesight(COLUMN_DEPTH_MM),
        attributes={"depth_mm": COLUMN_DEPTH_MM},
        divergence=_THRESHOLD,
    ),
    Expect(
        file="fill_level/tb_milesight_em400_udl_chirpstack_1.json",
        decoder="milesight-em400-udl",
        readings=_milesight(COLUMN_DEPTH_MM),
        attributes={"depth_mm": COLUMN_DEPTH_MM},
    ),
    Expect(
        file="fill_level/tb_milesight_em400_udl_thingsstackcommunity.json",
        decoder="milesight-em400-udl",
        readings=_milesight(COLUMN_DEPTH_MM),
        attributes={"depth_mm": COLUMN_DEPTH_MM},
        divergence=_THRESHOLD,
    ),
    Expect(
        file="fill_level/tb_milesight_em400_udl_thingsstackcommunity_1.json",
        decoder="milesight-em400-udl",
        readings=_milesight(COLUMN_DEPTH_MM),
        attributes={"depth_mm": COLUMN_DEPTH_MM},
    ),
    Expect(
        file="fill_level/milesight_readme_em400_mud.json",
        decoder="milesight-em400-mud",
        readings=_milesight(COLUMN_DEPTH_MM),
        attributes={"depth_mm": COLUMN_DEPTH_MM},
    ),
    Expect(
        file="fill_level/milesight_readme_em400_mud_alarm.json",
        decoder="milesight-em400-mud",
        readings=_milesight(COLUMN_DEPTH_MM),
        attributes={"depth_mm": COLUMN_DEPTH_MM},
        divergence=_THRESHOLD,
    ),
    # --- Milesight EM500-UDL
    Expect(
        file="fill_level/milesight_readme_em500_udl.json",
        decoder="milesight-em500-udl",
        readings=_milesight(SMALL_BIN_DEPTH_MM),
        attributes={"depth_mm": SMALL_BIN_DEPTH_MM},
    ),
    Expect(
        file="fill_level/tb_milesight_em500_udl_chirpstack.json",
        decoder="milesight-em500-udl",
        readings=_milesight(SMALL_BIN_DEPTH_MM),
        attributes={"depth_mm": SMALL_BIN_DEPTH_MM},
    ),
    Expect(
        file="fill_level/tb_milesight_em500_udl_thingsstackcommunity.json",
        decoder="milesight-em500-udl",
        readings=_milesight(SMALL_BIN_DEPTH_MM),
        attributes={"depth_mm": SMALL_BIN_DEPTH_MM},
    ),
    Expect(
        file="fill_level/ttn_milesight_em500_udl_ttn_ex1.json",
        decoder="milesight-em500-udl",
        readings=_milesight(SMALL_BIN_DEPTH_MM),
        attributes={"depth_mm": SMALL_BIN_DEPTH_MM},
    ),
    Expect(
        file="fill_level/ttn_milesight_em500_udl_ttn_ex2.json",
        decoder="milesight-em500-udl",
        readings=_milesight(SMALL_BIN_DEPTH_MM),
        attributes={"depth_mm": SMALL_BIN_DEPTH_MM},
    ),
    # --- Milesight WS201: the device's `remaining` % is the fill level (no depth needed)
    Expect(
        file="fill_level/milesight_readme_ws201_fill_level.json",
        decoder="milesight-ws201",
        readings=_ws201,
    ),
    Expect(
        file="fill_level/tb_milesight_ws201_chirpstack.json",
        decoder="milesight-ws201",
        readings=_ws201,
    ),
    Expect(
        file="fill_level/tb_milesight_ws201_thingsstackcommunity.json",
        decoder="milesight-ws201",
        readings=_ws201,
    ),
    # --- DingTek DF702 / DF703
    Expect(
        file="fill_level/ttn_dingtek_df702_heartbeat.json",
        decoder="dingtek-df702",
        readings=_df702(COLUMN_DEPTH_MM),
        attributes={"depth_mm": COLUMN_DEPTH_MM},
        divergence=_DF70X.format(extra=""),
    ),
    Expect(
        file="fill_level/ttn_dingtek_df702_heartbeat_gps.json",
        decoder="dingtek-df702",
        readings=_df702(COLUMN_DEPTH_MM),
        attributes={"depth_mm": COLUMN_DEPTH_MM},
        divergence=_DF70X.format(extra=""),
    ),
    Expect(
        file="fill_level/ttn_dingtek_df703_heartbeat.json",
        decoder="dingtek-df703",
        readings=_df703(COLUMN_DEPTH_MM),
        attributes={"depth_mm": COLUMN_DEPTH_MM},
        divergence=_DF70X.format(extra=", frame counter"),
    ),
    Expect(
        file="fill_level/ttn_dingtek_df703_heartbeat_gps.json",
        decoder="dingtek-df703",
        readings=_df703(COLUMN_DEPTH_MM),
        attributes={"depth_mm": COLUMN_DEPTH_MM},
        divergence=_DF70X.format(extra=", frame counter"),
    ),
    # --- Dragino
    Expect(
        file="fill_level/ttn_dragino_ldds75_no_sensor.json",
        decoder="dragino-ldds75",
        reject="undecodable_payload",
        attributes={"depth_mm": SMALL_BIN_DEPTH_MM},
        divergence='Published as distance "No Sensor" (the codec says so for any frame that is '
        "not 5 bytes): a sensor error, not a reading, so the 4-byte frame is rejected.",
    ),
    Expect(
        file="fill_level/akenza_dragino_ldds04.json",
        decoder="dragino-ldds04",
        readings=_ldds04(SMALL_BIN_DEPTH_MM),
        attributes={"depth_mm": SMALL_BIN_DEPTH_MM},
        divergence="Four distances published; one reading stored: the smallest (the highest "
        "point of the waste, which decides whether the column can take more). " + _AKENZA_BATTERY,
    ),
    # --- SmartEnds BrighterBins
    Expect(
        file="fill_level/akenza_brighterbins_fill_level.json",
        decoder="smartends-brighterbins",
        readings=_brighterbins_fill,
        divergence="resetReason (lifecycle) is not stored.",
    ),
    Expect(
        file="fill_level/akenza_brighterbins_distance.json",
        decoder="smartends-brighterbins",
        readings=_brighterbins_distance(5000),
        attributes={"depth_mm": 5000},
    ),
    # --- Elsys ELT-2 ultrasonic
    Expect(
        file="fill_level/akenza_elsys_elt2_ultrasonic.json",
        decoder="elsys-elt2-ultrasonic",
        readings=_elsys(SMALL_BIN_DEPTH_MM),
        attributes={"depth_mm": SMALL_BIN_DEPTH_MM},
        divergence="Humidity and pressure are not waste-column fields: not stored. "
        + _AKENZA_BATTERY,
    ),
]
