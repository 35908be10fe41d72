"""What the ingest path needs to know about registered devices, kept in memory.

Refreshed from the registry's `updated_at` so registrations, decommissions and attribute
changes reach the ingest within a couple of seconds; an id seen on the wire that is not in the
cache is looked up at once, so a device registered a moment ago is never refused.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from devices.kinds import DeviceKind
from storage.registry import DeviceRecord, devices_changed_since, get_devices

# Registry rows whose transaction committed after a later one started can carry an older
# updated_at; re-reading a short overlap catches them.
_OVERLAP = timedelta(seconds=30)


@dataclass(frozen=True, slots=True)
class KnownDevice:
    kind: DeviceKind
    active: bool
    attributes: dict[str, Any]


class DeviceCache:
    def __init__(self, refresh_s: float) -> None:
        self._known: dict[str, KnownDevice] = {}
        self._refresh_s = refresh_s
        self._last_refresh = 0.0
        self._high_water: datetime | None = None

    def get(self, device_id: str) -> KnownDevice | None:
        return self._known.get(device_id)

    def _absorb(self, records: Iterable[DeviceRecord]) -> None:
        for r in records:
            self._known[r.id] = KnownDevice(r.kind, r.active, r.attributes)
            if self._high_water is None or r.updated_at > self._high_water:
                self._high_water = r.updated_at

    async def lookup_missing(self, conn: asyncpg.Connection, ids: Iterable[str]) -> None:
        missing = {i for i in ids if i not in self._known}
        if missing:
            self._absorb(await get_devices(conn, sorted(missing)))

    async def refresh_if_due(self, conn: asyncpg.Connection) -> None:
        now = time.monotonic()
        if now - self._last_refresh < self._refresh_s:
            return
        self._last_refresh = now
        if self._high_water is None:
            since = datetime(1970, 1, 1).astimezone()
        else:
            since = self._high_water - _OVERLAP
        self._absorb(await devices_changed_since(conn, since))

    def __len__(self) -> int:
        return len(self._known)
