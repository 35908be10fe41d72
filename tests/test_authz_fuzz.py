"""Property-based requests over the whole OpenAPI document, with valid keys (an admin's and a
tenant's): whatever the parameters and bodies, never a server error.

Requests are generated from each operation's own schema (path and query parameters, JSON
bodies), half valid by the schema, half arbitrary text, derandomized and bounded (a few
examples per operation, a few seconds in all)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.authz_matrix import METHODS
from territory.config import Settings
from tests.conftest import ADMIN_KEY

pytestmark = pytest.mark.integration

EXAMPLES = 15
COUNTS = {"requests": 0, "server_errors": 0}


def _spec() -> dict[str, Any]:
    from api.authz_matrix import app_openapi

    return app_openapi()


SPEC = _spec()
OPERATIONS = [
    (method, path)
    for path, item in sorted(SPEC["paths"].items())
    for method in METHODS
    if method in item
]


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = SPEC["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _json(schema: dict[str, Any], depth: int = 0) -> st.SearchStrategy[Any]:
    """Values the schema accepts (roughly), mixed with values of other shapes."""
    schema = _resolve(schema)
    wild: st.SearchStrategy[Any] = st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)
    )
    if depth > 3:
        return wild
    if "anyOf" in schema or "oneOf" in schema:
        options: list[dict[str, Any]] = schema.get("anyOf") or schema.get("oneOf") or []
        return st.one_of([_json(s, depth + 1) for s in options])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "const" in schema:
        return st.just(schema["const"])
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        required = set(schema.get("required", ()))
        return st.fixed_dictionaries(
            {k: _json(v, depth + 1) for k, v in props.items() if k in required},
            optional={k: _json(v, depth + 1) for k, v in props.items() if k not in required},
        ) | st.dictionaries(st.text(max_size=8), wild, max_size=3)
    if kind == "array":
        return st.lists(_json(schema.get("items", {}), depth + 1), max_size=3)
    if kind == "integer":
        lo, hi = schema.get("minimum"), schema.get("maximum")
        return st.integers(min_value=lo, max_value=hi) | st.integers()
    if kind == "number":
        return st.floats(allow_nan=False, allow_infinity=False) | st.integers()
    if kind == "boolean":
        return st.booleans()
    if kind == "string":
        fmt = schema.get("format")
        if fmt == "date-time":
            return st.datetimes(timezones=st.just(UTC)).map(datetime.isoformat) | st.text(
                max_size=30
            )
        if fmt == "date":
            return st.dates().map(lambda d: d.isoformat()) | st.text(max_size=12)
        if "pattern" in schema:
            return st.from_regex(schema["pattern"], fullmatch=True).filter(
                lambda s: len(s) <= schema.get("maxLength", 64)
            ) | st.text(max_size=20)
        return st.text(max_size=schema.get("maxLength", 40))
    return wild


def _param(p: dict[str, Any]) -> st.SearchStrategy[str]:
    return _json(p.get("schema", {})).map(lambda v: v if isinstance(v, str) else str(v).lower())


@st.composite
def _request(draw: st.DrawFn, method: str, path: str) -> dict[str, Any]:
    op = SPEC["paths"][path][method]
    url = path
    query: dict[str, str] = {}
    for p in op.get("parameters", []):
        if p["in"] == "path":
            value = draw(_param(p).filter(lambda v: v not in ("", ".", "..")))
            url = url.replace("{" + p["name"] + "}", quote(value, safe=""))
        elif p["in"] == "query" and (p.get("required") or draw(st.booleans())):
            query[p["name"]] = draw(_param(p))
    req: dict[str, Any] = {"method": method.upper(), "url": url, "params": query}
    content = op.get("requestBody", {}).get("content", {})
    if "application/json" in content:
        req["json"] = draw(_json(content["application/json"]["schema"]))
    elif content:
        req["content"] = draw(st.text(max_size=200)).encode()
        req["headers"] = {"Content-Type": next(iter(content))}
    return req


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    from api.app import create_app

    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c
    print(
        f"\nfuzz: {len(OPERATIONS)} operations, {COUNTS['requests']} requests, "
        f"{COUNTS['server_errors']} server errors"
    )


@pytest.fixture(scope="module")
def tenant_key(client: TestClient) -> str:
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    tid = f"fuzz-{datetime.now(UTC):%H%M%S%f}"
    assert (
        client.post("/tenants", json={"id": tid, "name": "fuzz"}, headers=admin).status_code == 201
    )
    r = client.post("/keys", json={"role": "integrator", "tenant": tid}, headers=admin)
    assert r.status_code == 201
    key: str = r.json()["key"]
    return key


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_no_server_error_on_any_operation(
    client: TestClient, tenant_key: str, method: str, path: str
) -> None:
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(req=_request(method, path), admin=st.booleans())
    def run(req: dict[str, Any], admin: bool) -> None:
        key = ADMIN_KEY if admin else tenant_key
        headers = {**req.pop("headers", {}), "Authorization": f"Bearer {key}"}
        r = client.request(**req, headers=headers)
        COUNTS["requests"] += 1
        if r.status_code >= 500 and r.status_code != 503:
            COUNTS["server_errors"] += 1
        assert r.status_code < 500 or r.status_code == 503, f"{req}: {r.status_code} {r.text}"

    run()
