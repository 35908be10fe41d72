"""The database side of ingest, as the pipeline sees it: the `Writer` protocol.

The pipeline decides what to write, when, and what to acknowledge; a writer stores what it is
handed and says how it failed. Two kinds of failure matter, and only two:

- `TransientWriteError`: try the same thing again later (connection lost, server shutting
  down, deadlock, out of resources). Nothing is acknowledged meanwhile; the writer has already
  dropped whatever connection failed.
- `PermanentWriteError`: the batch as it is can never be stored (a value the database
  refuses); the pipeline isolates the message responsible and stores it as rejected.

`PostgresWriter` is the real one (asyncpg, storage functions only). The fast tests
(tests/test_pipeline_core.py) drive the pipeline with a fake writer and a fake collector.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Protocol, TypeVar

import asyncpg

from ingest.devicecache import DeviceCache
from storage.deliveries import count_attempt, delivery_attempts, forget_stale_deliveries
from storage.errors import is_transient
from storage.pool import backend_identity, connect, terminate_backend
from storage.readings import (
    REJECTED_PAYLOAD_MAX_BYTES,
    WriteBatch,
    WriteResult,
    prepare_writer,
    write_batch,
)
from territory.config import DEFAULT_DB_COMMAND_TIMEOUT_S

log = logging.getLogger("territory.ingest")
T = TypeVar("T")


class WriteError(Exception):
    """A writer's failure; its `__cause__` is what the database or driver raised."""


class TransientWriteError(WriteError):
    """Retry later: nothing was stored."""


class PermanentWriteError(WriteError):
    """The batch as it is will never be stored: retrying cannot help."""


class Writer(Protocol):
    """What the pipeline needs from the database side."""

    async def open(self) -> None:
        """Ready to write (connections, housekeeping). Raises TransientWriteError."""

    async def write(self, batch: WriteBatch) -> WriteResult:
        """Store the batch in one transaction, all or nothing."""

    async def delivery_attempts(self, hashes: Sequence[bytes]) -> dict[bytes, int]:
        """Processing attempts counted so far for redelivered messages (storage.deliveries)."""

    async def count_attempt(self, hashes: Sequence[bytes], process: str) -> None:
        """Count one more attempt, committed before the messages are processed."""

    async def refresh_devices(self, cache: DeviceCache) -> None:
        """Bring the device cache up to date with the registry, when due."""

    async def lookup_devices(self, cache: DeviceCache, wanted: set[tuple[str, str]]) -> None:
        """Add (identity, key) pairs not in the cache to it, from the registry."""

    async def close(self) -> None: ...


class PostgresWriter:
    """Two connections: one for writes, one for registry reads (they run while a write does).

    Every failure is classified (storage.errors.is_transient) and the connection it came from
    dropped before it is raised again as a TransientWriteError or PermanentWriteError."""

    def __init__(
        self,
        database_url: str,
        *,
        command_timeout_s: float = DEFAULT_DB_COMMAND_TIMEOUT_S,
        rejected_payload_max_bytes: int = REJECTED_PAYLOAD_MAX_BYTES,
    ) -> None:
        self.database_url = database_url
        self.command_timeout_s = command_timeout_s
        self.rejected_payload_max_bytes = rejected_payload_max_bytes
        self._conn: asyncpg.Connection | None = None  # writes only
        self._lookup_conn: asyncpg.Connection | None = None  # registry reads while a write runs
        self._conn_backend: tuple[int, datetime] | None = None  # the writer's server session
        self._abandoned: tuple[int, datetime] | None = None  # one left behind by a timeout

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            conn = await connect(self.database_url, command_timeout=self.command_timeout_s)
            if self._abandoned is not None:
                # A write abandoned on a connection that went silent (timed out, no reset) may
                # still be open on the server, holding the locks of the rows this retry
                # writes again, until the server notices: end that session first.
                await terminate_backend(conn, *self._abandoned)
                self._abandoned = None
            await prepare_writer(conn)
            self._conn = conn
            self._conn_backend = await backend_identity(conn)
        return self._conn

    async def _lookup_connection(self) -> asyncpg.Connection:
        if self._lookup_conn is None or self._lookup_conn.is_closed():
            self._lookup_conn = await connect(
                self.database_url, command_timeout=self.command_timeout_s
            )
        return self._lookup_conn

    async def _drop_connection(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.terminate()
            # Closing our end does not always end the server's: see _connection.
            self._abandoned = self._conn_backend

    async def _drop_lookup_connection(self) -> None:
        if self._lookup_conn is not None:
            conn, self._lookup_conn = self._lookup_conn, None
            conn.terminate()

    async def _classified(
        self, attempt: Callable[[], Awaitable[T]], drop: Callable[[], Awaitable[None]]
    ) -> T:
        try:
            return await attempt()
        except Exception as exc:
            if is_transient(exc):
                await drop()
                raise TransientWriteError(f"{type(exc).__name__}: {exc}") from exc
            raise PermanentWriteError(f"{type(exc).__name__}: {exc}") from exc

    async def open(self) -> None:
        async def attempt() -> None:
            await forget_stale_deliveries(await self._connection())

        await self._classified(attempt, self._drop_connection)

    async def write(self, batch: WriteBatch) -> WriteResult:
        async def attempt() -> WriteResult:
            return await write_batch(
                await self._connection(),
                batch,
                rejected_payload_max_bytes=self.rejected_payload_max_bytes,
            )

        return await self._classified(attempt, self._drop_connection)

    async def delivery_attempts(self, hashes: Sequence[bytes]) -> dict[bytes, int]:
        async def attempt() -> dict[bytes, int]:
            return await delivery_attempts(await self._connection(), hashes)

        return await self._classified(attempt, self._drop_connection)

    async def count_attempt(self, hashes: Sequence[bytes], process: str) -> None:
        async def attempt() -> None:
            await count_attempt(await self._connection(), hashes, process)

        await self._classified(attempt, self._drop_connection)

    async def refresh_devices(self, cache: DeviceCache) -> None:
        async def attempt() -> None:
            await cache.refresh_if_due(await self._lookup_connection())

        await self._classified(attempt, self._drop_lookup_connection)

    async def lookup_devices(self, cache: DeviceCache, wanted: set[tuple[str, str]]) -> None:
        async def attempt() -> None:
            await cache.lookup_missing(await self._lookup_connection(), wanted)

        await self._classified(attempt, self._drop_lookup_connection)

    async def close(self) -> None:
        await self._drop_connection()
        await self._drop_lookup_connection()
