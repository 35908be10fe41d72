"""What each parking corpus sample must decode to (see tests/vectors/README.md).

`parking/tts_storage_api_parking_decoded.json` is not listed: it carries only a network-server
decoded payload (no bytes), which none of these byte decoders can take; the mapping of
already-decoded objects belongs to the ingest (the lead's).
"""

from __future__ import annotations

from typing import Any

from tests.vectors.expect import Expect

_AKENZA_DERIVED = (
    "akenza also publishes occupancyStatus FREE/OCCUPIED/WARM, occupiedOrWarm and minute counters "
    "(occupiedMinutes, minutesSinceLastOccupied), derived from earlier messages held as state; "
    "we return only what the bytes carry (occupied)."
)
_BOSCH_FW = (
    "firmwareVersion is not a reading field; where it matters (devices.decoders.bosch."
    "firmware_version) we read bytes 12-14 major first, as the TTN codec and akenza do "
    "('0.29.2' for 00 1D 02), not ThingsBoard's reversed '2.29.0'."
)
_NWAVE_TB_BATTERY = (
    "ThingsBoard publishes battery_voltage 2.32 V (and battery_health 'critical') for byte 1 "
    "= 0xD3: its script reads the byte as a signed Java byte (2500 + 4 x (211 - 256) mV). "
    "We follow the TTN codec (unsigned: 2500 + 4 x 211 mV = 3.344 V), i.e. the published value "
    "+ 256 x 4 mV."
)


def _occupied(d: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"occupied": d["occupied"]}]


def _akenza_occupancy(d: dict[str, Any]) -> list[dict[str, Any]]:
    # A one-byte heartbeat/keep-alive: no temperature byte.
    return [{"occupied": d["occupancy"]["occupied"], "temperature_c": None, "battery_pct": None}]


def _bosch_heartbeat(d: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"occupied": d["occupied"], "temperature_c": d["temperature"], "battery_pct": None}]


def _nwave_heartbeat_ttn(d: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "occupied": d["occupied"],
            "temperature_c": d["temperature"],
            "battery_v": d["battery_voltage"],
            "battery_pct": None,
        }
    ]


def _nwave_heartbeat_tb(d: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "occupied": d["occupied"],
            "temperature_c": d["temperature"],
            "battery_v": d["battery_voltage"] + 256 * 4 / 1000,
            "battery_pct": None,
        }
    ]


def _nwave_no_battery(d: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"occupied": d["occupied"], "battery_v": None, "temperature_c": None}]


def _dingtek_do200(d: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"occupied": d["alarmPark"], "battery_v": d["volt"], "temperature_c": None}]


_TB_BOSCH = "parking/tb_bosch_parking_lot_sensor_"
_TB_NWAVE = "parking/tb_nwave_g4_nps_sm_"

EXPECTATIONS: list[Expect] = [
    # --- Bosch Parking Lot Sensor (TPS110) ---
    Expect(
        file="parking/akenza_bosch_pls_free_warm.json",
        decoder="bosch-pls",
        readings=_akenza_occupancy,
        divergence=_AKENZA_DERIVED + " Here akenza says WARM (recently vacated); we say free.",
    ),
    Expect(
        file="parking/akenza_bosch_pls_occupied.json",
        decoder="bosch-pls",
        readings=_akenza_occupancy,
        divergence=_AKENZA_DERIVED,
    ),
    Expect(
        file="parking/akenza_bosch_pls_startup_fw039.json",
        decoder="bosch-pls",
        # akenza's fw 0.39 decoder emits only the start_up topic (fwVersion, resetCause, debug);
        # the state bit (byte 16 = 0x00) is read as the TTN and ThingsBoard decoders read it.
        readings=lambda d: [{"occupied": False}],
        divergence=(
            "akenza publishes no occupancy for a startup frame; the TTN and ThingsBoard decoders "
            "read byte 16 bit 0 as the state on the same 17-byte layout, so we return a reading "
            "(free: byte 16 is 0x00). akenza's fwVersion '0.39.2' agrees with our byte order."
        ),
    ),
    Expect(file=_TB_BOSCH + "chirpstack.json", decoder="bosch-pls", readings=_bosch_heartbeat),
    Expect(file=_TB_BOSCH + "chirpstack_1.json", decoder="bosch-pls", readings=_occupied),
    Expect(
        file=_TB_BOSCH + "chirpstack_2.json",
        decoder="bosch-pls",
        readings=_occupied,
        divergence=_BOSCH_FW,
    ),
    Expect(
        file=_TB_BOSCH + "thingsstackcommunity.json", decoder="bosch-pls", readings=_bosch_heartbeat
    ),
    Expect(file=_TB_BOSCH + "thingsstackcommunity_1.json", decoder="bosch-pls", readings=_occupied),
    Expect(
        file=_TB_BOSCH + "thingsstackcommunity_2.json",
        decoder="bosch-pls",
        readings=_occupied,
        divergence=_BOSCH_FW,
    ),
    Expect(
        file="parking/ttn_bosch_tps110_heartbeat.json",
        decoder="bosch-pls",
        readings=_bosch_heartbeat,
    ),
    Expect(file="parking/ttn_bosch_tps110_startup.json", decoder="bosch-pls", readings=_occupied),
    Expect(file="parking/ttn_bosch_tps110_status.json", decoder="bosch-pls", readings=_occupied),
    # --- Nwave, 4th generation (NPS405, G4 NPS-SM) ---
    Expect(file=_TB_NWAVE + "chirpstack.json", decoder="nwave-nps-g4", readings=_occupied),
    Expect(
        file=_TB_NWAVE + "chirpstack_1.json",
        decoder="nwave-nps-g4",
        readings=_nwave_heartbeat_tb,
        divergence=_NWAVE_TB_BATTERY,
    ),
    Expect(file=_TB_NWAVE + "chirpstack_2.json", decoder="nwave-nps-g4", readings=_occupied),
    Expect(
        file=_TB_NWAVE + "thingsstackcommunity.json", decoder="nwave-nps-g4", readings=_occupied
    ),
    Expect(
        file=_TB_NWAVE + "thingsstackcommunity_1.json",
        decoder="nwave-nps-g4",
        readings=_nwave_heartbeat_tb,
        divergence=_NWAVE_TB_BATTERY,
    ),
    Expect(
        file=_TB_NWAVE + "thingsstackcommunity_2.json", decoder="nwave-nps-g4", readings=_occupied
    ),
    Expect(
        file=_TB_NWAVE + "thingsstackindustries.json", decoder="nwave-nps-g4", readings=_occupied
    ),
    Expect(
        file=_TB_NWAVE + "thingsstackindustries_1.json",
        decoder="nwave-nps-g4",
        readings=_nwave_heartbeat_tb,
        divergence=_NWAVE_TB_BATTERY,
    ),
    Expect(
        file=_TB_NWAVE + "thingsstackindustries_2.json", decoder="nwave-nps-g4", readings=_occupied
    ),
    Expect(
        file="parking/ttn_nwave_nps405_heartbeat.json",
        decoder="nwave-nps-g4",
        readings=_nwave_heartbeat_ttn,
    ),
    Expect(
        file="parking/ttn_nwave_nps405_startup.json", decoder="nwave-nps-g4", readings=_occupied
    ),
    Expect(file="parking/ttn_nwave_nps405_status.json", decoder="nwave-nps-g4", readings=_occupied),
    Expect(
        file="parking/ttn_nwave_nps405_user_registration.json",
        decoder="nwave-nps-g4",
        readings=_nwave_no_battery,
        divergence=(
            "tag_battery_voltage (3.2 V) is the battery of the user's SDI tag, not of the sensor: "
            "it is not mapped to battery_v."
        ),
    ),
    # --- Nwave NPS310 (3rd generation: one-byte status and heartbeat) ---
    Expect(
        file="parking/ttn_nwave_nps310_heartbeat.json",
        decoder="nwave-nps310",
        readings=_nwave_no_battery,
    ),
    Expect(
        file="parking/ttn_nwave_nps310_status.json",
        decoder="nwave-nps310",
        readings=_nwave_no_battery,
    ),
    # --- PNI PlacePod ---
    Expect(
        file="parking/akenza_pni_placepod_free.json",
        decoder="pni-placepod",
        readings=_akenza_occupancy,
        divergence=_AKENZA_DERIVED,
    ),
    # --- DingTek DO200 / DO202 ---
    Expect(
        file="parking/ttn_dingtek_do200_telemetry.json",
        decoder="dingtek-do200",
        readings=_dingtek_do200,
    ),
    Expect(
        file="parking/ttn_dingtek_do202_telemetry.json",
        decoder="dingtek-do202",
        reject="out_of_range",
        divergence=(
            "The bytes decode as published (alarmPark false, 3.53 V, temperature byte 0x8B = "
            "-117 °C), but -117 °C is physically implausible: check_ranges rejects the reading."
        ),
    ),
]
