"""Open data payloads: Smart Data Models entities in NGSI-LD normalized and keyValues forms,
GeoJSON and semicolon-separated CSV, from the storage rows (docs/open-data.md). Pure: no I/O.

One function per dataset turns a row into the keyValues entity plus what the other forms need
(each attribute's observation time and unit); the forms are then derived from it, so the four
representations of a dataset cannot say different things.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from storage.opendata import DistrictMonth, ParkingZone, WasteColumn

CORE_CONTEXT = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld"
CONTEXTS = {
    "ParkingGroup": "https://raw.githubusercontent.com/smart-data-models/dataModel.Parking/"
    "master/context.jsonld",
    "WasteContainer": "https://raw.githubusercontent.com/smart-data-models/"
    "dataModel.WasteManagement/master/context.jsonld",
    "WaterConsumptionObserved": "https://raw.githubusercontent.com/smart-data-models/"
    "dataModel.WaterConsumption/master/context.jsonld",
}
SCHEMAS = {
    "ParkingGroup": "https://smart-data-models.github.io/dataModel.Parking/ParkingGroup/schema.json",
    "WasteContainer": "https://smart-data-models.github.io/dataModel.WasteManagement/"
    "WasteContainer/schema.json",
    "WaterConsumptionObserved": "https://smart-data-models.github.io/dataModel.WaterConsumption/"
    "WaterConsumptionObserved/schema.json",
}

# Attributes that are relationships in NGSI-LD (an `object`, not a `value`).
RELATIONSHIPS = frozenset({"refParkingSite"})

# Our waste streams (devices/attributes.py) in the model's `storedWasteKind` enumeration, and
# their code in the European List of Waste (Decision 2000/532/EC) as `storedWasteCode`: the
# enumeration has no word for residual household waste, mixed packaging or textiles, the code
# says exactly what the column holds. Every stream of `WASTE_STREAMS` has its entry (a test
# holds the two together), or its columns would be published with no kind at all.
WASTE_KIND: dict[str, tuple[str, str | None]] = {
    "residual": ("other", "20 03 01"),
    "packaging": ("other", "15 01 06"),
    "glass": ("glass", "20 01 02"),
    "paper": ("paper", "20 01 01"),
    "organic": ("organic", "20 01 08"),
    "textile": ("other", "20 01 10"),
    "other": ("other", None),
}


def iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def urn(entity_type: str, *parts: str) -> str:
    """`urn:ngsi-ld:<type>:<part>:<part>...`, each part percent-encoded (RFC 3986 unreserved
    characters kept), so that a `:` or a space inside a zone or district name can neither split
    nor break the identifier."""
    return ":".join(["urn", "ngsi-ld", entity_type, *(quote(p, safe="") for p in parts)])


def point(lat: float | None, lon: float | None) -> dict[str, Any] | None:
    if lat is None or lon is None:
        return None
    return {"type": "Point", "coordinates": [round(lon, 7), round(lat, 7)]}


@dataclass
class Entity:
    """An entity in keyValues form, with per-attribute metadata for the normalized form and
    the flat columns of the CSV."""

    values: dict[str, Any]
    observed_at: dict[str, str] = field(default_factory=dict)
    unit_code: dict[str, str] = field(default_factory=dict)
    csv_row: dict[str, Any] = field(default_factory=dict)

    @property
    def type(self) -> str:
        t: str = self.values["type"]
        return t

    @property
    def id(self) -> str:
        i: str = self.values["id"]
        return i


# --- the three datasets ------------------------------------------------------------------------

PARKING_CSV = [
    "id",
    "tenant",
    "zone",
    "total_spots",
    "available_spots",
    "occupied_spots",
    "unknown_spots",
    "occupancy",
    "observed_at",
    "lat",
    "lon",
]


def parking_entity(z: ParkingZone) -> Entity:
    known = z.free + z.occupied
    occupancy = round(z.occupied / known, 4) if known else None
    observed = iso(z.updated_at) if z.updated_at else None
    values: dict[str, Any] = {
        "id": urn("ParkingGroup", z.tenant, z.zone),
        "type": "ParkingGroup",
        "name": z.zone,
        "dataProvider": z.tenant,
        # The model requires a parent site; the platform has none beyond the zone itself.
        "refParkingSite": urn("OnStreetParking", z.tenant, z.zone),
        "occupancyDetectionType": ["singleSpaceDetection"],
        "totalSpotNumber": z.total,
        "availableSpotNumber": z.free,
        # Not in ParkingGroup's schema (it allows extra attributes): the parking site models'
        # `occupiedSpotNumber`, and occupancy among the spaces whose state is known.
        "occupiedSpotNumber": z.occupied,
    }
    if occupancy is not None:
        values["occupancy"] = occupancy
    loc = point(z.lat, z.lon)
    if loc is not None:
        values["location"] = loc
    if observed:
        values["dateObserved"] = observed
    e = Entity(values)
    if observed:
        for a in ("totalSpotNumber", "availableSpotNumber", "occupiedSpotNumber", "occupancy"):
            if a in values:
                e.observed_at[a] = observed
    if "occupancy" in values:
        e.unit_code["occupancy"] = "C62"  # UN/CEFACT "one": a ratio 0..1
    e.csv_row = {
        "id": e.id,
        "tenant": z.tenant,
        "zone": z.zone,
        "total_spots": z.total,
        "available_spots": z.free,
        "occupied_spots": z.occupied,
        "unknown_spots": z.unknown,
        "occupancy": occupancy,
        "observed_at": observed,
        "lat": z.lat,
        "lon": z.lon,
    }
    return e


WASTE_CSV = [
    "id",
    "tenant",
    "container",
    "stored_waste_kind",
    "stored_waste_code",
    "filling_level",
    "status",
    "next_actuation_deadline",
    "date_last_emptying",
    "observed_at",
    "lat",
    "lon",
]


def waste_status(c: WasteColumn) -> str:
    """The model's safety status from the newest reading's alarms: fire first (a safety
    matter), then a fallen column, then an open lid."""
    if c.last_reading_ts is None:
        return "unknown"
    if "fire" in c.alarms:
        return "burning"
    if "tilt" in c.alarms:
        return "dropped"
    if "lid_open" in c.alarms:
        return "lidOpen"
    return "ok"


def waste_entity(c: WasteColumn) -> Entity:
    values: dict[str, Any] = {
        "id": urn("WasteContainer", c.tenant, c.device_id),
        "type": "WasteContainer",
        "dataProvider": c.tenant,
        "location": point(c.lat, c.lon),
        "status": waste_status(c),
    }
    kind, code = WASTE_KIND.get(c.stream or "", (None, None))
    if kind is not None:
        values["storedWasteKind"] = kind
    if code is not None:
        values["storedWasteCode"] = code
    level = None
    if c.fill_pct is not None:
        level = round(min(1.0, max(0.0, c.fill_pct / 100)), 4)
        values["fillingLevel"] = level
    if c.fill_ts is not None:
        values["binLoggedTime"] = iso(c.fill_ts)
    if c.threshold_pct is not None:
        # A percentage in the model (its description), unlike fillingLevel's fraction.
        values["binFullnessThreshold"] = c.threshold_pct
    if c.eta_threshold is not None:
        values["nextActuationDeadline"] = iso(c.eta_threshold)
    if c.last_emptied is not None:
        values["dateLastEmptying"] = iso(c.last_emptied)
    e = Entity(values)
    if c.fill_ts is not None and "fillingLevel" in values:
        e.observed_at["fillingLevel"] = iso(c.fill_ts)
    if c.last_reading_ts is not None:
        e.observed_at["status"] = iso(c.last_reading_ts)
    if "fillingLevel" in values:
        e.unit_code["fillingLevel"] = "C62"
    if "binFullnessThreshold" in values:
        e.unit_code["binFullnessThreshold"] = "P1"  # percent
    e.csv_row = {
        "id": e.id,
        "tenant": c.tenant,
        "container": c.device_id,
        "stored_waste_kind": values.get("storedWasteKind"),
        "stored_waste_code": values.get("storedWasteCode"),
        "filling_level": level,
        "status": values["status"],
        "next_actuation_deadline": values.get("nextActuationDeadline"),
        "date_last_emptying": values.get("dateLastEmptying"),
        "observed_at": iso(c.fill_ts) if c.fill_ts else None,
        "lat": c.lat,
        "lon": c.lon,
    }
    return e


WATER_CSV = [
    "id",
    "tenant",
    "district",
    "month",
    "water_consumption_l",
    "date_observed_from",
    "date_observed_to",
    "observed_at",
    "lat",
    "lon",
]


def water_entity(d: DistrictMonth, month: str, start: datetime, end: datetime) -> Entity:
    # The schema states cubic metres as an integer; its official example publishes litres with
    # unitCode LTR. Litres keep the resolution a whole number of m³ would lose.
    litres = round(d.volume_m3 * 1000)
    # The end of the newest hour with data: the volume is known up to then.
    observed = iso(min(end, d.last_hour + timedelta(hours=1)))
    values: dict[str, Any] = {
        "id": urn("WaterConsumptionObserved", d.tenant, d.district, month),
        "type": "WaterConsumptionObserved",
        "name": d.district,
        "dataProvider": d.tenant,
        "waterConsumption": litres,
        # Not in this schema (allowed): the period the volume was consumed over, as other
        # *Observed models name it.
        "dateObservedFrom": iso(start),
        "dateObservedTo": iso(end),
    }
    loc = point(d.lat, d.lon)
    if loc is not None:
        values["location"] = loc
    e = Entity(values)
    e.observed_at["waterConsumption"] = observed
    e.unit_code["waterConsumption"] = "LTR"
    e.csv_row = {
        "id": e.id,
        "tenant": d.tenant,
        "district": d.district,
        "month": month,
        "water_consumption_l": litres,
        "date_observed_from": iso(start),
        "date_observed_to": iso(end),
        "observed_at": observed,
        "lat": d.lat,
        "lon": d.lon,
    }
    return e


# --- the forms ---------------------------------------------------------------------------------


def context(entity_type: str) -> list[str]:
    # The model's own context first; the core context last, so no term can redefine it.
    return [CONTEXTS[entity_type], CORE_CONTEXT]


def key_values(e: Entity) -> dict[str, Any]:
    return {**e.values, "@context": context(e.type)}


def normalized(e: Entity) -> dict[str, Any]:
    out: dict[str, Any] = {"id": e.id, "type": e.type}
    for name, value in e.values.items():
        if name in ("id", "type"):
            continue
        if name in RELATIONSHIPS:
            out[name] = {"type": "Relationship", "object": value}
            continue
        if name == "location":
            out[name] = {"type": "GeoProperty", "value": value}
            continue
        attr: dict[str, Any] = {"type": "Property", "value": value}
        if name in e.observed_at:
            attr["observedAt"] = e.observed_at[name]
        if name in e.unit_code:
            attr["unitCode"] = e.unit_code[name]
        out[name] = attr
    out["@context"] = context(e.type)
    return out


def geojson(entities: Sequence[Entity]) -> dict[str, Any]:
    features = []
    for e in entities:
        props = {k: v for k, v in e.values.items() if k not in ("id", "location")}
        features.append(
            {
                "type": "Feature",
                "id": e.id,
                "geometry": e.values.get("location"),
                "properties": props,
            }
        )
    return {"type": "FeatureCollection", "features": features}


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(round(v, 7))
    return str(v)


def csv_text(columns: Sequence[str], entities: Sequence[Entity]) -> str:
    """Semicolon-separated, `.` as the decimal mark, empty for no value, CRLF line ends
    (RFC 4180), UTF-8 without a byte-order mark."""
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=";", lineterminator="\r\n")
    w.writerow(columns)
    for e in entities:
        w.writerow([_cell(e.csv_row.get(c)) for c in columns])
    return buf.getvalue()


Form = str  # "normalized" | "keyValues" | "geojson" | "csv"

MEDIA_TYPES = {
    "normalized": "application/ld+json",
    "keyValues": "application/ld+json",
    "geojson": "application/geo+json",
    "csv": "text/csv; charset=utf-8",
}


def render(form: Form, entities: Sequence[Entity], csv_columns: Sequence[str]) -> bytes:
    if form == "csv":
        return csv_text(csv_columns, entities).encode()
    doc: Any
    if form == "geojson":
        doc = geojson(entities)
    else:
        shape: Callable[[Entity], dict[str, Any]] = (
            key_values if form == "keyValues" else normalized
        )
        doc = [shape(e) for e in entities]
    return json_bytes(doc)


def json_bytes(doc: Any) -> bytes:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
