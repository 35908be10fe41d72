from __future__ import annotations

from enum import StrEnum


class DeviceKind(StrEnum):
    WATER_METER = "water_meter"
    WASTE_COLUMN = "waste_column"
    PARKING_SENSOR = "parking_sensor"
