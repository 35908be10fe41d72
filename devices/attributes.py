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
    freshness_s: int | None = Field(
        default=None,
        ge=60,
        le=7 * 86400,
        description="How long a reading of this space stays valid; silent longer, the space "
        "counts as unknown. Default: the TERRITORY_PARKING_FRESHNESS_S setting (6.5 h).",
        examples=[23400],
    )


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
