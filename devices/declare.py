"""How a device kind is declared, and what the platform derives from the declaration.

A kind is one module (built-in ones in `devices/kinds/`): a frozen reading dataclass whose
fields carry their unit, valid range and description (`measure`), a registration-attribute
model, the alarm names its devices may raise, and `declare_kind(...)`. From that one place
come the native MQTT payload schema, the range check every decoder's output goes through,
the storage columns COPY writes and queries read, and the API's response model of a
reading. The reading table itself comes from one migration calling `add_device_kind` (see
DEVELOPERS.md, "Adding a device kind").

Pure: no I/O; nothing here imports another package of the platform.
"""

from __future__ import annotations

import dataclasses
import operator
import re
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from types import NoneType, UnionType
from typing import Annotated, Any, ClassVar, Literal, Protocol

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    Strict,
    create_model,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from devices.timestamps import TS_PATTERN

_KIND_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


class DeviceKind(str):
    """The name of a declared device kind ("water_meter"). Only declared names exist:
    `DeviceKind("x")` raises ValueError for any other, so a value of this type is always a
    kind the process knows. One instance per name, so `is` compares like an enum's."""

    __slots__ = ()

    # Set by `declare_kind` for the built-in kinds (devices/kinds/).
    WATER_METER: ClassVar[DeviceKind]
    WASTE_COLUMN: ClassVar[DeviceKind]
    PARKING_SENSOR: ClassVar[DeviceKind]

    _known: ClassVar[dict[str, DeviceKind]] = {}

    def __new__(cls, value: object) -> DeviceKind:
        if isinstance(value, DeviceKind):
            return value
        found = cls._known.get(value) if isinstance(value, str) else None
        if found is None:
            known = ", ".join(sorted(cls._known))
            raise ValueError(f"{str(value)[:64]!r} is not a device kind (known: {known})")
        return found

    @classmethod
    def _create(cls, name: str) -> DeviceKind:
        return str.__new__(cls, name)

    @property
    def value(self) -> str:
        return str.__str__(self)

    def __repr__(self) -> str:
        return f"DeviceKind({self.value!r})"

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(
            cls,
            core_schema.str_schema(),
            serialization=core_schema.plain_serializer_function_ser_schema(str),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        # Worked out when the schema is generated, so it lists the kinds loaded at startup.
        return {"type": "string", "enum": sorted(cls._known)}


@dataclass(frozen=True, slots=True)
class Measure:
    """What a reading field means: put in the dataclass field's metadata with `measure()`."""

    description: str
    unit: str | None = None
    ge: float | None = None
    le: float | None = None

    @property
    def bounds(self) -> tuple[float, float] | None:
        if self.ge is None and self.le is None:
            return None
        return (
            self.ge if self.ge is not None else float("-inf"),
            self.le if self.le is not None else float("inf"),
        )

    def doc(self) -> str:
        return f"{self.description}, {self.unit}" if self.unit else self.description


_META = "territory.measure"


def measure(
    description: str, *, unit: str | None = None, ge: float | None = None, le: float | None = None
) -> dict[str, Measure]:
    """Metadata for a reading field: `x: float = field(metadata=measure("…", unit="m³"))`.

    `ge`/`le` are physical plausibility bounds: generous on purpose, they catch bytes read
    with the wrong layout or sign (a -117 °C sensor, 0x7F as "no temperature"), not unusual
    but real conditions."""
    return {_META: Measure(description, unit, ge, le)}


# Fields most kinds share, with one definition of their bounds.
BATTERY_PCT = measure("Battery level", unit="%", ge=0, le=100)
BATTERY_V = measure("Battery voltage", unit="V", ge=0, le=40)
TEMPERATURE_C = measure("Temperature", unit="°C", ge=-50, le=100)


class ReadingLike(Protocol):
    """What every kind's reading dataclass has (the built-in ones are in devices/kinds/)."""

    @property
    def ts(self) -> datetime: ...

    kind: ClassVar[DeviceKind]


# Field types a reading may use, and what they are in PostgreSQL / the native payload.
FieldType = Literal["float", "int", "bool", "text", "alarms"]
_SQL_TYPES: dict[str, str] = {
    "float": "double precision",
    "int": "bigint",
    "bool": "boolean",
    "text": "text",
    "alarms": "text[]",
}


@dataclass(frozen=True, slots=True)
class FieldSpec:
    name: str
    type: FieldType
    required: bool
    measure: Measure

    @property
    def numeric(self) -> bool:
        """Aggregated by the API (min/max/avg/last; a boolean as 0/1)."""
        return self.type in ("float", "int", "bool")

    @property
    def sql_type(self) -> str:
        return _SQL_TYPES[self.type]


def _field_type(name: str, annotation: Any) -> tuple[FieldType, bool]:
    """(type, required) of a reading field's annotation."""
    optional = False
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (UnionType, typing.Union) and NoneType in args:
        rest = [a for a in args if a is not NoneType]
        if len(rest) == 1:
            annotation, optional = rest[0], True
    if typing.get_origin(annotation) is tuple and typing.get_args(annotation) == (str, ...):
        if name != "alarms":
            raise TypeError(f"{name}: tuple[str, ...] is only for the `alarms` field")
        return "alarms", False
    for python, name_ in ((bool, "bool"), (int, "int"), (float, "float"), (str, "text")):
        if annotation is python:
            return typing.cast(FieldType, name_), not optional
    raise TypeError(f"{name}: unsupported reading field type {annotation!r}")


Number = Annotated[float, Strict()]  # an integer is still a number; `true` and "12.5" are not
Flag = Annotated[bool, Strict()]  # `1`, "yes" and "on" are not booleans
Text = Annotated[str, Strict(), Field(max_length=256)]
_PAYLOAD_TYPES: dict[str, Any] = {
    "float": Number,
    "int": Annotated[int, Strict()],
    "bool": Flag,
    "text": Text,
}
_VALUE_TYPES: dict[str, Any] = {"float": float, "int": int, "bool": bool, "text": str}


class NativePayload(BaseModel):
    """Base of every kind's native payload model (devices/native.py reads `ts`)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)

    # A string checked against RFC 3339 by pattern (in pydantic's core, cheap), turned into a
    # datetime by `decode_native`: pydantic's own datetime parsing also takes epoch numbers,
    # epochs in strings and times without seconds, which the docs do not promise.
    ts: str | None = Field(
        default=None,
        pattern=TS_PATTERN,
        description="RFC 3339 date-time with seconds and a UTC offset",
        examples=["2026-11-26T06:00:00+01:00"],
    )


class KindAttributes(BaseModel):
    """Base of every kind's registration attributes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    expected_interval_s: float | None = Field(
        default=None,
        ge=1,
        le=31 * 86400,
        description="How often the device reports, in seconds; it counts as offline after "
        "2.1 times this much silence (default per kind, docs/alerts.md).",
        examples=[3600],
    )


# Native payload completion: (the fields the payload gave, the device's attributes) → the
# reading's fields; raises devices.rejections.Rejection when it cannot.
Completion = Callable[[dict[str, Any], Mapping[str, Any]], dict[str, Any]]


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


@dataclass(frozen=True, eq=False)
class KindSpec:
    """A declared kind. Built by `declare_kind`; the derived parts are computed once."""

    kind: DeviceKind
    reading: type
    table: str
    attributes: type[KindAttributes]
    alarms: tuple[str, ...]
    description: str
    native_optional: frozenset[str]
    complete_native: Completion | None

    @cached_property
    def fields(self) -> tuple[FieldSpec, ...]:
        """The reading's stored fields (all but `ts`), in declaration order."""
        hints = typing.get_type_hints(self.reading)
        out = []
        for f in dataclasses.fields(self.reading):
            if f.name == "ts":
                continue
            type_, required = _field_type(f.name, hints[f.name])
            meta = f.metadata.get(_META)
            if meta is None:
                if type_ != "alarms":
                    raise TypeError(f"{self.kind}: field {f.name} has no measure() metadata")
                meta = Measure("Alarms raised by the device: " + ", ".join(self.alarms))
            out.append(FieldSpec(f.name, type_, required, meta))
        return tuple(out)

    @cached_property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    @cached_property
    def numeric_fields(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields if f.numeric)

    @cached_property
    def bounds(self) -> tuple[tuple[str, float, float], ...]:
        """(field, low, high) of every numeric field with plausibility bounds."""
        out = []
        for f in self.fields:
            b = f.measure.bounds
            if b is not None and f.type in ("float", "int"):
                out.append((f.name, *b))
        return tuple(out)

    @cached_property
    def flags(self) -> tuple[str, ...]:
        """The boolean fields."""
        return tuple(f.name for f in self.fields if f.type == "bool")

    @cached_property
    def payload_model(self) -> type[NativePayload]:
        """The native JSON payload: the reading's fields, strictly typed and bounded."""
        defs: dict[str, Any] = {}
        for f in self.fields:
            if f.type == "alarms":
                names = Literal.__getitem__(self.alarms) if self.alarms else Literal[""]
                defs[f.name] = (
                    frozenset[names],  # type: ignore[valid-type]
                    Field(default=frozenset(), description=f.measure.doc()),
                )
                continue
            t = _PAYLOAD_TYPES[f.type]
            m = f.measure
            required = f.required and f.name not in self.native_optional
            defs[f.name] = (
                t if required else t | None,
                Field(default=... if required else None, ge=m.ge, le=m.le, description=m.doc()),
            )
        model: type[NativePayload] = create_model(
            f"{_camel(self.kind)}Payload",
            __base__=NativePayload,
            __module__=self.reading.__module__,
            **defs,
        )
        return model

    @cached_property
    def values_model(self) -> type[BaseModel]:
        """A stored reading's values as the API returns them."""
        defs: dict[str, Any] = {}
        for f in self.fields:
            if f.type == "alarms":
                defs[f.name] = (list[str], Field(description=f.measure.doc()))
                continue
            t = _VALUE_TYPES[f.type]
            defs[f.name] = (t if f.required else t | None, Field(description=f.measure.doc()))
        model: type[BaseModel] = create_model(
            f"{_camel(self.kind)}Values", __module__=self.reading.__module__, **defs
        )
        return model

    @cached_property
    def native_builder(self) -> Callable[[datetime, NativePayload, Mapping[str, Any]], Any]:
        """(ts, validated native payload, device attributes) → reading. On the ingest's hot
        path: the field order and the alarms' position are worked out here, once."""
        names = self.field_names
        # itemgetter of one name returns the value itself, not a 1-tuple
        pick = operator.itemgetter(*names) if len(names) > 1 else lambda v: (v[names[0]],)
        reading = self.reading
        complete = self.complete_native
        alarm_at = [i for i, f in enumerate(self.fields) if f.type == "alarms"]

        def build(ts: datetime, payload: NativePayload, attributes: Mapping[str, Any]) -> Any:
            values: dict[str, Any] = payload.__dict__
            if complete is not None:
                values = complete(dict(values), attributes)
            args = pick(values)
            if alarm_at:
                args = list(args)
                for i in alarm_at:
                    args[i] = tuple(sorted(args[i]))
            return reading(ts, *args)

        return build

    def reading_from(self, ts: datetime, values: Mapping[str, Any]) -> Any:
        """A reading of this kind from its field values (alarms as any iterable of names)."""
        kwargs = dict(values)
        if "alarms" in kwargs:
            kwargs["alarms"] = tuple(sorted(kwargs["alarms"]))
        return self.reading(ts=ts, **kwargs)

    def columns_sql(self) -> str:
        """The kind's measured columns, as `add_device_kind` in its migration takes them."""
        parts = []
        for f in self.fields:
            null = " NOT NULL" if f.required or f.type == "alarms" else ""
            default = " DEFAULT '{}'" if f.type == "alarms" else ""
            parts.append(f"{f.name} {f.sql_type}{null}{default}")
        return ", ".join(parts)


_SPECS: dict[DeviceKind, KindSpec] = {}
_BY_READING: dict[type, KindSpec] = {}


def declare_kind(
    name: str,
    *,
    reading: type,
    attributes: type[KindAttributes],
    table: str | None = None,
    alarms: tuple[str, ...] = (),
    description: str = "",
    native_optional: tuple[str, ...] = (),
    complete_native: Completion | None = None,
) -> KindSpec:
    """Declare a device kind; returns its spec. `reading` must be a dataclass whose first
    field is `ts` and whose other fields carry `measure()` metadata (an `alarms:
    tuple[str, ...]` field takes its names from `alarms`). `native_optional`: required
    reading fields a native payload may leave out, which `complete_native` then fills."""
    if not _KIND_NAME.match(name):
        raise ValueError(f"kind name {name!r} must match {_KIND_NAME.pattern}")
    if name in DeviceKind._known:
        raise ValueError(f"device kind {name!r} is declared twice")
    if not dataclasses.is_dataclass(reading) or dataclasses.fields(reading)[0].name != "ts":
        raise TypeError(f"{name}: the reading must be a dataclass whose first field is ts")
    kind = DeviceKind._create(name)
    spec = KindSpec(
        kind=kind,
        reading=reading,
        table=table or f"{name}_readings",
        attributes=attributes,
        alarms=alarms,
        description=description,
        native_optional=frozenset(native_optional),
        complete_native=complete_native,
    )
    spec.fields  # noqa: B018 - checks the dataclass now, not at the first reading
    DeviceKind._known[name] = kind
    _SPECS[kind] = spec
    _BY_READING[reading] = spec
    reading.kind = kind  # type: ignore[attr-defined]
    setattr(DeviceKind, name.upper(), kind)
    return spec


def kind_spec(kind: str) -> KindSpec:
    """The declaration of a kind (a DeviceKind or its name); ValueError for an unknown one."""
    found = _SPECS.get(kind)  # type: ignore[call-overload]  # a str finds its DeviceKind
    return found if found is not None else _SPECS[DeviceKind(kind)]


def spec_of(reading: object) -> KindSpec:
    """The declaration of a reading's kind."""
    return _BY_READING[type(reading)]


def all_kinds() -> list[DeviceKind]:
    """Every declared kind, in declaration order (built-in ones first)."""
    return list(_SPECS)


def all_specs() -> Iterator[KindSpec]:
    return iter(list(_SPECS.values()))
