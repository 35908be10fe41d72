"""Open data on real PostgreSQL: what each tenant publishes, in every form, validated against the
Smart Data Models schemas kept in ../shared/opendata, the privacy rule for water, the catalogue,
caching and the rate limit.

Devices are registered through the API, moved into the test's tenants with SQL (the device
routes take no tenant yet), readings go straight into the readings tables and the worker's jobs
build the derived data. Expected values are worked out by hand in comments.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource

from storage.auth import create_tenant
from storage.pool import connect
from territory.config import Settings
from tests.conftest import ADMIN_KEY, make_settings
from tests.shared_assets import shared_dir
from worker import waste as waste_job
from worker import water as water_job
from worker.jobs import Job
from worker.service import Worker

pytestmark = pytest.mark.integration

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
H = timedelta(hours=1)
SCHEMA_FILES = {
    "ParkingGroup": "dataModel.Parking/ParkingGroup/schema.json",
    "WasteContainer": "dataModel.WasteManagement/WasteContainer/schema.json",
    "WaterConsumptionObserved": "dataModel.WaterConsumption/WaterConsumptionObserved/schema.json",
}


# --- helpers -------------------------------------------------------------------------------

# jsonschema checks `date-time` and `uri` only with optional packages the dev extras do not
# carry; these two checkers hold the payloads to RFC 3339 and RFC 3986 all the same.
RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$", re.IGNORECASE
)
RFC3986 = re.compile(
    r"^[A-Za-z][A-Za-z0-9+.-]*:([A-Za-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9A-Fa-f]{2})+$"
)
FORMATS = FormatChecker()


def _date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if not RFC3339.match(value):
        return False
    datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    return True


def _uri(value: object) -> bool:
    return not isinstance(value, str) or bool(RFC3986.match(value))


FORMATS.checks("date-time", raises=ValueError)(_date_time)
FORMATS.checks("uri")(_uri)


def test_format_checkers_refuse_what_they_should() -> None:
    assert not FORMATS.conforms("2026-02-11 00:00:00", "date-time")
    assert not FORMATS.conforms("2026-02-11T00:00:00", "date-time")  # no offset
    assert FORMATS.conforms("2026-02-11T00:00:00Z", "date-time")
    assert not FORMATS.conforms("urn:ngsi-ld:X:big zone", "uri")
    assert not FORMATS.conforms("urn:ngsi-ld:X:100%", "uri")
    assert FORMATS.conforms("urn:ngsi-ld:X:big%20zone", "uri")


@pytest.fixture(scope="module")
def validators() -> dict[str, Draft202012Validator]:
    """The models' schemas with every $ref resolved from the local copies (ref-map.json), as
    ../shared/opendata/validate_examples.py does: no network."""
    root = shared_dir("opendata")
    urlmap = json.loads((root / "ref-map.json").read_text())["jsonschema"]
    registry: Registry[Any] = Registry().with_resources(
        (url, Resource.from_contents(json.loads((root / p).read_text())))
        for url, p in urlmap.items()
    )
    return {
        name: Draft202012Validator(
            json.loads((root / path).read_text()),
            registry=registry,
            format_checker=FORMATS,
        )
        for name, path in SCHEMA_FILES.items()
    }


def assert_valid(validators: dict[str, Draft202012Validator], entity: dict[str, Any]) -> None:
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validators[entity["type"]].iter_errors(entity)
    ]
    assert not errors, (entity["id"], errors)


def to_key_values(entity: dict[str, Any]) -> dict[str, Any]:
    """A normalized NGSI-LD entity as key-values, which is what the schemas describe (see
    ../shared/opendata/README.md); checks each attribute's NGSI-LD shape on the way."""
    out: dict[str, Any] = {}
    for name, attr in entity.items():
        if name in ("id", "type", "@context"):
            out[name] = attr
            continue
        assert isinstance(attr, dict), (name, attr)
        if attr["type"] == "Relationship":
            out[name] = attr["object"]
        else:
            assert attr["type"] in ("Property", "GeoProperty"), (name, attr)
            out[name] = attr["value"]
    return out


def db(settings: Settings, sql: str, *args: object) -> list[Any]:
    async def _run() -> list[Any]:
        conn = await connect(settings.database_url)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    return asyncio.run(_run())


def new_tenant(settings: Settings, tid: str) -> None:
    async def _run() -> None:
        conn = await connect(settings.database_url)
        try:
            assert await create_tenant(conn, tid, f"Tenant {tid}") is not None
        finally:
            await conn.close()

    asyncio.run(_run())


def move_to(settings: Settings, tenant: str, devices: Sequence[str]) -> None:
    db(settings, "UPDATE devices SET tenant = $1 WHERE id = ANY($2::text[])", tenant, devices)


def run_job(settings: Settings, job: Job) -> None:
    async def _run() -> None:
        w = Worker(settings, margin=timedelta(0), jobs=[job])
        try:
            await w.run_once()
        finally:
            await w.close()

    asyncio.run(_run())


def publish(client: TestClient, tenant: str, **flags: bool) -> None:
    body = {"parking": False, "waste": False, "water": False, **flags}
    r = client.put(f"/tenants/{tenant}/open-data", json=body, headers=ADMIN)
    assert r.status_code == 200, r.text


def iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


@pytest.fixture(scope="module")
def public(migrated: tuple[str, str]) -> Iterator[TestClient]:
    """An API client sending no key, with the rate limit out of the way and a short cache."""
    from api.app import create_app

    s = make_settings(
        migrated, open_data_rate_per_s=10_000, open_data_burst=10_000, open_data_cache_s=0.001
    )
    with TestClient(create_app(s)) as c:
        yield c


def all_forms(client: TestClient, path: str, **params: str) -> dict[str, Any]:
    """The four forms of one answer; each must be 200 with its media type."""
    out: dict[str, Any] = {}
    for form, extra, media in (
        ("normalized", {}, "application/ld+json"),
        ("keyValues", {"options": "keyValues"}, "application/ld+json"),
        ("geojson", {"format": "geojson"}, "application/geo+json"),
        ("csv", {"format": "csv"}, "text/csv; charset=utf-8"),
    ):
        r = client.get(path, params={**params, **extra})
        assert r.status_code == 200, (form, r.text)
        assert r.headers["content-type"] == media
        assert "etag" in r.headers and "last-modified" in r.headers
        assert r.headers["cache-control"].startswith("public, max-age=")
        if form == "csv":
            out[form] = list(csv.DictReader(io.StringIO(r.content.decode("utf-8")), delimiter=";"))
        else:
            out[form] = r.json()
    return out


def check_forms(
    validators: dict[str, Draft202012Validator], forms: dict[str, Any], entity_type: str
) -> None:
    """Every NGSI-LD entity (both forms) valid against its schema, the forms agreeing."""
    norm, kv, gj = forms["normalized"], forms["keyValues"], forms["geojson"]
    assert [e["id"] for e in norm] == [e["id"] for e in kv]
    assert [f["id"] for f in gj["features"]] == [e["id"] for e in kv]
    assert [row["id"] for row in forms["csv"]] == [e["id"] for e in kv]
    for n, k in zip(norm, kv, strict=True):
        assert n["type"] == k["type"] == entity_type
        assert n["@context"] == k["@context"]
        assert_valid(validators, to_key_values(n))
        assert_valid(validators, k)
        assert to_key_values(n) == k
    assert gj["type"] == "FeatureCollection"
    for f, k in zip(gj["features"], kv, strict=True):
        assert f["type"] == "Feature"
        assert f["geometry"] == k.get("location")
        assert f["properties"]["type"] == entity_type
        # A feature is the keyValues entity taken apart: put together, it is valid too.
        rebuilt = {"id": f["id"], **f["properties"]}
        if f["geometry"] is not None:
            rebuilt["location"] = f["geometry"]
        assert_valid(validators, rebuilt)
        assert rebuilt == {key: v for key, v in k.items() if key != "@context"}


# --- publication switch ----------------------------------------------------------------------


def test_nothing_is_public_until_an_admin_publishes_it(
    public: TestClient, settings: Settings, uid: str
) -> None:
    t = f"od-sw-{uid}"
    new_tenant(settings, t)
    unknown = public.get("/open/parking/zones", params={"tenant": f"nope-{uid}"})
    unpublished = public.get("/open/parking/zones", params={"tenant": t})
    # Unknown and unpublished cannot be told apart.
    assert unknown.status_code == unpublished.status_code == 404
    assert unknown.json() == unpublished.json()

    body = {"parking": True, "waste": False, "water": False}
    assert public.put(f"/tenants/{t}/open-data", json=body).status_code == 401
    r = public.put(f"/tenants/{t}/open-data", json={**body, "extra": 1}, headers=ADMIN)
    assert r.status_code == 422
    r = public.put(f"/tenants/{t}/open-data", json={"parking": True}, headers=ADMIN)
    assert r.status_code == 422
    r = public.put(f"/tenants/{t}/open-data", json={**body, "waste": "yes"}, headers=ADMIN)
    assert r.status_code == 422
    r = public.put(f"/tenants/nope-{uid}/open-data", json=body, headers=ADMIN)
    assert r.status_code == 404

    r = public.put(f"/tenants/{t}/open-data", json=body, headers=ADMIN)
    assert r.status_code == 200, r.text
    assert r.json() == {"tenant": t, "name": f"Tenant {t}", "open_data": body}
    assert public.get("/open/parking/zones", params={"tenant": t}).status_code == 200
    # Parking only: the tenant's waste and water stay private.
    for path in ("/open/waste/containers", "/open/water/consumption"):
        r = public.get(path, params={"tenant": t})
        assert r.status_code == 404 and r.json() == unknown.json()

    publish(public, t)  # all off again
    assert public.get("/open/parking/zones", params={"tenant": t}).status_code == 404


def test_bad_query_parameters_are_refused(public: TestClient) -> None:
    for path, params in (
        ("/open/parking/zones", {"format": "xml"}),
        ("/open/parking/zones", {"options": "sysAttrs"}),
        ("/open/waste/containers", {"format": "csv", "options": "keyValues"}),
        ("/open/water/consumption", {"month": "2026-13"}),
        ("/open/water/consumption", {"month": "26-01"}),
        ("/open/water/consumption", {"month": "0999-01"}),
    ):
        r = public.get(path, params=params)
        assert r.status_code == 422, (path, params, r.text)
        assert "detail" in r.json()


# --- parking ---------------------------------------------------------------------------------


def test_parking_zones_per_tenant_in_every_form(
    public: TestClient,
    settings: Settings,
    validators: dict[str, Draft202012Validator],
    uid: str,
) -> None:
    ta, tb = f"od-pa-{uid}", f"od-pb-{uid}"
    new_tenant(settings, ta)
    new_tenant(settings, tb)
    zone = f"centre-{uid}"
    now = datetime.now(UTC)
    spaces = [f"od-ps{k}-{uid}" for k in range(6)]
    coords = [(48.10, -1.60), (48.12, -1.62), (48.14, -1.64), (48.10, -1.60), (48.12, -1.62)]
    for dev, (lat, lon) in zip(spaces, coords, strict=False):
        body = {"id": dev, "kind": "parking_sensor", "attributes": {"zone": zone}}
        body["location"] = {"lat": lat, "lon": lon}
        assert public.post("/devices", json=body, headers=ADMIN).status_code == 201
    # The sixth space has no location: it counts but does not move the centroid.
    r = public.post(
        "/devices",
        json={"id": spaces[5], "kind": "parking_sensor", "attributes": {"zone": zone}},
        headers=ADMIN,
    )
    assert r.status_code == 201
    other = f"od-pso-{uid}"  # same zone name, other tenant
    r = public.post(
        "/devices",
        json={"id": other, "kind": "parking_sensor", "attributes": {"zone": zone}},
        headers=ADMIN,
    )
    assert r.status_code == 201
    move_to(settings, ta, spaces)
    move_to(settings, tb, [other])
    db(
        settings,
        "INSERT INTO parking_sensor_readings (device_id, ts, received_at, occupied) "
        "SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[], $4::bool[])",
        [spaces[0], spaces[1], spaces[2], spaces[3], other],
        [now - 5 * 60 * timedelta(seconds=1), now - H, now - 2 * H, now - 10 * H, now - H],
        [now] * 5,
        [False, False, True, False, False],
    )
    # spaces 0, 1: fresh and free; 2: fresh and occupied; 3: free but 10 h old, past the
    # 6.5 h window: unknown; 4 and 5: never heard from: unknown. total 6, available 2,
    # occupied 1, unknown 3, occupancy 1 / 3.
    publish(public, ta, parking=True)
    forms = all_forms(public, "/open/parking/zones", tenant=ta)
    check_forms(validators, forms, "ParkingGroup")
    (norm,) = forms["normalized"]
    assert norm["id"] == f"urn:ngsi-ld:ParkingGroup:{ta}:{zone}"
    assert norm["totalSpotNumber"]["value"] == 6
    assert norm["availableSpotNumber"]["value"] == 2
    assert norm["occupiedSpotNumber"]["value"] == 1
    assert norm["occupancy"]["value"] == pytest.approx(0.3333, abs=1e-4)
    newest = iso(
        db(
            settings,
            "SELECT max(ts) FROM parking_sensor_readings WHERE device_id = ANY($1)",
            spaces,
        )[0][0]
    )
    assert norm["availableSpotNumber"]["observedAt"] == newest
    assert norm["refParkingSite"] == {
        "type": "Relationship",
        "object": f"urn:ngsi-ld:OnStreetParking:{ta}:{zone}",
    }
    # Centroid of the five located spaces: lat (48.10+48.12+48.14+48.10+48.12)/5 = 48.116,
    # lon (-1.60-1.62-1.64-1.60-1.62)/5 = -1.616.
    lon, lat = norm["location"]["value"]["coordinates"]
    assert (lat, lon) == (pytest.approx(48.116), pytest.approx(-1.616))
    assert norm["@context"][-1] == "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld"
    (row,) = forms["csv"]
    assert (row["total_spots"], row["available_spots"], row["unknown_spots"]) == ("6", "2", "3")
    assert row["zone"] == zone and row["tenant"] == ta

    # Every published tenant: A's zone, never B's same-named zone.
    everyone = public.get("/open/parking/zones").json()
    ids = [e["id"] for e in everyone]
    assert norm["id"] in ids
    assert not any(f":{tb}:" in i for i in ids)
    assert other not in json.dumps(everyone)
    assert public.get("/open/parking/zones", params={"tenant": tb}).status_code == 404
    for e in everyone:
        assert_valid(validators, to_key_values(e))
        assert 0 <= e["availableSpotNumber"]["value"] <= e["totalSpotNumber"]["value"]


# --- waste -----------------------------------------------------------------------------------


def test_waste_containers_status_and_forecast(
    public: TestClient,
    settings: Settings,
    validators: dict[str, Draft202012Validator],
    uid: str,
) -> None:
    ta, tb = f"od-wa-{uid}", f"od-wb-{uid}"
    new_tenant(settings, ta)
    new_tenant(settings, tb)
    names = {k: f"od-wc-{k}-{uid}" for k in ("ok", "fire", "lid", "silent", "nowhere", "other")}
    for k, dev in names.items():
        body: dict[str, Any] = {
            "id": dev,
            "kind": "waste_column",
            "group": f"round-{uid}",
            "attributes": {"waste_stream": "glass" if k != "lid" else "residual"},
        }
        if k != "nowhere":
            body["location"] = {"lat": 48.11, "lon": -1.68}
        r = public.post("/devices", json=body, headers=ADMIN)
        assert r.status_code == 201, r.text
    move_to(settings, ta, [d for k, d in names.items() if k != "other"])
    move_to(settings, tb, [names["other"]])
    # A column filling 10 points a day over 4 days, readings every 6 hours: 20 % -> 60 %.
    now = datetime.now(UTC).replace(microsecond=0)
    t0 = now - timedelta(days=4)
    rows: list[tuple[str, datetime, float, float, list[str]]] = []
    # The newest reading (a minute ago, 60 %) of "fire" carries the fire alarm; of "lid", the
    # open lid.
    newest = {"fire": ["fire"], "lid": ["lid_open"]}
    for k in ("ok", "fire", "lid", "nowhere", "other"):
        dev = names[k]
        for i in range(16):
            fill = 20 + 2.5 * i
            rows.append((dev, t0 + 6 * H * i, fill, 1800 * (1 - fill / 100), []))
        rows.append((dev, now - timedelta(minutes=1), 60.0, 720.0, newest.get(k, [])))
    db(
        settings,
        "INSERT INTO waste_column_readings (device_id, ts, received_at, fill_pct, distance_mm, "
        "alarms) SELECT d, t, now(), f, m, coalesce(string_to_array(a, ','), '{}') "
        "FROM unnest($1::text[], $2::timestamptz[], $3::float8[], $4::float8[], $5::text[]) "
        "AS x(d, t, f, m, a)",
        [r[0] for r in rows],
        [r[1] for r in rows],
        [r[2] for r in rows],
        [r[3] for r in rows],
        [",".join(r[4]) if r[4] else None for r in rows],
    )
    run_job(settings, waste_job.JOB)
    publish(public, ta, waste=True)
    forms = all_forms(public, "/open/waste/containers", tenant=ta)
    check_forms(validators, forms, "WasteContainer")
    by_id = {e["id"]: e for e in forms["keyValues"]}
    urn = {k: f"urn:ngsi-ld:WasteContainer:{ta}:{d}" for k, d in names.items()}
    # "nowhere" has no location (required by the model): not published; "other" is tenant B's.
    assert set(by_id) == {urn["ok"], urn["fire"], urn["lid"], urn["silent"]}
    assert by_id[urn["ok"]]["status"] == "ok"
    assert by_id[urn["fire"]]["status"] == "burning"
    assert by_id[urn["lid"]]["status"] == "lidOpen"
    assert by_id[urn["silent"]]["status"] == "unknown"
    assert "fillingLevel" not in by_id[urn["silent"]]
    ok = by_id[urn["ok"]]
    # The newest level is 60 % (a 0..1 fraction in the model); glass is in the enumeration.
    assert ok["fillingLevel"] == pytest.approx(0.60, abs=0.03)
    assert 0 <= ok["fillingLevel"] <= 1
    assert ok["storedWasteKind"] == "glass" and ok["storedWasteCode"] == "20 01 02"
    assert by_id[urn["lid"]]["storedWasteKind"] == "other"
    assert by_id[urn["lid"]]["storedWasteCode"] == "20 03 01"
    assert ok["location"] == {"type": "Point", "coordinates": [-1.68, 48.11]}
    ((eta, thr),) = db(
        settings,
        "SELECT eta_threshold, threshold_pct FROM waste_column_state WHERE device_id = $1",
        names["ok"],
    )
    # Filling 10 points a day from 60 %, it reaches its threshold in the future.
    assert eta is not None and eta > now
    assert ok["nextActuationDeadline"] == iso(eta)
    assert ok["binFullnessThreshold"] == thr
    norm = {e["id"]: e for e in forms["normalized"]}[urn["ok"]]
    assert norm["fillingLevel"]["unitCode"] == "C62"
    assert norm["binFullnessThreshold"]["unitCode"] == "P1"
    csv_ok = {r["id"]: r for r in forms["csv"]}[urn["ok"]]
    assert csv_ok["status"] == "ok" and csv_ok["container"] == names["ok"]
    assert names["other"] not in json.dumps(public.get("/open/waste/containers").json())


# --- water -----------------------------------------------------------------------------------


def _meters(
    public: TestClient, settings: Settings, prefix: str, district: str, n: int
) -> list[str]:
    devs = [f"{prefix}-{k}" for k in range(n)]
    for k, dev in enumerate(devs):
        r = public.post(
            "/devices",
            json={
                "id": dev,
                "kind": "water_meter",
                "location": {"lat": 48.0 + k * 0.001, "lon": -1.0},
                "attributes": {"district": district},
            },
            headers=ADMIN,
        )
        assert r.status_code == 201, r.text
    return devs


def test_water_districts_only_above_the_threshold_never_per_meter(
    public: TestClient,
    settings: Settings,
    validators: dict[str, Draft202012Validator],
    uid: str,
) -> None:
    ta, tb = f"od-ea-{uid}", f"od-eb-{uid}"
    new_tenant(settings, ta)
    new_tenant(settings, tb)
    big = _meters(public, settings, f"od-wmb-{uid}", f"big {uid}", 10)
    small = _meters(public, settings, f"od-wms-{uid}", f"small-{uid}", 9)
    solo = _meters(public, settings, f"od-wmx-{uid}", f"solo-{uid}", 11)
    # Tenant B has meters in a district of the same name as A's big one: the two are summed
    # apart, from the per-meter hours; A's other districts come from the per-district rollup.
    theirs = _meters(public, settings, f"od-wmo-{uid}", f"big {uid}", 12)
    move_to(settings, ta, big + small + solo)
    move_to(settings, tb, theirs)
    # Each meter: a reading every UTC hour from 2026-02-10 00:00Z to 2026-02-11 00:00Z,
    # meter k using (10 + k) L per hour: 24 x (10 + k) L. Big district (A's part): 24 x
    # (10+...+19) = 24 x 145 = 3,480 L; solo: 24 x (10+...+20) = 24 x 165 = 3,960 L.
    # February 2026 in Paris: 2026-01-31T23:00Z -> 2026-02-28T23:00Z.
    start = datetime(2026, 2, 10, tzinfo=UTC)
    devs, ts, idx = [], [], []
    for group in (big, small, solo, theirs):
        for k, dev in enumerate(group):
            for h in range(25):
                devs.append(dev)
                ts.append(start + h * H)
                idx.append(100 + h * (10 + k) / 1000)
    db(
        settings,
        "INSERT INTO water_meter_readings (device_id, ts, received_at, index_m3) "
        "SELECT d, t, now(), i FROM unnest($1::text[], $2::timestamptz[], $3::float8[]) "
        "AS x(d, t, i)",
        devs,
        ts,
        idx,
    )
    run_job(settings, water_job.JOB)
    publish(public, ta, water=True)
    publish(public, tb, water=False, parking=True)
    forms = all_forms(public, "/open/water/consumption", tenant=ta, month="2026-02")
    check_forms(validators, forms, "WaterConsumptionObserved")
    norm, solo_e = forms["normalized"]  # the 9-meter district is not published
    assert norm["id"] == f"urn:ngsi-ld:WaterConsumptionObserved:{ta}:big%20{uid}:2026-02"
    assert solo_e["id"] == f"urn:ngsi-ld:WaterConsumptionObserved:{ta}:solo-{uid}:2026-02"
    assert solo_e["waterConsumption"]["value"] == 3960
    assert norm["waterConsumption"] == {
        "type": "Property",
        "value": 3480,
        "unitCode": "LTR",
        # The end of the newest hour with data.
        "observedAt": "2026-02-11T00:00:00Z",
    }
    assert norm["dateObservedFrom"]["value"] == "2026-01-31T23:00:00Z"
    assert norm["dateObservedTo"]["value"] == "2026-02-28T23:00:00Z"
    row, _ = forms["csv"]
    assert row["water_consumption_l"] == "3480" and row["district"] == f"big {uid}"

    # Another month has nothing; tenant B publishes no water.
    r = public.get("/open/water/consumption", params={"tenant": ta, "month": "2026-01"})
    assert r.status_code == 200 and r.json() == []
    assert public.get("/open/water/consumption", params={"tenant": tb}).status_code == 404

    # Whatever the form and the tenant selection: no meter id, no small district, nothing of B.
    for params in ({"month": "2026-02"}, {"month": "2026-02", "tenant": ta}):
        for extra in ({}, {"options": "keyValues"}, {"format": "geojson"}, {"format": "csv"}):
            text = public.get("/open/water/consumption", params={**params, **extra}).text
            for dev in big + small + solo + theirs:
                assert dev not in text
            assert f"small-{uid}" not in text
            assert tb not in text
    everyone = public.get("/open/water/consumption", params={"month": "2026-02"}).json()
    for e in everyone:
        assert_valid(validators, to_key_values(e))
    assert [e["id"] for e in everyone if uid in e["id"]] == [norm["id"], solo_e["id"]]


def test_water_threshold_setting_is_never_below_five(migrated: tuple[str, str]) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="open_data_min_meters"):
        make_settings(migrated, open_data_min_meters=4)
    assert make_settings(migrated, open_data_min_meters=5).open_data_min_meters == 5
    assert make_settings(migrated).open_data_min_meters == 10


# --- catalogue -------------------------------------------------------------------------------


def test_catalog_lists_what_is_published_with_licence_and_distributions(
    public: TestClient, settings: Settings, uid: str
) -> None:
    ta, tb = f"od-ca-{uid}", f"od-cb-{uid}"
    new_tenant(settings, ta)
    new_tenant(settings, tb)
    publish(public, ta, parking=True, water=True)
    r = public.get("/open/catalog")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/ld+json"
    cat = r.json()
    assert cat["@type"] == "dcat:Catalog"
    assert cat["@context"]["dcat"] == "http://www.w3.org/ns/dcat#"
    assert cat["dct:license"] == {"@id": "https://www.etalab.gouv.fr/licence-ouverte-open-licence/"}
    mine = {d["dct:identifier"]: d for d in cat["dcat:dataset"] if ta in d["dct:identifier"]}
    assert set(mine) == {f"{ta}-parking", f"{ta}-water"}
    assert not any(tb in d["dct:identifier"] for d in cat["dcat:dataset"])
    freq = "http://publications.europa.eu/resource/authority/frequency/"
    assert mine[f"{ta}-parking"]["dct:accrualPeriodicity"] == {"@id": freq + "UPDATE_CONT"}
    assert mine[f"{ta}-water"]["dct:accrualPeriodicity"] == {"@id": freq + "MONTHLY"}
    for ds in mine.values():
        assert ds["@type"] == "dcat:Dataset"
        assert ds["dct:license"] == cat["dct:license"]
        dists = ds["dcat:distribution"]
        assert {d["dct:format"]["@id"].rsplit("/", 1)[1] for d in dists} == {
            "JSON_LD",
            "GEOJSON",
            "CSV",
        }
        assert len(dists) == 4
        for d in dists:
            assert d["dct:license"] == cat["dct:license"]
            url = d["dcat:downloadURL"]["@id"]
            assert url.startswith("http://testserver/open/")
            got = public.get(url)
            assert got.status_code == 200, url
            assert got.headers["content-type"].startswith(
                d["dcat:mediaType"]["@id"].split("media-types/")[1]
            )


# --- caching and rate limit ------------------------------------------------------------------


class CountingPool:
    """The app's pool, counting every query and connection taken through it."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._pool, name)
        if name in ("fetch", "fetchrow", "fetchval", "execute", "acquire", "executemany"):
            self.calls += 1
        return attr


def test_conditional_request_is_answered_from_the_cache_without_a_query(
    migrated: tuple[str, str], settings: Settings, uid: str
) -> None:
    from api.app import create_app

    t = f"od-cc-{uid}"
    new_tenant(settings, t)
    s = make_settings(migrated, open_data_cache_s=60, open_data_burst=1000)
    with TestClient(create_app(s)) as c:
        publish(c, t, parking=True)
        first = c.get("/open/parking/zones", params={"tenant": t})
        assert first.status_code == 200
        etag = first.headers["etag"]
        assert first.headers["cache-control"] == "public, max-age=60"
        counting = CountingPool(c.app.state.pool)  # type: ignore[attr-defined]
        c.app.state.pool = counting  # type: ignore[attr-defined]

        r = c.get("/open/parking/zones", params={"tenant": t}, headers={"If-None-Match": etag})
        assert r.status_code == 304 and r.content == b""
        assert r.headers["etag"] == etag
        r = c.get(
            "/open/parking/zones",
            params={"tenant": t},
            headers={"If-None-Match": f'W/{etag}, "other"'},
        )
        assert r.status_code == 304
        last = first.headers["last-modified"]
        r = c.get("/open/parking/zones", params={"tenant": t}, headers={"If-Modified-Since": last})
        assert r.status_code == 304
        r = c.get("/open/parking/zones", params={"tenant": t})
        assert r.status_code == 200 and r.content == first.content
        # HEAD, as harvesters check for changes: the same headers, no body.
        r = c.head("/open/parking/zones", params={"tenant": t})
        assert r.status_code == 200 and r.headers["etag"] == etag
        r = c.head("/open/parking/zones", params={"tenant": t}, headers={"If-None-Match": etag})
        assert r.status_code == 304
        assert counting.calls == 0

        # A stale ETag gets the answer; a query string not seen yet goes to the database.
        r = c.get("/open/parking/zones", params={"tenant": t}, headers={"If-None-Match": '"x"'})
        assert r.status_code == 200 and r.headers["etag"] == etag
        old = format_datetime(datetime(2000, 1, 1, tzinfo=UTC), usegmt=True)
        r = c.get("/open/parking/zones", params={"tenant": t}, headers={"If-Modified-Since": old})
        assert r.status_code == 200
        assert counting.calls == 0
        r = c.get("/open/parking/zones", params={"tenant": t, "format": "csv"})
        assert r.status_code == 200
        assert counting.calls > 0


def test_rate_limit_per_client_answers_429_with_retry_after(
    migrated: tuple[str, str], settings: Settings, uid: str
) -> None:
    from api.app import create_app

    s = make_settings(migrated, open_data_rate_per_s=0.5, open_data_burst=3)
    with TestClient(create_app(s)) as c:
        codes = [c.get("/open/catalog").status_code for _ in range(3)]
        assert codes == [200, 200, 200]
        r = c.get("/open/catalog")
        assert r.status_code == 429
        # One token back at 0.5 per second: 2 s.
        assert r.headers["retry-after"] == "2"
        assert "detail" in r.json()
        # Another client has its own bucket.
        other = TestClient(c.app, client=("192.0.2.7", 5000))  # shares the running app
        assert other.get("/open/catalog").status_code == 200
        # Admin routes are not rate-limited by it.
        assert c.get("/health").status_code == 200


def test_openapi_lists_the_public_routes(public: TestClient) -> None:
    paths = public.get("/openapi.json").json()["paths"]
    for p in (
        "/open/catalog",
        "/open/parking/zones",
        "/open/waste/containers",
        "/open/water/consumption",
        "/tenants/{tenant}/open-data",
    ):
        assert p in paths


def test_nul_bytes_are_bad_input_not_server_errors(public: TestClient) -> None:
    r = public.get("/open/parking/zones", params={"tenant": "a\x00b"})
    assert r.status_code == 404  # no tenant is called that
    body = {"parking": True, "waste": False, "water": False}
    r = public.put("/tenants/a%00b/open-data", json=body, headers=ADMIN)
    assert r.status_code == 422, r.text
