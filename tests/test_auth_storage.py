"""Tenants and API keys in storage, on real PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from storage.auth import create_key, create_tenant, list_tenants, revoke_key, split_key, verify_key
from storage.pool import connect
from storage.roles import ensure_reader_login
from territory.config import Settings

pytestmark = pytest.mark.integration


def test_key_format_is_checked_before_any_query() -> None:
    assert split_key("tk_abcd1234_s3cret") == "abcd1234"
    for bad in (
        "",
        "tk_",
        "tk_abcd1234",
        "tk_ABCD1234_x",
        "tk_abc_x",
        "xx_abcd1234_x",
        "tk_abcd1234_",
    ):
        assert split_key(bad) is None, bad


def test_keys_verify_until_revoked_or_expired(settings: Settings, uid: str) -> None:
    async def scenario() -> None:
        conn = await connect(settings.database_url)
        try:
            tenant = f"t-{uid}"
            assert await create_tenant(conn, tenant, "Pays Fouesnantais") is not None
            assert await create_tenant(conn, tenant, "again") is None
            assert tenant in [t.id for t in await list_tenants(conn)]
            new = await create_key(conn, "operator", tenant, label="water desk")
            assert new.key.startswith(f"tk_{new.record.prefix}_")
            ok = await verify_key(conn, new.key)
            assert ok is not None and ok.role == "operator" and ok.tenant == tenant
            # Right prefix, wrong secret; unknown prefix.
            assert (
                await verify_key(conn, new.key[:-1] + ("A" if new.key[-1] != "A" else "B")) is None
            )
            assert await verify_key(conn, "tk_zzzzzzzz_whatever") is None
            revoked = await revoke_key(conn, new.record.id)
            assert revoked is not None and revoked.revoked_at is not None
            assert await verify_key(conn, new.key) is None
            assert await revoke_key(conn, "key_nothere") is None

            past = datetime.now(UTC) - timedelta(seconds=1)
            expired = await create_key(conn, "viewer", tenant, expires_at=past)
            assert await verify_key(conn, expired.key) is None
            admin = await create_key(conn, "admin", None)
            assert (await verify_key(conn, admin.key)) is not None
            with pytest.raises(asyncpg.CheckViolationError):
                await create_key(conn, "crew", None)  # every role but admin has a tenant
            with pytest.raises(asyncpg.ForeignKeyViolationError):
                await create_key(conn, "crew", f"nowhere-{uid}")
        finally:
            await conn.close()

    asyncio.run(scenario())


def test_devices_default_to_the_default_tenant_and_readers_cannot_see_key_hashes(
    settings: Settings, uid: str
) -> None:
    async def scenario() -> None:
        conn = await connect(settings.database_url)
        try:
            await conn.execute(
                "INSERT INTO devices (id, kind) VALUES ($1, 'water_meter')", f"wm-{uid}"
            )
            tenant = await conn.fetchval("SELECT tenant FROM devices WHERE id = $1", f"wm-{uid}")
            assert tenant == "default"
            await ensure_reader_login(conn, "territory_reader_keys_test", "pw")
            assert not await conn.fetchval(
                "SELECT has_table_privilege('territory_reader_keys_test', 'api_keys', 'SELECT')"
            )
            assert await conn.fetchval(
                "SELECT has_table_privilege('territory_reader_keys_test', 'tenants', 'SELECT')"
            )
        finally:
            await conn.close()

    asyncio.run(scenario())
