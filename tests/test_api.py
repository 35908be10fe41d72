"""The HTTP API against a real PostgreSQL: registry, validation, auth, errors."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

pytestmark = pytest.mark.integration


def register(api: TestClient, body: dict[str, object], expect: int = 201) -> dict[str, object]:
    r = api.post("/devices", json=body)
    assert r.status_code == expect, r.text
    return r.json()  # type: ignore[no-any-return]


def test_health_is_public_and_names_the_backend(api: TestClient) -> None:
    r = api.get("/health", headers={"Authorization": ""})
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok"
    assert body["storage"] in ("postgresql", "timescaledb")
    assert body["postgresql_version"].split(".")[0].isdigit()
    assert (body["storage"] == "timescaledb") == (body["timescaledb_version"] is not None)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/devices"),
        ("POST", "/devices"),
        ("GET", "/devices/x"),
        ("PATCH", "/devices/x"),
        ("DELETE", "/devices/x"),
        ("GET", "/devices/x/latest"),
        ("GET", "/devices/x/readings"),
        ("GET", "/devices/x/readings/aggregate"),
        ("GET", "/rejected"),
        ("GET", "/rejected/counts"),
    ],
)
def test_everything_but_health_requires_the_key(api: TestClient, method: str, path: str) -> None:
    r = api.request(method, path, headers={"Authorization": ""})
    assert r.status_code == 401
    assert "Bearer" in r.json()["detail"]
    r = api.request(method, path, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401
    assert r.json()["detail"] == "invalid key"


def test_register_get_update_decommission(api: TestClient, uid: str) -> None:
    dev_id = f"wc-{uid}"
    created = register(
        api,
        {
            "id": dev_id,
            "kind": "waste_column",
            "label": "Colonne verre, place Saint-Corentin",
            "location": {"lat": 47.9960, "lon": -4.1024},
            "group": f"round-{uid}",
            "attributes": {"depth_mm": 1800, "capacity_l": 4000, "waste_stream": "glass"},
        },
    )
    assert created["status"] == "active"
    assert created["attributes"] == {"depth_mm": 1800, "capacity_l": 4000, "waste_stream": "glass"}
    assert api.get(f"/devices/{dev_id}").json() == created

    r = api.patch(f"/devices/{dev_id}", json={"label": "moved", "attributes": {"capacity_l": None}})
    assert r.status_code == 200, r.text
    assert r.json()["label"] == "moved"
    assert r.json()["attributes"] == {"depth_mm": 1800, "waste_stream": "glass"}
    assert r.json()["location"] == {"lat": 47.996, "lon": -4.1024}

    r = api.delete(f"/devices/{dev_id}")
    assert r.status_code == 200
    assert r.json()["status"] == "decommissioned"
    assert r.json()["decommissioned_at"] is not None
    r = api.patch(f"/devices/{dev_id}", json={"status": "active"})
    assert r.json()["status"] == "active"
    assert r.json()["decommissioned_at"] is None


def test_duplicate_registration_is_409(api: TestClient, uid: str) -> None:
    body: dict[str, object] = {
        "id": f"pk-{uid}",
        "kind": "parking_sensor",
        "attributes": {"zone": "gare"},
    }
    register(api, body)
    r = api.post("/devices", json=body)
    assert r.status_code == 409
    assert f"pk-{uid}" in r.json()["detail"]


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"id": "bad id!", "kind": "water_meter"}, "id"),
        ({"id": "ok-1", "kind": "toaster"}, "kind"),
        ({"id": "ok-1", "kind": "waste_column", "attributes": {"depth_mm": -3}}, "depth_mm"),
        (
            {"id": "ok-1", "kind": "waste_column", "attributes": {"waste_stream": "gold"}},
            "waste_stream",
        ),
        ({"id": "ok-1", "kind": "water_meter", "attributes": {"zone": "x"}}, "zone"),
        ({"id": "ok-1", "kind": "water_meter", "location": {"lat": 95, "lon": 0}}, "lat"),
        ({"id": "ok-1", "kind": "water_meter", "colour": "blue"}, "colour"),
    ],
)
def test_invalid_registrations_are_422_with_location(
    api: TestClient, body: dict[str, object], where: str
) -> None:
    r = api.post("/devices", json=body)
    assert r.status_code == 422
    assert any(where in [str(p) for p in e["loc"]] for e in r.json()["detail"]), r.text


def test_malformed_json_body_is_422(api: TestClient) -> None:
    r = api.post("/devices", content=b"{nope", headers={"Content-Type": "application/json"})
    assert r.status_code == 422


def test_unknown_device_is_404_everywhere(api: TestClient, uid: str) -> None:
    for path in ("", "/latest", "/readings", "/readings/aggregate"):
        r = api.get(f"/devices/nobody-{uid}{path}")
        assert r.status_code == 404, path
        assert "not found" in r.json()["detail"]
    assert api.patch(f"/devices/nobody-{uid}", json={"label": "x"}).status_code == 404
    assert api.delete(f"/devices/nobody-{uid}").status_code == 404


def test_list_filters_and_paginates(api: TestClient, uid: str) -> None:
    group = f"district-{uid}"
    ids = [f"wm-{uid}-{i:02d}" for i in range(7)]
    for i in ids:
        register(
            api, {"id": i, "kind": "water_meter", "group": group, "attributes": {"district": group}}
        )
    register(api, {"id": f"pk-{uid}", "kind": "parking_sensor", "group": group})
    seen: list[str] = []
    cursor = None
    while True:
        params = {"kind": "water_meter", "group": group, "limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = api.get("/devices", params=params).json()
        seen += [d["id"] for d in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == ids
    api.delete(f"/devices/{ids[0]}")
    active = api.get("/devices", params={"group": group, "status": "active"}).json()["items"]
    assert {d["id"] for d in active} == {*ids[1:], f"pk-{uid}"}


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": "many"},
        {"status": "sleeping"},
        {"kind": "toaster"},
        {"cursor": "%%%"},
    ],
)
def test_bad_list_parameters_are_422(api: TestClient, params: dict[str, object]) -> None:
    r = api.get("/devices", params=params)
    assert r.status_code == 422, r.text


def test_bad_reading_queries_are_422(api: TestClient, uid: str) -> None:
    dev = f"wm-{uid}"
    register(api, {"id": dev, "kind": "water_meter"})
    for params in (
        {"start": "2026-01-01T00:00:00"},  # no offset
        {"start": "yesterday"},
        {"start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"},
        {"limit": 100_000},
        {"order": "sideways"},
        {"cursor": "bm90LWEtZGF0ZQ"},
    ):
        r = api.get(f"/devices/{dev}/readings", params=params)
        assert r.status_code == 422, (params, r.text)
    for params in (
        {"bucket": "7m"},
        {"bucket": "5m", "start": "2000-01-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"},
    ):
        r = api.get(f"/devices/{dev}/readings/aggregate", params=params)
        assert r.status_code == 422, (params, r.text)
        assert isinstance(r.json()["detail"], str)


def test_latest_is_null_before_the_first_reading(api: TestClient, uid: str) -> None:
    register(api, {"id": f"pk-{uid}", "kind": "parking_sensor"})
    body = api.get(f"/devices/pk-{uid}/latest").json()
    assert body == {"device_id": f"pk-{uid}", "kind": "parking_sensor", "reading": None}


def test_openapi_documents_every_route_with_examples(api: TestClient) -> None:
    spec = api.get("/openapi.json").json()
    paths = spec["paths"]
    for p in (
        "/devices",
        "/devices/{device_id}",
        "/devices/{device_id}/latest",
        "/devices/{device_id}/readings",
        "/devices/{device_id}/readings/aggregate",
        "/rejected",
        "/rejected/counts",
        "/health",
    ):
        assert p in paths
    create = spec["components"]["schemas"]["DeviceCreate"]
    assert create["examples"][0]["kind"] == "waste_column"


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("GET", "/rejected", {"params": {"reason": '"\x004Y'}}),
        ("GET", "/rejected", {"params": {"device_id": "a\x00b"}}),
        ("GET", "/devices", {"params": {"group": "a\x00b"}}),
        ("POST", "/devices", {"json": {"id": "nul-1", "kind": "water_meter", "label": "a\x00"}}),
        (
            "POST",
            "/devices",
            {"json": {"id": "nul-2", "kind": "water_meter", "attributes": {"district": "a\x00"}}},
        ),
    ],
)
def test_nul_bytes_are_bad_input_not_server_errors(
    api: TestClient, method: str, path: str, kwargs: dict[str, object]
) -> None:
    """PostgreSQL text cannot hold NUL: found by fuzzing the OpenAPI schema (schemathesis)."""
    r = api.request(method, path, **kwargs)  # type: ignore[arg-type]
    assert r.status_code == 422, r.text


def test_metrics_count_requests_by_route_template_without_a_key(api: TestClient) -> None:
    assert api.get("/devices/no-such-device-for-metrics").status_code == 404
    assert api.get("/devices", headers={"Authorization": "Bearer wrong-key"}).status_code == 401
    r = api.get("/metrics", headers={"Authorization": ""})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    # Labelled by the template, never the raw path (one series per device id otherwise);
    # a request refused before routing is counted too.
    count = "territory_api_request_seconds_count"
    assert f'{count}{{method="GET",route="/devices/{{device_id}}",status="404"}}' in r.text
    assert f'{count}{{method="GET",route="unmatched",status="401"}}' in r.text
    assert "no-such-device-for-metrics" not in r.text
