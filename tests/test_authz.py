"""Access control under attack, against the real API and PostgreSQL: another tenant's ids on
every route, every role on every route, forbidden fields, revoked and expired keys, and what
tenant-blind rollups would leak (a district sum, a zone count, a stream median)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from fastapi.testclient import TestClient

from api.authz import OPENAPI_KEY, ROLE_PERMISSIONS, Permission
from api.authz_matrix import may, operations, render
from storage import auth as keys_store
from storage import waste as wq
from storage import water as ws
from storage.pool import connect
from territory.config import Settings
from tests.conftest import ADMIN_KEY

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
TENANT_ROLES = ("integrator", "operator", "crew", "viewer")
T = TypeVar("T")


def db(settings: Settings, fn: Callable[[Any], Awaitable[T]]) -> T:
    async def _run() -> T:
        conn = await connect(settings.database_url)
        try:
            return await fn(conn)
        finally:
            await conn.close()

    return asyncio.run(_run())


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class Tenant:
    id: str
    keys: dict[str, str] = field(default_factory=dict)  # role -> key
    wm: str = ""  # a water meter
    wc: str = ""  # a waste column
    ps: str = ""  # a parking sensor
    zone: str = ""  # a zone only this tenant's sensor is in
    district: str = ""
    alert_id: int = 0
    rejected_id: int = 0
    label: str = ""  # a string that appears in this tenant's data only


@dataclass
class World:
    a: Tenant
    b: Tenant
    shared_district: str
    shared_zone: str
    shared_stream_round: str


def _make_tenant(api: TestClient, settings: Settings, tid: str, uid: str) -> Tenant:
    r = api.post("/tenants", json={"id": tid, "name": f"Tenant {tid}"})
    assert r.status_code == 201, r.text
    t = Tenant(tid, label=f"SECRET-{tid}")
    for role in TENANT_ROLES:
        r = api.post("/keys", json={"role": role, "tenant": tid, "label": f"{role} of {tid}"})
        assert r.status_code == 201, r.text
        t.keys[role] = r.json()["key"]
    t.wm, t.wc, t.ps = f"{tid}-wm", f"{tid}-wc", f"{tid}-ps"
    t.zone, t.district = f"zone-{tid}", f"district-{tid}"
    for body in (
        {"id": t.wm, "kind": "water_meter", "attributes": {"district": t.district}},
        {"id": t.wc, "kind": "waste_column", "group": f"round-{tid}", "attributes": {}},
        {"id": t.ps, "kind": "parking_sensor", "attributes": {"zone": t.zone}},
    ):
        r = api.post("/devices", json={**body, "label": t.label, "tenant": tid})
        assert r.status_code == 201, r.text
        assert r.json()["tenant"] == tid

    async def seed(conn: Any) -> tuple[int, int]:
        now = datetime.now(UTC)
        alert_id = await conn.fetchval(
            "INSERT INTO alerts (device_id, type, severity, opened_at, last_seen_at, detail) "
            "VALUES ($1, 'offline', 'major', $2, $2, $3) RETURNING id",
            t.wm,
            now,
            {"note": t.label},
        )
        payload = t.label.encode()
        rejected_id = await conn.fetchval(
            "INSERT INTO rejected_messages (received_at, topic, device_id, reason, detail, "
            "payload, payload_size, payload_sha256) VALUES (now(), $1, $2, 'bad_payload', $3, "
            "$4, $5, $6) RETURNING id",
            f"territory/{t.wm}/up",
            t.wm,
            t.label,
            payload,
            len(payload),
            hashlib.sha256(payload).digest(),
        )
        await conn.execute(
            "INSERT INTO water_index_resets (device_id, at, new_start_index_m3) VALUES ($1, $2, 0)",
            t.wm,
            now - timedelta(days=1),
        )
        return int(alert_id), int(rejected_id)

    t.alert_id, t.rejected_id = db(settings, seed)
    return t


@pytest.fixture(scope="module")
def world(api: TestClient, settings: Settings) -> World:
    uid = hashlib.sha256(str(datetime.now().timestamp()).encode()).hexdigest()[:8]
    a = _make_tenant(api, settings, f"ta-{uid}", uid)
    b = _make_tenant(api, settings, f"tb-{uid}", uid)
    return World(a, b, f"district-shared-{uid}", f"zone-shared-{uid}", f"round-shared-{uid}")


# -- what each route's path parameters are filled with ------------------------------------------


def _fill(path: str, t: Tenant | None, missing: bool = False) -> tuple[str, list[str]]:
    """The path with the tenant's ids (or ids that exist nowhere), and the ids used."""
    used: list[str] = []

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if missing or t is None:
            value = {
                "alert_id": "4611686018427387000",
                "rejected_id": "4611686018427387000",
                "delivery_id": "4611686018427387000",
                "key_id": "key_zzzzzzzz",
                "zone": "zone-nowhere-at-all",
            }.get(name, "no-such-device-anywhere")
        elif name == "device_id":
            if path.startswith("/water/"):
                value = t.wm
            elif path.startswith("/waste/"):
                value = t.wc
            else:
                value = t.wm
        elif name == "alert_id":
            value = str(t.alert_id)
        elif name == "rejected_id":
            value = str(t.rejected_id)
        elif name == "zone":
            value = t.zone
        else:
            value = "key_zzzzzzzz" if name == "key_id" else "1"
        used.append(value)
        return value

    return re.sub(r"\{([a-z_]+)\}", sub, path), used


def _body(method: str, path: str) -> dict[str, Any]:
    """A valid request for the route, so that only the caller's rights decide the answer."""
    now = datetime.now(UTC)
    if path.endswith("/index-resets") and method == "POST":
        return {"json": {"at": now.isoformat(), "new_start_index_m3": 0.0}}
    if path.endswith("/acknowledge"):
        return {"json": {"by": "attacker"}}
    if path.endswith("/emptied") and path.startswith("/waste/"):
        return {"json": {}}
    if method == "PATCH":
        return {"json": {"label": "taken over"}}
    return {}


def _snapshot(settings: Settings, t: Tenant) -> str:
    """Everything of the tenant the API could change, as one string."""

    async def read(conn: Any) -> str:
        parts = []
        for sql in (
            "SELECT * FROM devices WHERE tenant = $1 ORDER BY id",
            "SELECT a.* FROM alerts a JOIN devices d ON d.id = a.device_id "
            "WHERE d.tenant = $1 ORDER BY a.id",
            "SELECT r.* FROM water_index_resets r JOIN devices d ON d.id = r.device_id "
            "WHERE d.tenant = $1 ORDER BY 1, 2",
            "SELECT c.* FROM waste_crew_emptied c JOIN devices d ON d.id = c.device_id "
            "WHERE d.tenant = $1 ORDER BY 1, 2",
            "SELECT count(*) FROM alert_events e JOIN devices d ON d.id = e.device_id "
            "WHERE d.tenant = $1",
        ):
            rows = await conn.fetch(sql, t.id)
            parts.append(json.dumps([dict(r) for r in rows], default=str, sort_keys=True))
        return "\n".join(parts)

    return db(settings, read)


def _openapi(api: TestClient) -> dict[str, Any]:
    r = api.get("/openapi.json")
    assert r.status_code == 200
    body: dict[str, Any] = r.json()
    return body


def _roles_for(perm: Permission | None) -> list[str]:
    return [r for r in TENANT_ROLES if perm is None or perm in ROLE_PERMISSIONS[r]]


# -- another tenant's ids --------------------------------------------------------------------


def test_foreign_ids_on_every_route_are_missing_ids(
    api: TestClient, settings: Settings, world: World
) -> None:
    a, b = world.a, world.b
    before = _snapshot(settings, b)
    calls = leaks = changes = 0
    admin_only = []
    for method, template, perm in operations(_openapi(api)):
        if "{" not in template or perm is None:
            continue
        roles = _roles_for(perm)
        if not roles:
            admin_only.append(f"{method} {template}")
            continue
        foreign, ids = _fill(template, b)
        missing, missing_ids = _fill(template, None, missing=True)
        for role in roles:
            key = a.keys[role]
            r_f = api.request(method, foreign, headers=bearer(key), **_body(method, template))
            r_m = api.request(method, missing, headers=bearer(key), **_body(method, template))
            calls += 1
            body_f, body_m = r_f.text, r_m.text
            for x in ids:
                body_f = body_f.replace(x, "<id>")
            for x in missing_ids:
                body_m = body_m.replace(x, "<id>")
            ok = r_f.status_code == 404 and r_m.status_code == 404 and body_f == body_m
            if not ok or b.label in r_f.text:
                leaks += 1
                print(f"LEAK {role} {method} {foreign}: {r_f.status_code} {r_f.text[:200]}")
    after = _snapshot(settings, b)
    changes = int(before != after)
    print(
        f"foreign-id attack: {calls} calls by tenant {a.id}'s keys on tenant {b.id}'s ids, "
        f"{leaks} answered differently from a missing id or showed its data, {changes} "
        f"changes to tenant {b.id}'s rows; admin-only routes (403 to every tenant key): "
        f"{len(admin_only)}"
    )
    assert calls >= 15
    assert leaks == 0
    assert before == after


def test_lists_and_aggregates_never_show_another_tenants_devices(
    api: TestClient, world: World
) -> None:
    a, b = world.a, world.b
    secrets_of_b = (b.label, b.wm, b.wc, b.ps, b.zone, b.district)
    seen = calls = 0
    for method, path, perm in operations(_openapi(api)):
        if method != "GET" or "{" in path or perm is None or perm is Permission.ADMIN:
            continue
        params: dict[str, str] = {}
        if path == "/water/consumption":
            params = {"group": b.district}
        for role in _roles_for(perm):
            r = api.get(path, headers=bearer(a.keys[role]), params=params)
            calls += 1
            text = r.text
            if params:  # b's district, asked for by name: a missing district for a
                assert r.status_code == 404
                text = text.replace(b.district, "")
            shown = [s for s in secrets_of_b if s in text]
            if shown:
                seen += 1
                print(f"SHOWN {role} GET {path}: {shown}")
    # What an admin sees there, for contrast: the same lists do hold them.
    r = api.get("/devices", params={"limit": 1000, "group": f"round-{b.id}"})
    assert [d["id"] for d in r.json()["items"]] == [b.wc]
    print(f"lists: {calls} calls by tenant {a.id}'s keys, {seen} showed tenant {b.id}'s data")
    assert seen == 0


def test_a_device_page_cursor_never_reaches_another_tenant(api: TestClient, world: World) -> None:
    key = world.a.keys["viewer"]
    ids: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 1}
        if cursor:
            params["cursor"] = cursor
        r = api.get("/devices", headers=bearer(key), params=params)
        assert r.status_code == 200, r.text
        page = r.json()
        ids += [d["id"] for d in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if not cursor:
            break
    print(f"cursor walk: {pages} pages, {len(ids)} devices, all of tenant {world.a.id}")
    assert sorted(ids) == sorted([world.a.wm, world.a.wc, world.a.ps])


# -- each role against each route --------------------------------------------------------------


def test_the_documented_matrix_is_generated_from_the_openapi(api: TestClient) -> None:
    doc = (ROOT / "docs" / "auth-matrix.md").read_text()
    assert doc == render(_openapi(api)), (
        "docs/auth-matrix.md is out of date: python -m api.authz_matrix > docs/auth-matrix.md"
    )


def test_every_protected_operation_declares_a_permission(api: TestClient) -> None:
    public = {"/health", "/metrics", "/crew/login"}
    undeclared = [
        f"{m} {p}"
        for m, p, perm in operations(_openapi(api))
        if perm is None and p not in public and not p.startswith("/open/")
    ]
    assert undeclared == []


def test_each_role_on_each_route_is_what_the_matrix_says(
    api: TestClient, settings: Settings, world: World
) -> None:
    a = world.a

    async def admin_key(conn: Any) -> str:
        return (await keys_store.create_key(conn, "admin", None, label="matrix")).key

    keys = {**a.keys, "admin": db(settings, admin_key)}
    checked = mismatches = 0
    for method, template, perm in operations(_openapi(api)):
        if perm is None:
            continue
        path, _ = _fill(template, a)
        if template == "/devices/{device_id}" and method == "DELETE":
            path = "/devices/no-such-device-anywhere"  # the answer, not the deed, is checked
        for role, key in keys.items():
            extra = _body(method, template)
            if template.startswith("/crew") and method == "POST":
                extra = {
                    "content": f"device_id={a.wc}",
                    "headers": {
                        **bearer(key),
                        "Content-Type": "application/x-www-form-urlencoded",
                    },
                }
            elif method in ("POST", "PUT") and not extra:
                extra = {"json": {}}
            headers = extra.pop("headers", bearer(key))
            r = api.request(method, path, headers=headers, **extra)
            checked += 1
            expected_forbidden = not may(role, perm)
            if (r.status_code == 403) != expected_forbidden or r.status_code == 401:
                mismatches += 1
                print(f"MISMATCH {role} {method} {path}: {r.status_code} {r.text[:160]}")
            if r.status_code == 403 and not path.startswith("/crew"):
                assert "may not" in r.text  # says why, names nothing of the data
    print(f"matrix: {checked} (role, route) calls, {mismatches} differ from docs/auth-matrix.md")
    assert checked > 100
    assert mismatches == 0


# -- mass assignment ----------------------------------------------------------------------------


def test_every_json_request_body_forbids_unknown_fields(api: TestClient) -> None:
    spec = _openapi(api)
    schemas = spec["components"]["schemas"]
    bodies = 0
    for item in spec["paths"].values():
        for op in item.values():
            content = op.get("requestBody", {}).get("content", {}).get("application/json")
            if not content:
                continue
            schema = content["schema"]
            refs = [schema] if "$ref" in schema else schema.get("anyOf", [])
            for s in refs:
                if "$ref" not in s:
                    continue
                name = s["$ref"].rsplit("/", 1)[1]
                bodies += 1
                assert schemas[name].get("additionalProperties") is False, name
    print(f"request bodies: {bodies}, each refusing unknown fields")
    assert bodies >= 6


@pytest.mark.parametrize(
    "extra",
    [
        {"tenant": "default"},
        {"created_at": "2020-01-01T00:00:00Z"},
        {"id": "renamed"},
        {"updated_at": "2020-01-01T00:00:00Z"},
        {"decommissioned_at": "2020-01-01T00:00:00Z"},
    ],
)
def test_patch_with_forbidden_fields_is_refused_and_changes_nothing(
    api: TestClient, settings: Settings, world: World, extra: dict[str, Any]
) -> None:
    a = world.a
    before = _snapshot(settings, a)
    r = api.patch(
        f"/devices/{a.wm}",
        json={"label": "changed", **extra},
        headers=bearer(a.keys["integrator"]),
    )
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["body", next(iter(extra))]
    assert _snapshot(settings, a) == before


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/devices", {"kind": "water_meter", "status": "decommissioned"}),
        ("/devices", {"kind": "water_meter", "created_at": "2020-01-01T00:00:00Z"}),
        ("/devices", {"kind": "water_meter", "tenant": "default"}),
    ],
)
def test_register_with_forbidden_fields_is_refused_and_creates_nothing(
    api: TestClient, settings: Settings, world: World, path: str, body: dict[str, Any]
) -> None:
    a = world.a
    dev_id = f"{a.id}-mass"
    r = api.post(path, json={"id": dev_id, **body}, headers=bearer(a.keys["integrator"]))
    assert r.status_code == 422, r.text

    async def exists(conn: Any) -> bool:
        return bool(
            await conn.fetchval("SELECT EXISTS (SELECT 1 FROM devices WHERE id = $1)", dev_id)
        )

    assert not db(settings, exists)


def test_admin_keys_and_tenants_refuse_unknown_fields(api: TestClient, world: World) -> None:
    r = api.post("/keys", json={"role": "viewer", "tenant": world.a.id, "key": "tk_chosen_x"})
    assert r.status_code == 422
    r = api.post("/tenants", json={"id": "x-unknown-field", "name": "X", "open_data": {}})
    assert r.status_code == 422
    assert all(t["id"] != "x-unknown-field" for t in api.get("/tenants").json())


# -- registration into a tenant --------------------------------------------------------------


def test_registration_goes_into_the_callers_tenant(
    api: TestClient, settings: Settings, world: World
) -> None:
    a, b = world.a, world.b
    key = bearer(a.keys["integrator"])
    r = api.post("/devices", json={"id": f"{a.id}-own", "kind": "water_meter"}, headers=key)
    assert r.status_code == 201, r.text
    assert r.json()["tenant"] == a.id
    r = api.post(
        "/devices",
        json={"id": f"{a.id}-into-b", "kind": "water_meter", "tenant": b.id},
        headers=key,
    )
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "tenant"]
    # An admin names any existing tenant; an unknown one is refused.
    r = api.post("/devices", json={"id": f"{a.id}-nowhere", "kind": "water_meter", "tenant": "zz"})
    assert r.status_code == 422
    assert "unknown tenant" in r.text


def test_taking_a_foreign_id_says_nothing_about_whose_it_is(
    api: TestClient, settings: Settings, world: World
) -> None:
    a, b = world.a, world.b
    key = bearer(a.keys["integrator"])
    before = _snapshot(settings, b)
    foreign = api.post("/devices", json={"id": b.wm, "kind": "water_meter"}, headers=key)
    own = api.post("/devices", json={"id": a.wm, "kind": "water_meter"}, headers=key)
    assert foreign.status_code == own.status_code == 409
    assert foreign.json()["detail"].replace(b.wm, "<id>") == own.json()["detail"].replace(
        a.wm, "<id>"
    )
    rows = [
        {"id": b.wm, "kind": "water_meter"},
        {"id": a.wm, "kind": "water_meter"},
        {"id": b.wc, "kind": "waste_column", "label": "taken over"},
    ]
    for ctype, content in (
        ("application/json", json.dumps(rows)),
        ("text/csv", "id,kind\n" + "\n".join(f"{x['id']},{x['kind']}" for x in rows) + "\n"),
    ):
        r = api.post("/devices/bulk", content=content, headers={**key, "Content-Type": ctype})
        assert r.status_code == 200, r.text
        report = r.json()
        assert report["created"] == 0
        messages = [e["message"] for e in report["errors"]]
        assert messages == [
            f"id {b.wm!r} is not available",
            f"id {a.wm!r} is not available",
            f"id {b.wc!r} is not available",
        ]
    assert _snapshot(settings, b) == before


# -- keys ------------------------------------------------------------------------------------


def test_revoked_and_expired_keys_are_refused_at_once(
    api: TestClient, settings: Settings, world: World
) -> None:
    r = api.post("/keys", json={"role": "viewer", "tenant": world.a.id, "label": "short-lived"})
    assert r.status_code == 201
    made = r.json()
    assert made["key"].startswith(f"tk_{made['prefix']}_")
    listed = api.get("/keys").text
    assert made["key"] not in listed and "sha256" not in listed
    assert api.get("/devices", headers=bearer(made["key"])).status_code == 200
    assert api.delete(f"/keys/{made['id']}").status_code == 200
    r = api.get("/devices", headers=bearer(made["key"]))
    assert r.status_code == 401
    assert r.json() == {"detail": "invalid key"}

    async def expired(conn: Any) -> str:
        past = datetime.now(UTC) - timedelta(seconds=1)
        return (await keys_store.create_key(conn, "viewer", world.a.id, expires_at=past)).key

    key = db(settings, expired)
    r = api.get("/devices", headers=bearer(key))
    assert r.status_code == 401
    assert r.json() == {"detail": "invalid key"}
    assert "Your crew key" in api.get("/crew", headers=bearer(key)).text  # the sign-in form
    print("revoked key: 401 on the next request; expired key: 401")


def test_key_creation_checks_role_and_tenant(api: TestClient, world: World) -> None:
    assert api.post("/keys", json={"role": "crew"}).status_code == 422
    assert api.post("/keys", json={"role": "crew", "tenant": "no-such-tenant"}).status_code == 422
    assert api.post("/keys", json={"role": "admin", "tenant": world.a.id}).status_code == 422
    past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    r = api.post("/keys", json={"role": "crew", "tenant": world.a.id, "expires_at": past})
    assert r.status_code == 422
    assert api.post("/tenants", json={"id": world.a.id, "name": "again"}).status_code == 409
    assert api.delete("/keys/key_nokeyyy").status_code == 404


# -- rollups keyed by name, not tenant --------------------------------------------------------


def test_a_district_sum_never_includes_a_foreign_meter(
    api: TestClient, settings: Settings, world: World
) -> None:
    a, b = world.a, world.b
    district = world.shared_district
    hour = datetime(2026, 3, 2, 10, tzinfo=UTC)
    r = api.post(
        "/devices",
        json={"id": f"{a.id}-wm-d", "kind": "water_meter", "attributes": {"district": district}},
        headers=bearer(a.keys["integrator"]),
    )
    assert r.status_code == 201, r.text
    r = api.post(
        "/devices",
        json={"id": f"{b.id}-wm-d", "kind": "water_meter", "attributes": {"district": district}},
        headers=bearer(b.keys["integrator"]),
    )
    assert r.status_code == 201, r.text

    async def seed(conn: Any) -> None:
        await conn.executemany(
            "INSERT INTO water_hourly (device_id, hour, district, volume_m3, estimated, measured) "
            "VALUES ($1, $2, $3, $4, false, true)",
            [(f"{a.id}-wm-d", hour, district, 0.010), (f"{b.id}-wm-d", hour, district, 0.500)],
        )
        await ws.refresh_district_hours(conn, {district: hour})

    db(settings, seed)
    params = {
        "group": district,
        "bucket": "hour",
        "start": hour.isoformat(),
        "end": (hour + timedelta(hours=1)).isoformat(),
    }
    mine = api.get("/water/consumption", params=params, headers=bearer(a.keys["viewer"]))
    theirs = api.get("/water/consumption", params=params, headers=bearer(b.keys["viewer"]))
    everyone = api.get("/water/consumption", params=params)
    got = [
        (x.json()["items"][0]["volume_m3"], x.json()["items"][0]["meters"])
        for x in (mine, theirs, everyone)
    ]
    print(f"district {district}: tenant a sees {got[0]}, tenant b {got[1]}, admin {got[2]}")
    assert got == [(0.01, 1), (0.5, 1), (0.51, 2)]


def test_a_zone_count_and_history_never_include_a_foreign_space(
    api: TestClient, settings: Settings, world: World
) -> None:
    a, b = world.a, world.b
    zone = world.shared_zone
    for t in (a, b):
        r = api.post(
            "/devices",
            json={"id": f"{t.id}-ps-z", "kind": "parking_sensor", "attributes": {"zone": zone}},
            headers=bearer(t.keys["integrator"]),
        )
        assert r.status_code == 201, r.text
    # a's space occupied, b's free, both since two hours ago (fresh for 6.5 h).
    since = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)

    async def seed(conn: Any) -> None:
        await conn.executemany(
            "INSERT INTO parking_sensor_readings (device_id, ts, received_at, occupied) "
            "VALUES ($1, $2, now(), $3)",
            [(f"{a.id}-ps-z", since, True), (f"{b.id}-ps-z", since, False)],
        )

    db(settings, seed)

    def counts(key: str | None) -> tuple[int, int, int]:
        headers = bearer(key) if key else {}
        items = api.get("/parking/zones", headers=headers).json()["items"]
        z = next(i for i in items if i["zone"] == zone)
        return z["total"], z["free"], z["occupied"]

    assert counts(a.keys["viewer"]) == (1, 0, 1)
    assert counts(b.keys["viewer"]) == (1, 1, 0)
    assert counts(None) == (2, 1, 1)
    # The history of the hour after `since`: a alone, its one space occupied all along.
    params = {
        "bucket": "1h",
        "start": since.isoformat(),
        "end": (since + timedelta(hours=1)).isoformat(),
    }
    r = api.get(f"/parking/zones/{zone}/occupancy", params=params, headers=bearer(a.keys["viewer"]))
    assert r.status_code == 200, r.text
    item = r.json()["items"][0]
    print(f"zone {zone}: tenant a counts (1 total, 0 free, 1 occupied); history {item}")
    assert (item["occupancy"], item["known_avg"], item["free_avg"]) == (1.0, 1.0, 0.0)


def test_a_stream_median_never_uses_a_foreign_column(
    api: TestClient, settings: Settings, world: World
) -> None:
    a, b = world.a, world.b
    cols = {}
    for t, rates in ((a, (10.0, 20.0, 30.0)), (b, (90.0,))):
        for n, rate in enumerate(rates):
            dev = f"{t.id}-wc-m{n}"
            r = api.post(
                "/devices",
                json={
                    "id": dev,
                    "kind": "waste_column",
                    "attributes": {"waste_stream": "paper"},
                },
                headers=bearer(t.keys["integrator"]),
            )
            assert r.status_code == 201, r.text
            cols[dev] = rate

    async def run(conn: Any) -> dict[tuple[str, str | None], float]:
        await conn.executemany(
            "INSERT INTO waste_column_state (device_id, last_reading_ts, own_rate, "
            "threshold_pct, cycle_points, reliability) VALUES ($1, now(), $2, 80, 3, 'high')",
            list(cols.items()),
        )
        return await wq.stream_medians(conn)

    medians = db(settings, run)
    got = (medians[(a.id, "paper")], medians[(b.id, "paper")])
    print(f"stream medians: tenant a {got[0]} (10, 20, 30), tenant b {got[1]} (90)")
    assert got == (20.0, 90.0)


# -- the crew page ----------------------------------------------------------------------------


def test_the_crew_page_shows_the_keys_tenant_only(
    api: TestClient, settings: Settings, world: World
) -> None:
    a, b = world.a, world.b
    for t in (a, b):

        async def seed(conn: Any, dev: str = t.wc) -> None:
            await conn.execute(
                "INSERT INTO waste_column_state (device_id, fill_pct, fill_ts, last_reading_ts, "
                "threshold_pct, cycle_points, reliability) "
                "VALUES ($1, 95, now(), now(), 80, 3, 'high') ON CONFLICT (device_id) DO NOTHING",
                dev,
            )

        db(settings, seed)
    page = api.get("/crew", headers=bearer(a.keys["crew"]))
    assert page.status_code == 200
    assert a.wc in page.text and b.wc not in page.text and f"round-{b.id}" not in page.text
    # Marking another tenant's column emptied is a missing column.
    r = api.post(
        "/crew/emptied",
        content=f"device_id={b.wc}",
        headers={**bearer(a.keys["crew"]), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 404
    r = api.post(
        "/crew/emptied",
        content=f"device_id={a.wc}",
        headers={**bearer(a.keys["viewer"]), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 403


def test_rejections_naming_no_tenants_device_are_for_an_admin(
    api: TestClient, settings: Settings, world: World
) -> None:
    topic = f"territory/unregistered-{world.a.id}/up"

    async def seed(conn: Any) -> int:
        return int(
            await conn.fetchval(
                "INSERT INTO rejected_messages (received_at, topic, device_id, reason, detail, "
                "payload, payload_size, payload_sha256) VALUES (now(), $1, NULL, "
                "'unknown_device', 'x', '\\x00', 1, $2) RETURNING id",
                topic,
                hashlib.sha256(b"\x00").digest(),
            )
        )

    rid = db(settings, seed)
    key = bearer(world.a.keys["viewer"])
    assert topic not in api.get("/rejected", headers=key, params={"limit": 1000}).text
    assert api.get(f"/rejected/{rid}/payload", headers=key).status_code == 404
    assert api.get(f"/rejected/{rid}/payload").status_code == 200
    own = api.get("/rejected", headers=key).json()["items"]
    assert [i["id"] for i in own] == [world.a.rejected_id]


def test_openapi_names_each_operations_permission(api: TestClient) -> None:
    spec = _openapi(api)
    op = spec["paths"]["/devices"]["post"]
    assert op[OPENAPI_KEY] == "device_write"
    assert ADMIN_KEY not in json.dumps(spec)


def test_a_route_without_a_permission_stops_the_app_from_starting() -> None:
    from fastapi import APIRouter, Depends
    from fastapi.routing import APIRoute

    from api.authz import declare_permissions, require, route_permission
    from api.deps import require_admin

    router = APIRouter()

    @router.get("/declared", dependencies=[require(Permission.READ)])
    def declared() -> None: ...

    @router.put("/admin-only", dependencies=[Depends(require_admin)])
    def admin_only() -> None: ...

    @router.get("/forgotten")
    def forgotten() -> None: ...

    perms = {r.path: route_permission(r) for r in router.routes if isinstance(r, APIRoute)}
    assert perms == {
        "/declared": Permission.READ,
        "/admin-only": Permission.ADMIN,
        "/forgotten": None,
    }
    with pytest.raises(RuntimeError, match="forgotten"):
        declare_permissions(router.routes, lambda path: False)
    declare_permissions(router.routes, lambda path: path == "/forgotten")
