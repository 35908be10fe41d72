"""The storage layer's own error hierarchy, and the transient/permanent split for writes.

A transient error (connection lost, server shutting down, deadlock, out of resources) means
"try the same batch again later": nothing is acknowledged meanwhile. Anything else is treated
as permanent so that one bad row can never block the stream: the batch is split and the
offending message is rejected with a reason instead.
"""

from __future__ import annotations

import asyncio

import asyncpg


class StorageError(Exception):
    """Base class for storage failures surfaced to the rest of the platform."""


class StorageUnavailable(StorageError):
    """The database cannot be reached or is refusing work right now (transient)."""


class DuplicateDevice(StorageError):
    pass


class KindNotMigrated(StorageUnavailable):
    """A declared device kind whose reading table is missing or lacks declared columns: its
    migration has not run (`territory migrate`). The ingest refuses to start on it; met later
    (a table dropped under a running ingest), it is handled as an outage: nothing is
    acknowledged, so nothing is lost, until the schema is back."""


# SQLSTATE classes (first two characters) that mean "retry later".
_TRANSIENT_CLASSES = {"08", "53", "57", "58", "40"}
# Class 57 includes 57014 query_canceled (statement timeout), which is also worth a retry.


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, StorageUnavailable):
        return True
    if isinstance(
        exc,
        OSError
        | asyncio.TimeoutError
        | asyncpg.exceptions.ConnectionDoesNotExistError
        | asyncpg.exceptions.InterfaceError,
    ):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        sqlstate = getattr(exc, "sqlstate", None) or ""
        return sqlstate[:2] in _TRANSIENT_CLASSES
    return False
