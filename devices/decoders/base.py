"""What a vendor payload decoder is: a pure function from one uplink to readings.

A decoder turns the bytes a device sent (LoRaWAN FRMPayload with its port, or the JSON a
wM-Bus gateway published) into readings in platform units (devices.readings). It never does
I/O and never sees the envelope: the ingest extracts port, bytes and time, finds the device and
its bound decoder, and adds radio metadata itself.

Failures are `Rejection`s with a specific reason:
- `undecodable_payload`: the bytes do not follow the format (wrong length, unknown frame type
  the format does not allow, a sensor error value such as "no sensor");
- `out_of_range`: the bytes decode but a value is physically implausible;
- `no_measurement`: a well-formed frame that carries no measurement (startup, configuration);
- `missing_attribute`: a registration attribute the conversion needs is absent (depth_mm).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from devices.kinds import DeviceKind
from devices.readings import Reading


@dataclass(frozen=True, slots=True)
class Uplink:
    """One frame from one device, as the decoder sees it."""

    data: bytes
    port: int | None
    time: datetime  # when the network received it (aware); the default reading time
    attributes: Mapping[str, Any] = field(default_factory=dict)  # the device's registration
    decoded: Mapping[str, Any] | None = None  # JSON input (wmbusmeters) instead of bytes


@dataclass(frozen=True, slots=True)
class DecoderInfo:
    name: str  # stable identifier stored in the registry, e.g. "milesight-em310-udl"
    vendor: str
    model: str
    kind: DeviceKind
    description: str = ""


DecodeFn = Callable[[Uplink], list[Reading]]


@dataclass(frozen=True, slots=True)
class Decoder:
    info: DecoderInfo
    decode: DecodeFn
