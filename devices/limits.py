"""Physical plausibility bounds of measured values: the one list the native payload schema and
the range check of every decoder's output share.

Generous on purpose: they catch bytes read with the wrong layout or sign (a -117 °C parking
sensor, 0x7F as "no temperature"), not unusual but real conditions; the sensors we decode are
specified for -40 to 85 °C.
"""

from __future__ import annotations

BOUNDS: dict[str, tuple[float, float]] = {
    "index_m3": (0, 1e9),
    "flow_m3h": (-1e4, 1e4),
    "battery_pct": (0, 100),
    "battery_v": (0, 40),
    "temperature_c": (-50, 100),
    "fill_pct": (0, 100),
    "distance_mm": (0, 20_000),
}
