"""Turning a registration request into a device the registry can store, or precise errors.

Shared by single registration, updates and bulk import, so every path enforces the same rules:
attributes valid for the kind, a decoder that exists and decodes that kind, normalised radio
identities.
"""

from __future__ import annotations

import csv
import io
import re
from typing import Any

from pydantic import ValidationError

from api.schemas import DeviceCreate
from devices.attributes import attribute_names, validate_attributes
from devices.decoders import DECODERS
from devices.kinds import DeviceKind
from storage.registry import NewDevice

_EUI_SEPARATORS = re.compile(r"[-:\s]")
_EUI = re.compile(r"^[0-9a-f]{16}$")
_WMBUS = re.compile(r"^[0-9a-z]{1,16}$")


class FieldError(Exception):
    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def normalise_dev_eui(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    eui = _EUI_SEPARATORS.sub("", value).lower()
    if not _EUI.match(eui):
        raise FieldError("dev_eui", f"dev_eui must be 16 hexadecimal digits, got {value!r}")
    return eui


def normalise_wmbus_id(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    wid = value.strip().lower()
    if not _WMBUS.match(wid):
        raise FieldError("wmbus_id", f"wmbus_id must be 1-16 letters or digits, got {value!r}")
    return wid


def check_decoder(kind: DeviceKind, decoder: str | None) -> None:
    if decoder is None:
        return
    dec = DECODERS.get(decoder)
    if dec is None:
        raise FieldError("decoder", f"unknown decoder {decoder!r}; see GET /decoders")
    if dec.info.kind != kind:
        raise FieldError(
            "decoder", f"decoder {decoder!r} decodes {dec.info.kind.value}, not {kind.value}"
        )


def attributes_or_error(kind: DeviceKind, raw: dict[str, Any]) -> dict[str, Any]:
    try:
        return validate_attributes(kind, raw)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise FieldError(f"attributes.{loc}" if loc else "attributes", err["msg"]) from exc


def _no_nul(field: str, value: object) -> None:
    if isinstance(value, str) and "\x00" in value:
        raise FieldError(field, "text may not contain NUL characters")
    if isinstance(value, dict):
        for k, v in value.items():
            _no_nul(f"{field}.{k}", v)


def device_tenant(body_tenant: str | None, caller_tenant: str | None) -> str:
    """The tenant a new device goes to. An admin (caller None) names any tenant, `default`
    when it names none; any other caller registers into its own tenant only, and a body that
    names another is refused rather than silently moved. Whether the tenant exists is the
    database's to check (registration's caller maps the violation to the same field)."""
    if caller_tenant is None:
        return body_tenant or "default"
    if body_tenant is not None and body_tenant != caller_tenant:
        raise FieldError("tenant", f"this key registers devices into tenant {caller_tenant!r} only")
    return caller_tenant


def new_device(body: DeviceCreate, caller_tenant: str | None = None) -> NewDevice:
    """Raises FieldError on the first problem found."""
    _no_nul("label", body.label)
    _no_nul("group", body.group)
    _no_nul("attributes", body.attributes)
    attributes = attributes_or_error(body.kind, body.attributes)
    dev_eui = normalise_dev_eui(body.dev_eui)
    wmbus_id = normalise_wmbus_id(body.wmbus_id)
    check_decoder(body.kind, body.decoder)
    tenant = device_tenant(body.tenant, caller_tenant)
    return NewDevice(
        id=body.id,
        kind=body.kind,
        label=body.label,
        lat=body.location.lat if body.location else None,
        lon=body.location.lon if body.location else None,
        group=body.group,
        attributes=attributes,
        dev_eui=dev_eui,
        wmbus_id=wmbus_id,
        decoder=body.decoder,
        tenant=tenant,
    )


# -- bulk import -------------------------------------------------------------------------------

_CORE = {"id", "kind", "label", "lat", "lon", "group", "dev_eui", "wmbus_id", "decoder", "tenant"}


def csv_rows(text: str) -> list[dict[str, Any]]:
    """CSV with a header row → registration dicts (the shape of POST /devices bodies).

    Columns: id, kind, label, lat, lon, group, dev_eui, wmbus_id, decoder, tenant, and any attribute
    (district, depth_mm, capacity_l, waste_stream, zone). Empty cells are absent values.
    """
    reader = csv.DictReader(io.StringIO(text))
    attribute_columns = attribute_names()
    if not reader.fieldnames or "id" not in reader.fieldnames:
        raise FieldError(None, "the CSV needs a header row with at least `id` and `kind`")
    unknown = [c for c in reader.fieldnames if c not in _CORE and c not in attribute_columns]
    if unknown:
        raise FieldError(
            None,
            f"unknown column(s) {', '.join(unknown)}; known: "
            f"{', '.join(sorted(_CORE))}, {', '.join(attribute_columns)}",
        )
    out: list[dict[str, Any]] = []
    for raw in reader:
        row = {k: v.strip() for k, v in raw.items() if k is not None and v is not None}
        item: dict[str, Any] = {k: v for k, v in row.items() if k in _CORE and v != ""}
        attrs = {k: v for k, v in row.items() if k in attribute_columns and v != ""}
        if attrs:
            item["attributes"] = attrs
        lat, lon = item.pop("lat", None), item.pop("lon", None)
        if lat is not None or lon is not None:
            item["location"] = {"lat": lat, "lon": lon}
        out.append(item)
    return out
