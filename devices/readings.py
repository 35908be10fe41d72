"""Decoded readings, in platform units, as they are stored (one row per reading).

Each kind's reading dataclass is declared in its module under devices/kinds/; this module
names them for the decoders. The device id is not part of a reading: it comes from the topic
the message arrived on.
"""

from __future__ import annotations

from devices.declare import ReadingLike
from devices.kinds.parking_sensor import ParkingReading
from devices.kinds.waste_column import WasteColumnReading
from devices.kinds.water_meter import WaterMeterReading

# Any kind's reading, the built-in ones and those a deployment declares.
Reading = ReadingLike

__all__ = ["ParkingReading", "Reading", "WasteColumnReading", "WaterMeterReading"]
