"""What a device kind is: payload schemas, units and conversions. Pure: no I/O.

Nothing here imports another package of the platform, so the ingest path, the API and the
simulators can all rely on one definition of each kind.
"""

from devices.kinds import DeviceKind
from devices.readings import (
    ParkingReading,
    Reading,
    WasteColumnReading,
    WaterMeterReading,
)
from devices.rejections import Rejection, RejectReason

__all__ = [
    "DeviceKind",
    "ParkingReading",
    "Reading",
    "RejectReason",
    "Rejection",
    "WasteColumnReading",
    "WaterMeterReading",
]
