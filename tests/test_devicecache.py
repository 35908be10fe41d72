"""The ingest's device cache against the real registry: paged loading, updates, rebinding."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from devices.kinds import DeviceKind
from ingest import devicecache
from ingest.devicecache import DeviceCache
from territory.config import Settings

pytestmark = pytest.mark.integration


def _run(settings: Settings, body):  # type: ignore[no-untyped-def]
    async def main() -> object:
        conn = await asyncpg.connect(settings.database_url)
        try:
            return await body(conn)
        finally:
            await conn.close()

    return asyncio.run(main())


def test_refresh_reads_the_registry_in_pages_and_misses_no_device(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(devicecache, "_PAGE", 7)
    prefix = f"page-{uuid.uuid4().hex[:8]}"
    ids = [f"{prefix}-{i:02d}" for i in range(30)]

    async def body(conn: asyncpg.Connection) -> DeviceCache:
        # One transaction: all 30 share one updated_at, so pages split ties by id.
        await conn.executemany(
            "INSERT INTO devices (id, kind) VALUES ($1, $2)",
            [(i, "water_meter") for i in ids],
        )
        cache = DeviceCache(refresh_s=0.0)
        await cache.refresh_if_due(conn)
        await conn.execute(
            "UPDATE devices SET status = 'decommissioned', updated_at = now() WHERE id = $1",
            ids[3],
        )
        await cache.refresh_if_due(conn)
        return cache

    cache = _run(settings, body)
    found = [cache.get(i) for i in ids]
    assert all(d is not None for d in found)
    assert {d.kind for d in found if d} == {DeviceKind.WATER_METER}
    assert [i for i, d in zip(ids, found, strict=True) if d and not d.active] == [ids[3]]
