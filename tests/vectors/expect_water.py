"""What every water-meter corpus sample must decode to, computed from its published values.

Reading times: where the payload carries its own clock (Kamstrup profile, Axioma device time,
wmbusmeters `timestamp`) the expected `ts` is computed from the published value; otherwise `ts`
is the uplink time and is not named here (the unit tests check it against the time they send).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tests.vectors.expect import Expect

# Kamstrup codec items (Type, Value) → our alarm.
_KAMSTRUP_ALARMS = {
    "Dry": "dry",
    "Reverse": "backflow",
    "Leak": "leak",
    "Burst": "burst",
    "Tamper": "tamper",
    "Low Battery": "low_battery",
}


def _naive_utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _kamstrup(d: dict[str, Any]) -> list[dict[str, Any]]:
    values = d["data"]["values"]
    out = []
    for item in values:
        if item["Type"] != "Volume":
            continue
        stamp = item["Timestamp"]
        alarms = sorted(
            {
                _KAMSTRUP_ALARMS[other["Type"]]
                for other in values
                if other["Timestamp"] == stamp
                and other["Type"] in _KAMSTRUP_ALARMS
                and other["Value"] is True
            }
        )
        out.append(
            {
                "ts": _naive_utc(stamp),
                "index_m3": item["Value"],
                # Min/Max volume flow and flow temperature are period aggregates: not mapped.
                "flow_m3h": None,
                "temperature_c": None,
                "alarms": tuple(alarms),
            }
        )
    return sorted(out, key=lambda r: r["ts"])


def _axioma(d: dict[str, Any]) -> list[dict[str, Any]]:
    device_time = datetime.fromtimestamp(d["timestamp_unix"], UTC)
    assert device_time == datetime.fromisoformat(d["timestamp_utc"])
    flags = {
        "low_battery": "low_battery",
        "pipe_empty": "dry",
        "backflow": "backflow",
        "burst": "burst",
        "leakage": "leak",
    }
    current = tuple(sorted(ours for theirs, ours in flags.items() if d[theirs]))
    litres = round(d["log_volume_m3"] * 1000)
    out = [{"ts": device_time - timedelta(hours=23), "index_m3": litres / 1000, "alarms": ()}]
    for hour in range(1, 24):
        litres += round(d[f"delta_{hour}_m3"] * 1000)
        out.append(
            {
                "ts": device_time - timedelta(hours=23 - hour),
                "index_m3": litres / 1000,
                "alarms": current if hour == 23 else (),
            }
        )
    assert out[-1]["index_m3"] == d["current_volume_m3"]
    return out


def _bmeters(d: dict[str, Any]) -> list[dict[str, Any]]:
    # The published counters ("00012074", "00000134") are hand-written in the codec's YAML and
    # are not what its own code computes: bytes 4A 20 01 00 are the little-endian counter
    # 0x0001204A = 73802 litres (VIF 0x0D: litres). `alarm` "02" is bit 1, module removal.
    assert d["vif"] == 13 and d["alarm"] == "02"
    return [{"index_m3": 0x0001204A / 1000, "alarms": ("tamper",)}]


def _gwf(d: dict[str, Any]) -> list[dict[str, Any]]:
    life = d["lifecycle"]
    alarms: set[str] = set()
    if life["continuousFlow"]:
        alarms.add("leak")
    if life["brokenPipe"]:
        alarms.add("burst")
    if life["backflow"]:
        alarms.add("backflow")
    if life["batteryLow"] or life["batteryPowerLow"]:
        alarms.add("low_battery")
    return [{"index_m3": d["default"]["volume"], "alarms": tuple(sorted(alarms))}]


def _integra(d: dict[str, Any]) -> list[dict[str, Any]]:
    flags = {
        "leak": "leak",
        "burstAlarm": "burst",
        "reverseFlow": "backflow",
        "tamperAlarm": "tamper",
        "batteryLow": "low_battery",
    }
    alarms = tuple(sorted(ours for theirs, ours in flags.items() if d["alarm"][theirs]))
    assert d["default"]["volume"] / 1000 == d["default"]["volumeM3"]
    return [{"index_m3": d["default"]["volumeM3"], "flow_m3h": None, "alarms": alarms}]


def _quandify(d: dict[str, Any]) -> list[dict[str, Any]]:
    life = d["lifecycle"]
    alarms: set[str] = set()
    if life["batteryStatus"] == "LOW":
        alarms.add("low_battery")
    if d["default"]["leakIsOngoing"]:
        alarms.add("leak")
    if not life["isSensing"]:
        alarms.add("dry")
    return [
        {
            "index_m3": d["default"]["totalVolume"] / 1000,
            "battery_v": life["batteryVoltage"],
            "battery_pct": None,
            "temperature_c": None,
            "alarms": tuple(sorted(alarms)),
        }
    ]


def _wmbus(alarms: tuple[str, ...], **extra: Any) -> Any:
    """Expected reading of a wmbusmeters JSON: index, flow and water temperature as published."""

    def fn(d: dict[str, Any]) -> list[dict[str, Any]]:
        flow = d.get("flow_m3h", d.get("volume_flow_m3h"))
        temperature = d.get("flow_temperature_c", d.get("flow_temperature"))
        reading = {
            "index_m3": d["total_m3"],
            "flow_m3h": flow,
            "temperature_c": temperature,
            "alarms": alarms,
        }
        reading.update({k: (v(d) if callable(v) else v) for k, v in extra.items()})
        return [reading]

    return fn


_HISTORY = (
    "history flags are not current alarms: PREV_*, P_* ('has been detected'), WAS_*, "
    "*_THIS_MONTH / *_PREV_MONTH are left out"
)

EXPECTATIONS: list[Expect] = [
    Expect(
        file="water_meter/ttn_lorawan_kamstrup_flowiq2200_hourly_profile.json",
        decoder="kamstrup-flowiq2200-lorawan",
        readings=_kamstrup,
        divergence=(
            "meter timestamps (no zone in the codec output) read as UTC, as the codec does; "
            "readings in time order (the codec lists the newest first)"
        ),
    ),
    Expect(
        file="water_meter/ttn_lorawan_kamstrup_flowiq2200_midnight_tamper.json",
        decoder="kamstrup-flowiq2200-lorawan",
        readings=_kamstrup,
        divergence=(
            "Min/Max volume flow are not flow_m3h (period extremes); the invalid min/max flow "
            "temperatures and 'ALD last day' are not mapped; low/high ambient temperature "
            "flags have no alarm counterpart"
        ),
    ),
    Expect(
        file="water_meter/ttn_lorawan_axioma_qalcosonic_w1_24h.json",
        decoder="axioma-qalcosonic-w1",
        readings=_axioma,
        divergence=(
            "the codec gives one object; we give 24 hourly readings (logged index at device "
            "time - 23 h, then one delta per hour, current index at the device time); status "
            "alarms only on the newest reading; permanent/temporary error and low temperature "
            "not mapped"
        ),
    ),
    Expect(
        file="water_meter/ttn_lorawan_bmeters_iwm_lr3.json",
        decoder="bmeters-iwm-lr3",
        readings=_bmeters,
        divergence=(
            "the published valueCounter/flowCounter strings are hand-written and do not follow "
            "the bytes (the codec itself computes 73802); index = 73802 L = 73.802 m3; alarm "
            "byte read as the manual's bit field (bit 1 removal -> tamper), not as the codec's "
            "enumeration"
        ),
    ),
    Expect(
        file="water_meter/akenza_gwf_rcm_lrw10.json",
        decoder="gwf-rcm-lrw10",
        readings=_gwf,
        # The value's published age (actualityDuration, minutes) dates the reading.
        age=lambda d: timedelta(minutes=d["default"]["actualityDuration"]),
        divergence=(
            "relativeVolume is derived by akenza from the previous message: not computed; "
            "reading dated uplink time - actualityDuration (456 min); flag bits numbered "
            "LSB-first (akenza mirrors them; no flag set here); noUsage, batteryLifetime "
            "(months) not mapped"
        ),
    ),
    Expect(
        file="water_meter/akenza_integra_aquastream.json",
        decoder="integra-aquastream",
        readings=_integra,
        divergence=(
            "error flags read little-endian as wmbusmeters' aquastream driver does (akenza "
            "swaps the bytes; no flag set here); the tariff-1 'backflow' volume, noConsumption, "
            "overflow and batteryLifetime (days) are not mapped; the sample has no fPort and "
            "the format needs none"
        ),
    ),
    Expect(
        file="water_meter/akenza_quandify_cubicmeter_low_battery.json",
        decoder="quandify-cubicmeter",
        readings=_quandify,
        divergence=(
            "totalVolume litres -> m3; min/max water and ambient temperatures not mapped to "
            "temperature_c (not the current water temperature)"
        ),
    ),
    Expect(
        file="water_meter/akenza_quandify_cubicmeter_status.json",
        decoder="quandify-cubicmeter",
        readings=_quandify,
        divergence=(
            "totalVolume litres -> m3; min/max water and ambient temperatures not mapped to "
            "temperature_c (not the current water temperature)"
        ),
    ),
    Expect(
        file="water_meter/wmbus_apator_162.json",
        decoder="wmbusmeters",
        readings=_wmbus(()),
        divergence="placeholder timestamp 1111-11-11 (before 2000): reading at the uplink time",
    ),
    Expect(
        file="water_meter/wmbus_apator_mbus_na_permanent_error_leak.json",
        decoder="wmbusmeters",
        readings=_wmbus(()),
        divergence=(
            f"{_HISTORY}, so P_LEAK / P_REVERSE_FLOW raise nothing; PERMANENT_ERROR, "
            "TEMPORARY_ERROR, UNKNOWN_E0 have no counterpart; placeholder timestamp"
        ),
    ),
    Expect(
        file="water_meter/wmbus_apator_ultrimis_reverse.json",
        decoder="wmbusmeters",
        readings=_wmbus(()),
        divergence=(
            f"{_HISTORY}: REVERSE_THIS_MONTH means reverse flow at some time this month, the "
            "real-time flag REVERSE is not set; total_backward_m3 not mapped; placeholder "
            "timestamp"
        ),
    ),
    Expect(
        file="water_meter/wmbus_bmeters_hydrodigit_backflow_leakdate.json",
        decoder="wmbusmeters",
        readings=_wmbus((), battery_v=lambda d: d["voltage_v"]),
        divergence=(
            "no status flags: backflow_m3 (a volume) and leak_date (a past date) are history, "
            "not alarms; voltage_v is the battery voltage; placeholder timestamp"
        ),
    ),
    Expect(
        file="water_meter/wmbus_deltameters_waterstarm_leakage_powerlow.json",
        decoder="wmbusmeters",
        readings=_wmbus(("leak", "low_battery")),
        divergence=(
            "LEAKAGE_OR_NO_USAGE (one bit for either) reported as leak; POWER_LOW -> "
            "low_battery; placeholder timestamp"
        ),
    ),
    Expect(
        file="water_meter/wmbus_diehl_hydrus.json",
        decoder="wmbusmeters",
        readings=_wmbus(()),
        divergence=(
            "remaining_battery_life_y is not a percentage: not mapped; placeholder timestamp"
        ),
    ),
    Expect(
        file="water_meter/wmbus_diehl_izar_prev_leakage.json",
        decoder="wmbusmeters",
        readings=_wmbus(()),
        divergence=f"{_HISTORY}, so PREV_LEAKAGE raises nothing; placeholder timestamp",
    ),
    Expect(
        file="water_meter/wmbus_kaden_water_alarm_leak.json",
        decoder="wmbusmeters",
        readings=_wmbus(("leak",)),
        divergence="ALARM (generic) has no counterpart; max_flow_m3h not mapped; placeholder",
    ),
    Expect(
        file="water_meter/wmbus_kamstrup_flowiq2200_errorflags_800.json",
        decoder="wmbusmeters",
        readings=_wmbus(()),
        divergence="ERROR_FLAGS_800 (unknown bit) has no counterpart; placeholder timestamp",
    ),
    Expect(
        file="water_meter/wmbus_kamstrup_flowiq2200_full.json",
        decoder="wmbusmeters",
        readings=_wmbus(()),
        divergence="placeholder timestamp 1111-11-11 (before 2000): reading at the uplink time",
    ),
    Expect(
        file="water_meter/wmbus_kamstrup_multical21_dry.json",
        decoder="wmbusmeters",
        readings=_wmbus(("dry",), temperature_c=None),
        divergence=(
            "flow_temperature_c 127 is the Kamstrup 'no value' (a dry meter measures no water "
            "temperature): dropped, instead of an impossible temperature rejecting the reading; "
            "time_dry etc. are history durations; placeholder timestamp"
        ),
    ),
    Expect(
        file="water_meter/wmbus_sensus_iperl.json",
        decoder="wmbusmeters",
        readings=_wmbus(()),
        divergence="max_flow_m3h is a period maximum, not the flow; placeholder timestamp",
    ),
    Expect(
        file="envelopes/wmbusmeters_mqtt_publish_readme.json",
        decoder="wmbusmeters",
        readings=_wmbus(
            ("dry",),
            ts=lambda d: datetime.fromisoformat(d["timestamp"]),
        ),
        divergence=(
            "older field name flow_temperature (no _c) read as °C; external_temperature not "
            "mapped; reading at the published timestamp"
        ),
    ),
]
