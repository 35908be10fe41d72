"""Physical plausibility of decoded readings, checked for every decoder's output.

Bounds are generous: they catch bytes read with the wrong layout or sign (a -117 °C parking
sensor), not unusual but real conditions.
"""

from __future__ import annotations

from dataclasses import fields

from devices.readings import Reading
from devices.rejections import Rejection, RejectReason

BOUNDS: dict[str, tuple[float, float]] = {
    "index_m3": (0, 1e9),
    "flow_m3h": (-1e4, 1e4),
    "battery_pct": (0, 100),
    "battery_v": (0, 40),
    "temperature_c": (-50, 100),
    "fill_pct": (0, 100),
    "distance_mm": (0, 20_000),
}


_CHECKS: dict[type, tuple[tuple[str, float, float], ...]] = {}


def _checks(cls: type) -> tuple[tuple[str, float, float], ...]:
    # Runs for every reading on the ingest path: the field list is worked out once per class.
    found = _CHECKS.get(cls)
    if found is None:
        found = tuple((f.name, *BOUNDS[f.name]) for f in fields(cls) if f.name in BOUNDS)
        _CHECKS[cls] = found
    return found


def check_ranges(reading: Reading) -> None:
    """Plausible values of the right types (a decoder fed hostile JSON may pass on anything);
    NaN fails every comparison and is therefore out of range too."""
    for name, lo, hi in _checks(type(reading)):
        value = getattr(reading, name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise Rejection(
                RejectReason.UNDECODABLE_PAYLOAD, f"{name} is not a number: {repr(value)[:80]}"
            )
        if not lo <= value <= hi:
            raise Rejection(
                RejectReason.OUT_OF_RANGE,
                f"{name}={value} is outside the plausible range [{lo}, {hi}]",
            )
    occupied = getattr(reading, "occupied", False)
    if not isinstance(occupied, bool):
        raise Rejection(
            RejectReason.UNDECODABLE_PAYLOAD, f"occupied is not a boolean: {repr(occupied)[:80]}"
        )
