"""What the API refuses and how: the key before the body, size and JSON limits, bounded times,
capped rejected payloads and their retention, heavy reads that cannot starve /health, docs
served without a CDN. Against a real PostgreSQL (and, where it matters, a real uvicorn)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from api.app import create_app
from api.schemas import ReadingPage
from storage.readings import NewRejection, WriteBatch, purge_rejected, write_batch
from territory.config import Settings
from tests.conftest import ADMIN_KEY, Publisher, make_settings, wait_for

pytestmark = pytest.mark.integration

AUTH = [(b"authorization", f"Bearer {ADMIN_KEY}".encode())]
MB = 1024 * 1024
T = TypeVar("T")

# What the database driver or Python would put in an error text; none of it may reach a client.
DRIVER_TEXT = re.compile(r"asyncpg|query argument|\$\d|datetime\.datetime|Traceback|0x00|UTF8")
OFFSET = re.compile(r"(Z|[+-]\d\d:\d\d)$")


def db(settings: Settings, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    async def _run() -> T:
        conn = await asyncpg.connect(settings.database_url)
        try:
            return await fn(conn)
        finally:
            await conn.close()

    return asyncio.run(_run())


def register(api: TestClient, dev_id: str, kind: str = "water_meter") -> None:
    r = api.post("/devices", json={"id": dev_id, "kind": kind})
    assert r.status_code == 201, r.text


def assert_sentence(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and detail, r.text
    assert not DRIVER_TEXT.search(detail), detail
    return detail


# -- driving the ASGI app directly: how much of the body did it read? ---------------------------


def call_counting_body(
    api: TestClient,
    method: str,
    path: str,
    headers: list[tuple[bytes, bytes]],
    chunks: int,
    chunk_size: int = MB,
) -> tuple[int, dict[str, Any], int]:
    """Offer `chunks` chunks of `chunk_size` bytes to the app's `receive`, on its own event
    loop; returns the status, the JSON body and how many body bytes the app consumed."""
    consumed = 0

    async def run() -> tuple[int, bytes]:
        nonlocal consumed
        sent = 0
        status = 0
        body = bytearray()

        async def receive() -> dict[str, Any]:
            nonlocal consumed, sent
            if sent == chunks:
                return {"type": "http.request", "body": b"", "more_body": False}
            sent += 1
            consumed += chunk_size
            return {"type": "http.request", "body": b"[" * chunk_size, "more_body": True}

        async def send(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                body.extend(message.get("body", b""))

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"testserver"), *headers],
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
        }
        await api.app(scope, receive, send)
        return status, bytes(body)

    assert api.portal is not None
    status, body = api.portal.call(run)
    return status, json.loads(body), consumed


def test_no_key_is_401_before_a_64_mb_body_is_read(api: TestClient) -> None:
    for path in ("/devices/bulk", "/devices"):
        for auth in ([], [(b"authorization", b"Bearer wrong")]):
            headers = [(b"content-type", b"application/json"), *auth]
            status, body, consumed = call_counting_body(api, "POST", path, headers, chunks=64)
            assert status == 401, body
            assert "Bearer" in body["detail"] or body["detail"] == "invalid key"
            assert consumed == 0, f"{consumed} bytes read before refusing {path}"


def test_chunked_body_over_the_limit_is_413_once_the_limit_is_passed(api: TestClient) -> None:
    limit = Settings.model_fields["api_max_body_bytes"].default
    headers = [(b"content-type", b"application/json"), *AUTH]
    for path in ("/devices/bulk", "/devices"):
        status, body, consumed = call_counting_body(api, "POST", path, headers, chunks=64)
        assert status == 413, body
        assert str(limit) in body["detail"]
        assert consumed <= limit + MB, consumed


def test_declared_body_over_the_limit_is_413_with_a_sentence(api: TestClient) -> None:
    limit = Settings.model_fields["api_max_body_bytes"].default
    r = api.post(
        "/devices/bulk",
        content=b" " * (limit + 1),
        headers={"Content-Type": "application/json"},
    )
    assert_sentence(r, 413)


# -- a real server: answers come before the body is even sent -----------------------------------


class LiveServer:
    def __init__(self, settings: Settings) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        config = uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=self.port, log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveServer:
        self.thread.start()
        wait_for(lambda: self.server.started, timeout=20)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


def raw_head_only(port: int, head: str) -> tuple[int, str, dict[str, Any]]:
    """Send request headers announcing a body, never the body; read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(head.replace("\n", "\r\n").encode() + b"\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            assert chunk, "connection closed without an answer"
            data += chunk
        head_part, _, rest = data.partition(b"\r\n\r\n")
        length = int(re.search(rb"content-length: (\d+)", head_part, re.I).group(1))  # type: ignore[union-attr]
        while len(rest) < length:
            chunk = s.recv(65536)
            assert chunk
            rest += chunk
    status = int(head_part.split(b" ", 2)[1])
    return status, head_part.decode("latin-1").lower(), json.loads(rest)


@pytest.fixture(scope="module")
def live(migrated: tuple[str, str]) -> Iterator[LiveServer]:
    with LiveServer(make_settings(migrated, api_max_body_bytes=MB)) as server:
        yield server


def test_real_server_answers_401_and_413_without_waiting_for_the_body(live: LiveServer) -> None:
    status, head, body = raw_head_only(
        live.port,
        "POST /devices/bulk HTTP/1.1\nHost: x\nContent-Type: application/json\n"
        f"Content-Length: {64 * MB}\n",
    )
    assert status == 401
    assert "www-authenticate: bearer" in head
    assert body["detail"] == "missing credentials: send 'Authorization: Bearer <key>'"

    status, head, body = raw_head_only(
        live.port,
        "POST /devices/bulk HTTP/1.1\nHost: x\nContent-Type: application/json\n"
        f"Authorization: Bearer {ADMIN_KEY}\nContent-Length: {64 * MB}\n",
    )
    assert status == 413
    assert str(MB) in body["detail"]


# -- JSON limits ---------------------------------------------------------------------------------


def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/devices/bulk", deep(100_000)),
        ("/devices/bulk", deep(40)),
        (
            "/devices",
            '{"id": "d-1", "kind": "water_meter", "attributes": {"x": ' + deep(100_000) + "}}",
        ),
        ("/devices", '{"id": "d-1", "kind": "water_meter", "attributes": {"x": ' + deep(40) + "}}"),
        ("/devices/bulk", '[{"id": ' + "7" * 5000 + ', "kind": "water_meter"}]'),
        ("/devices", '{"id": ' + "7" * 5000 + ', "kind": "water_meter"}'),
        (
            "/devices",
            '{"id": "d-1", "kind": "water_meter", "attributes": {"d": 1' + "0" * 5000 + ".5}}",
        ),
        ("/devices", '{"id": "d-1", "kind": "water_meter", "attributes": {"district": NaN}}'),
        ("/devices/bulk", '[{"id": "d-1", "kind": "water_meter", "attributes": {"x": 1e999}}]'),
    ],
)
def test_json_beyond_the_limits_is_422_with_a_sentence(
    api: TestClient, path: str, body: str
) -> None:
    r = api.post(path, content=body.encode(), headers={"Content-Type": "application/json"})
    detail = assert_sentence(r, 422)
    assert "JSON" in detail or "number" in detail


def test_a_bulk_import_within_the_limits_still_works(api: TestClient, uid: str) -> None:
    body = [{"id": f"wm-{uid}", "kind": "water_meter", "attributes": {"district": "nord"}}]
    r = api.post("/devices/bulk", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["created_ids"] == [f"wm-{uid}"]


# -- times in queries and in answers -------------------------------------------------------------


def test_out_of_range_query_times_are_422(api: TestClient, uid: str) -> None:
    dev = f"wm-{uid}"
    register(api, dev)
    for path, params in [
        (f"/devices/{dev}/readings/aggregate", {"end": "0001-01-01T00:30:00Z"}),
        (f"/devices/{dev}/readings/aggregate", {"start": "9999-12-31T23:00:00-05:00"}),
        (f"/devices/{dev}/readings", {"start": "0001-01-01T00:00:00+01:00"}),
        (f"/devices/{dev}/readings", {"end": "infinity"}),
        (f"/devices/{dev}/readings", {"end": "-infinity"}),
        ("/rejected", {"since": "0001-01-01T00:00:00+01:00"}),
        ("/rejected/counts", {"since": "9999-12-31T23:59:59-01:00"}),
    ]:
        r = api.get(path, params=params)
        assert r.status_code == 422, (path, params, r.text)
        assert not DRIVER_TEXT.search(r.text), r.text
    # A cursor is checked the same way: a year-1 time with an offset cannot reach the driver.
    bad = base64.urlsafe_b64encode(b"0001-01-01T00:00:00+01:00").decode().rstrip("=")
    assert_sentence(api.get(f"/devices/{dev}/readings", params={"cursor": bad}), 422)


def test_every_time_has_an_offset_and_every_cursor_is_accepted_back(
    api: TestClient, settings: Settings, uid: str
) -> None:
    dev = f"wm-{uid}"
    register(api, dev)
    stored = ["-infinity", "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", "infinity"]
    if api.get("/health").json()["storage"] == "timescaledb":
        # A hypertable refuses infinite times; the extremes a query may name stand in.
        stored = ["1900-01-01T00:00:00Z", *stored[1:3], "3000-01-01T00:00:00Z"]

    async def insert(conn: asyncpg.Connection) -> None:
        await conn.executemany(
            "INSERT INTO water_meter_readings (device_id, ts, received_at, index_m3) "
            "VALUES ($1, $2::text::timestamptz, now(), $3)",
            [(dev, ts, float(i)) for i, ts in enumerate(stored)],
        )

    db(settings, insert)
    for order, expected in (("asc", [0.0, 1.0, 2.0, 3.0]), ("desc", [3.0, 2.0, 1.0, 0.0])):
        seen: list[float] = []
        cursor = None
        for _ in range(10):
            params: dict[str, Any] = {"limit": 1, "order": order}
            if cursor:
                params["cursor"] = cursor
            r = api.get(f"/devices/{dev}/readings", params=params)
            assert r.status_code == 200, (order, cursor, r.text)
            for item in r.json()["items"]:
                assert OFFSET.search(item["ts"]), item
                assert OFFSET.search(item["received_at"]), item
                seen.append(item["values"]["index_m3"])
            cursor = r.json()["next_cursor"]
            if not cursor:
                break
        assert seen == expected, order
    latest = api.get(f"/devices/{dev}/latest").json()["reading"]
    assert latest["values"]["index_m3"] == 3.0
    assert OFFSET.search(latest["ts"]), latest
    device = api.get(f"/devices/{dev}").json()
    assert OFFSET.search(device["created_at"]) and OFFSET.search(device["updated_at"])


def test_readings_match_their_schema(api: TestClient, settings: Settings, uid: str) -> None:
    """The readings page is written without the response model; it must read back through
    it unchanged."""
    wm, pk = f"wm-{uid}", f"pk-{uid}"
    register(api, wm)
    register(api, pk, "parking_sensor")

    async def insert(conn: asyncpg.Connection) -> None:
        await conn.execute(
            "INSERT INTO water_meter_readings (device_id, ts, received_at, index_m3, flow_m3h, "
            "alarms, battery_v, rssi_dbm, snr_db, frame_counter, gateway_id) VALUES "
            "($1, '2026-03-01T10:00:00+01:00', '2026-03-01T09:00:02.5Z', 1234.567, 0.25, "
            "'{leak,backflow}', 3.61, -101.5, 7.25, 4242, 'gw-1'), "
            "($1, '2026-03-01T11:00:00Z', '2026-03-01T11:00:01Z', 1234.6, NULL, '{}', NULL, "
            "NULL, NULL, NULL, NULL)",
            wm,
        )
        await conn.execute(
            "INSERT INTO parking_sensor_readings (device_id, ts, received_at, occupied) "
            "VALUES ($1, '2026-03-01T10:00:00Z', '2026-03-01T10:00:00.000001Z', true)",
            pk,
        )

    db(settings, insert)
    for dev in (wm, pk):
        body = api.get(f"/devices/{dev}/readings", params={"order": "desc"}).json()
        assert body == ReadingPage.model_validate(body).model_dump(mode="json")
    items = api.get(f"/devices/{wm}/readings", params={"limit": 1}).json()
    assert items["items"][0]["ts"] == "2026-03-01T09:00:00Z"
    assert items["items"][0]["values"]["alarms"] == ["leak", "backflow"]
    assert items["items"][0]["radio"] == {
        "rssi_dbm": -101.5,
        "snr_db": 7.25,
        "frame_counter": 4242,
        "gateway_id": "gw-1",
    }
    assert items["next_cursor"]
    parking = api.get(f"/devices/{pk}/readings").json()["items"][0]
    assert parking["received_at"] == "2026-03-01T10:00:00.000001Z"
    assert parking["values"]["occupied"] is True
    assert parking["radio"] is None


def test_readings_pages_are_bounded(api: TestClient, uid: str) -> None:
    dev = f"wm-{uid}"
    register(api, dev)
    assert api.get(f"/devices/{dev}/readings", params={"limit": 5000}).status_code == 200
    assert api.get(f"/devices/{dev}/readings", params={"limit": 5001}).status_code == 422


def test_database_refusals_are_sentences_without_driver_text(api: TestClient) -> None:
    # NUL cannot be stored in PostgreSQL text: the driver's error names it, the answer does not.
    detail = assert_sentence(api.get("/devices", params={"group": "a\x00b"}), 422)
    assert "NUL" in detail


# -- rejected messages ---------------------------------------------------------------------------


def reject(
    settings: Settings,
    dev: str,
    payloads: list[bytes],
    received_at: datetime | None = None,
    **options: int,
) -> None:
    when = received_at or datetime.now(UTC)
    rows = [
        NewRejection(when, f"devices/{dev}/telemetry", dev, "malformed_json", "test", p)
        for p in payloads
    ]
    db(settings, lambda conn: write_batch(conn, WriteBatch(rejections=rows), **options))


def test_rejected_list_is_small_with_previews_and_payload_returns_the_bytes(
    api: TestClient, settings: Settings, uid: str
) -> None:
    dev = f"wm-{uid}"
    big = [bytes([i]) * 1000 + os.urandom(59_000) for i in range(30)]
    small = b'\x00\xff{"index_m3": 12'
    reject(settings, dev, [*big, small])
    r = api.get("/rejected", params={"device_id": dev, "limit": 1000})
    assert r.status_code == 200
    assert len(r.content) < 100_000, len(r.content)  # the payloads hold 1.8 MB
    items = r.json()["items"]
    assert len(items) == 31
    newest = items[0]
    assert newest["payload_size"] == len(small)
    assert newest["payload_preview"] == '\x00\ufffd{"index_m3": 12'
    assert base64.b64decode(newest["payload_preview_base64"]) == small
    assert newest["payload_preview_truncated"] is False
    assert newest["payload_truncated"] is False
    assert newest["payload_sha256"] == hashlib.sha256(small).hexdigest()
    got = api.get(f"/rejected/{newest['id']}/payload")
    assert got.status_code == 200
    assert got.headers["content-type"] == "application/octet-stream"
    assert got.content == small
    by_size = {len(p): p for p in big}
    for item in items[1:]:
        payload = by_size.pop(item["payload_size"], None) or next(
            p for p in big if hashlib.sha256(p).hexdigest() == item["payload_sha256"]
        )
        assert base64.b64decode(item["payload_preview_base64"]) == payload[:256]
        assert item["payload_preview_truncated"] is True
        assert api.get(f"/rejected/{item['id']}/payload").content == payload
    assert_sentence(api.get("/rejected/999999999999/payload"), 404)
    assert api.get("/rejected/0/payload").status_code == 422
    assert api.get("/rejected/99999999999999999999999/payload").status_code == 422


def test_stored_payloads_are_capped_with_size_and_hash(
    api: TestClient, settings: Settings, uid: str
) -> None:
    dev = f"wm-{uid}"
    payload = os.urandom(200_000)
    reject(settings, dev, [payload])
    reject(settings, f"{dev}-b", [payload], rejected_payload_max_bytes=1000)
    cap = Settings.model_fields["rejected_payload_max_bytes"].default
    for device, stored_len in ((dev, cap), (f"{dev}-b", 1000)):
        item = api.get("/rejected", params={"device_id": device}).json()["items"][0]
        assert item["payload_size"] == 200_000
        assert item["payload_truncated"] is True
        assert item["payload_sha256"] == hashlib.sha256(payload).hexdigest()
        got = api.get(f"/rejected/{item['id']}/payload")
        assert got.content == payload[:stored_len]
        assert got.headers["x-payload-truncated"] == "true"
        assert got.headers["x-payload-size"] == "200000"
        assert got.headers["x-payload-sha256"] == hashlib.sha256(payload).hexdigest()


def test_the_ingest_caps_what_it_stores(
    api: TestClient, ingest: object, publisher: Publisher, uid: str
) -> None:
    dev = f"wm-{uid}"
    register(api, dev)
    payload = b"{" + b"x" * 150_000
    publisher.publish(f"devices/{dev}/telemetry", payload)
    items = wait_for(lambda: api.get("/rejected", params={"device_id": dev}).json()["items"])
    assert items[0]["reason"] == "malformed_json"
    assert items[0]["payload_size"] == len(payload)
    assert items[0]["payload_truncated"] is True
    stored = api.get(f"/rejected/{items[0]['id']}/payload").content
    assert stored == payload[: Settings.model_fields["rejected_payload_max_bytes"].default]


def count_for(settings: Settings, devices: list[str]) -> dict[str, int]:
    async def q(conn: asyncpg.Connection) -> dict[str, int]:
        rows = await conn.fetch(
            "SELECT device_id, count(*) AS n FROM rejected_messages "
            "WHERE device_id = ANY($1) GROUP BY 1",
            devices,
        )
        return {r["device_id"]: r["n"] for r in rows}

    return db(settings, q)


def test_purge_deletes_only_rows_past_the_retention(settings: Settings, uid: str) -> None:
    now = datetime.now(UTC)
    old, recent = f"old-{uid}", f"recent-{uid}"
    reject(settings, old, [b"a"] * 5, received_at=now - timedelta(days=40))
    reject(settings, recent, [b"b"] * 2, received_at=now - timedelta(days=29))
    deleted = db(
        settings,
        lambda conn: purge_rejected(conn, now - timedelta(days=30), batch_size=2),
    )
    assert deleted >= 5
    assert count_for(settings, [old, recent]) == {recent: 2}


def test_the_api_purges_on_start_with_its_retention(migrated: tuple[str, str], uid: str) -> None:
    settings = make_settings(migrated, rejected_retention_days=1)
    now = datetime.now(UTC)
    old, recent = f"old-{uid}", f"recent-{uid}"
    reject(settings, old, [b"a"], received_at=now - timedelta(days=2))
    reject(settings, recent, [b"b"], received_at=now - timedelta(hours=20))
    with TestClient(create_app(settings)):
        wait_for(lambda: old not in count_for(settings, [old, recent]))
    assert count_for(settings, [old, recent]) == {recent: 1}


# -- heavy reads ---------------------------------------------------------------------------------


def hold_table_lock(
    settings: Settings, table: str, locked: threading.Event, release: threading.Event
) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(settings.database_url)
        try:
            async with conn.transaction():
                await conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
                locked.set()
                await asyncio.to_thread(release.wait, 30)
        finally:
            await conn.close()

    asyncio.run(run())


def test_slow_query_is_503_and_health_does_not_queue_behind_it(
    migrated: tuple[str, str], uid: str
) -> None:
    settings = make_settings(
        migrated, api_pool_size=1, api_heavy_concurrency=1, api_statement_timeout_s=1.5
    )
    dev = f"pk-{uid}"
    locked, release = threading.Event(), threading.Event()
    with LiveServer(settings) as server:
        http = httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30
        )
        assert http.post("/devices", json={"id": dev, "kind": "parking_sensor"}).status_code == 201
        holder = threading.Thread(
            target=hold_table_lock, args=(settings, "parking_sensor_readings", locked, release)
        )
        holder.start()
        try:
            assert locked.wait(10)
            results: list[httpx.Response] = []
            reader = threading.Thread(
                target=lambda: results.append(http.get(f"/devices/{dev}/readings"))
            )
            reader.start()
            time.sleep(0.3)  # the read now holds the API's only pooled connection
            t0 = time.perf_counter()
            health = http.get("/health", headers={"Authorization": ""})
            elapsed = time.perf_counter() - t0
            assert health.status_code == 200 and health.json()["status"] == "ok"
            assert elapsed < 1.0, elapsed  # queued behind the read, it would take 1.5 s
            reader.join(20)
        finally:
            release.set()
            holder.join(20)
        detail = assert_sentence(results[0], 503)
        assert "took longer than 1.5 s" in detail
        assert results[0].headers["retry-after"]
        http.close()


def test_large_reads_beyond_the_slots_get_503_instead_of_queueing(
    migrated: tuple[str, str], uid: str
) -> None:
    settings = make_settings(
        migrated, api_heavy_concurrency=1, api_heavy_wait_s=0.3, api_statement_timeout_s=5
    )
    dev = f"pk-{uid}"
    locked, release = threading.Event(), threading.Event()
    with LiveServer(settings) as server:
        http = httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30
        )
        assert http.post("/devices", json={"id": dev, "kind": "parking_sensor"}).status_code == 201
        holder = threading.Thread(
            target=hold_table_lock, args=(settings, "parking_sensor_readings", locked, release)
        )
        holder.start()
        first: list[httpx.Response] = []
        try:
            assert locked.wait(10)
            reader = threading.Thread(
                target=lambda: first.append(http.get(f"/devices/{dev}/readings"))
            )
            reader.start()
            time.sleep(0.3)  # the first read holds the only slot, blocked by the lock
            t0 = time.perf_counter()
            second = http.get(f"/devices/{dev}/readings/aggregate")
            waited = time.perf_counter() - t0
            detail = assert_sentence(second, 503)
            assert "too many large reads" in detail
            assert second.headers["retry-after"]
            assert waited < 3, waited
        finally:
            release.set()
            holder.join(20)
            reader.join(20)
        assert first[0].status_code == 200, first[0].text  # served once the lock went
        http.close()


# -- documentation -------------------------------------------------------------------------------


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [v for k, v in attrs if k in ("src", "href", "spec-url") and v]


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_load_everything_from_the_api_itself(api: TestClient, page: str) -> None:
    r = api.get(page, headers={"Authorization": ""})
    assert r.status_code == 200
    assert "http://" not in r.text and "https://" not in r.text and "//cdn" not in r.text
    refs = _Refs()
    refs.feed(r.text)
    assert len(refs.urls) >= 2, refs.urls
    for url in refs.urls:
        assert url.startswith("/") and not url.startswith("//"), url
        asset = api.get(url, headers={"Authorization": ""})
        assert asset.status_code == 200, url
        assert asset.content, url
    if page == "/docs":
        assert '"validatorUrl": null' in r.text


def test_openapi_documents_limits_and_the_payload_route(api: TestClient) -> None:
    spec = api.get("/openapi.json", headers={"Authorization": ""}).json()
    payload = spec["paths"]["/rejected/{rejected_id}/payload"]["get"]
    assert "application/octet-stream" in payload["responses"]["200"]["content"]
    assert "404" in payload["responses"]
    for path, method in (
        ("/devices/bulk", "post"),
        ("/devices", "post"),
        ("/devices/{device_id}/readings", "get"),
    ):
        responses = spec["paths"][path][method]["responses"]
        assert {"401", "413", "422", "503"} <= set(responses), (path, sorted(responses))
