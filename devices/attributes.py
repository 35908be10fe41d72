"""Kind-specific registration attributes: what the platform must know about an installed device."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from devices.kinds import DeviceKind

WasteStream = Literal["residual", "packaging", "glass", "paper", "organic", "textile", "other"]
Label = Annotated[str, Field(min_length=1, max_length=64)]


class _Attributes(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WaterMeterAttributes(_Attributes):
    district: Label | None = Field(default=None, examples=["Quimper-Centre"])
    q4_m3h: float | None = Field(
        default=None,
        gt=0,
        le=10_000,
        description="Maximum flow Q4 in m³/h; an index rising faster is flagged as a spike "
        "(default: the platform's water_q4_m3h, 3.125 for DN15).",
        examples=[3.125],
    )
    register_m3: float | None = Field(
        default=None,
        gt=0,
        description="The index at which the register wraps to 0 (100000 for a register showing "
        "up to 99,999.999 m³); unset: a wrap is flagged as an index decrease.",
        examples=[100000],
    )


class WasteColumnAttributes(_Attributes):
    depth_mm: int | None = Field(
        default=None,
        gt=0,
        le=10_000,
        description="Distance from the sensor to the bottom of the empty column; needed to turn "
        "a measured distance into a fill level.",
        examples=[1800],
    )
    capacity_l: int | None = Field(default=None, gt=0, le=100_000, examples=[4000])
    waste_stream: WasteStream | None = Field(default=None, examples=["glass"])


class ParkingSensorAttributes(_Attributes):
    zone: Label | None = Field(default=None, examples=["Parking de la Providence"])


ATTRIBUTE_MODELS: dict[DeviceKind, type[_Attributes]] = {
    DeviceKind.WATER_METER: WaterMeterAttributes,
    DeviceKind.WASTE_COLUMN: WasteColumnAttributes,
    DeviceKind.PARKING_SENSOR: ParkingSensorAttributes,
}

_DICT = TypeAdapter(dict[str, Any])


def validate_attributes(kind: DeviceKind, raw: object) -> dict[str, Any]:
    """Validate `raw` for `kind`; returns the normalised dict (unset values left out).

    Raises pydantic.ValidationError, whose errors carry locations an API can report.
    """
    model = ATTRIBUTE_MODELS[kind]
    data = _DICT.validate_python(raw if raw is not None else {})
    return model.model_validate(data).model_dump(exclude_none=True)


__all__ = [
    "ATTRIBUTE_MODELS",
    "ParkingSensorAttributes",
    "ValidationError",
    "WasteColumnAttributes",
    "WaterMeterAttributes",
    "validate_attributes",
]
