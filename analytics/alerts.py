"""Alert rules: when a device's state opens, keeps or clears an alert. Pure: no I/O.

Each rule answers ACTIVE (open the alert, or count a repeat), INACTIVE (clear it) or None
(no opinion: keep whatever is there). The band between the two thresholds is the hysteresis
that keeps an alert from flapping (docs/alerts.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

# Every alert type the platform knows, with its severity. Detectors added later (the derived
# leak status, say) reuse a type here or add one.
SEVERITY: dict[str, str] = {
    "offline": "major",
    "sensor_stale": "minor",
    "battery_low": "warning",
    "leak": "major",
    "burst": "critical",
    "backflow": "major",
    "tamper": "major",
    "fire": "critical",
    "tilt": "minor",
    "bin_full": "warning",
}
ALERT_TYPES: tuple[str, ...] = tuple(SEVERITY)
STATUSES: tuple[str, ...] = ("open", "acknowledged", "cleared")

# Device alarm flags (the strings the decoders and native payloads put in `alarms`) and the
# alert type each raises. Not mapped: water `dry` (an empty pipe is a state of the network, not
# of the meter, and is reported by meters on every air pocket) and waste `lid_open` (true for a
# moment at every deposit).
FLAG_TYPES: dict[str, str] = {
    "leak": "leak",
    "burst": "burst",
    "backflow": "backflow",
    "tamper": "tamper",
    "fire": "fire",
    "tilt": "tilt",
    "low_battery": "battery_low",
    "battery_low": "battery_low",
}
# Which flag-raised types each kind can have (what a reading without the flag clears).
KIND_FLAG_TYPES: dict[str, tuple[str, ...]] = {
    "water_meter": ("leak", "burst", "backflow", "tamper", "battery_low"),
    "waste_column": ("fire", "tilt", "battery_low"),
    "parking_sensor": ("battery_low",),  # no alarms column: only ever clears the flag
}

OFFLINE_FACTOR = 2.0
OFFLINE_GRACE = 0.1


def offline_after_s(expected_interval_s: float) -> float:
    """Silence (seconds) after which a device counts as offline: two missed reports plus a
    tenth of the interval for transmission jitter. 20 s → 42 s; 12 h → 25.2 h."""
    return expected_interval_s * (OFFLINE_FACTOR + OFFLINE_GRACE)


@dataclass(frozen=True)
class RecentReading:
    """The fields the rules read from one reading (newest first in a sequence)."""

    alarms: tuple[str, ...] = ()
    fill_pct: float | None = None


@dataclass(frozen=True)
class Verdict:
    active: bool
    detail: dict[str, Any] = field(default_factory=dict)


def flag_verdicts(
    kind: str, recent: Sequence[RecentReading], clear_after: int
) -> dict[str, Verdict]:
    """Alarm flags of the newest readings (newest first). A type is active when the newest
    reading carries its flag, inactive when none of the newest `clear_after` readings does;
    in between (the flag seen in an older one of them only) nothing changes, so a flag that
    comes and goes on alternate readings keeps its alert open."""
    out: dict[str, Verdict] = {}
    if not recent:
        return out
    newest = {FLAG_TYPES[a] for a in recent[0].alarms if a in FLAG_TYPES}
    window = recent[:clear_after]
    for alert_type in KIND_FLAG_TYPES.get(kind, ()):
        if alert_type in newest:
            flags = sorted(a for a in recent[0].alarms if FLAG_TYPES.get(a) == alert_type)
            out[alert_type] = Verdict(True, {"source": "device_flag", "flags": flags})
        elif len(window) >= clear_after and not any(
            FLAG_TYPES.get(a) == alert_type for r in window for a in r.alarms
        ):
            out[alert_type] = Verdict(False)
    return out


def battery_verdict(
    flag: Verdict | None, battery_pct: float | None, low_pct: float, clear_margin_pct: float
) -> Verdict | None:
    """battery_low from the device's flag first, else its level: below `low_pct` opens, at or
    above `low_pct + clear_margin_pct` (or no level known) lets the flag's clearing stand."""
    if flag is not None and flag.active:
        detail = dict(flag.detail)
        if battery_pct is not None:
            detail["battery_pct"] = battery_pct
        return Verdict(True, detail)
    if battery_pct is not None and battery_pct < low_pct:
        return Verdict(
            True, {"source": "level", "battery_pct": battery_pct, "threshold_pct": low_pct}
        )
    level_ok = battery_pct is None or battery_pct >= low_pct + clear_margin_pct
    if level_ok and (flag is not None and not flag.active):
        return Verdict(False)
    return None


def bin_full_verdict(
    fill_pct: float | None, threshold_pct: float, clear_margin_pct: float
) -> Verdict | None:
    """Full at or above the threshold; cleared below threshold - margin (80 → clears under 70),
    so a level wavering around 80 % (waste settling, a reading's noise) does not flap."""
    if fill_pct is None:
        return None
    if fill_pct >= threshold_pct:
        return Verdict(True, {"fill_pct": fill_pct, "threshold_pct": threshold_pct})
    if fill_pct < threshold_pct - clear_margin_pct:
        return Verdict(False)
    return None
