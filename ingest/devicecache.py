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

from devices.identity import VALIDATORS
from devices.kinds import DeviceKind
from storage.registry import DeviceRecord, devices_changed_since, get_devices

# Registry rows whose transaction committed after a later one started can carry an older
# updated_at; re-reading a short overlap catches them.
_OVERLAP = timedelta(seconds=30)
_PAGE = 5000


@dataclass(frozen=True, slots=True)
class KnownDevice:
    id: str
    kind: DeviceKind
    active: bool
    attributes: dict[str, Any]
    decoder: str | None
    dev_eui: str | None
    wmbus_id: str | None


class DeviceCache:
    """Devices by id, DevEUI and wM-Bus id (the identities the sources deliver)."""

    def __init__(self, refresh_s: float) -> None:
        self._by: dict[str, dict[str, KnownDevice]] = {"id": {}, "dev_eui": {}, "wmbus_id": {}}
        self._refresh_s = refresh_s
        self._last_refresh = 0.0
        self._high_water: datetime | None = None

    def get(self, device_id: str, identity: str = "id") -> KnownDevice | None:
        return self._by[identity].get(device_id)

    def put(self, device: KnownDevice) -> None:
        """Know a device without asking the registry (tests, tools)."""
        self._by["id"][device.id] = device
        if device.dev_eui:
            self._by["dev_eui"][device.dev_eui] = device
        if device.wmbus_id:
            self._by["wmbus_id"][device.wmbus_id] = device

    def _absorb(self, records: Iterable[DeviceRecord]) -> None:
        for r in records:
            old = self._by["id"].get(r.id)
            if old is not None:  # a rebinding must not leave the old radio identity behind
                if old.dev_eui:
                    self._by["dev_eui"].pop(old.dev_eui, None)
                if old.wmbus_id:
                    self._by["wmbus_id"].pop(old.wmbus_id, None)
            known = KnownDevice(
                r.id, r.kind, r.active, r.attributes, r.decoder, r.dev_eui, r.wmbus_id
            )
            self._by["id"][r.id] = known
            if r.dev_eui:
                self._by["dev_eui"][r.dev_eui] = known
            if r.wmbus_id:
                self._by["wmbus_id"][r.wmbus_id] = known
            if self._high_water is None or r.updated_at > self._high_water:
                self._high_water = r.updated_at

    async def lookup_missing(
        self, conn: asyncpg.Connection, wanted: Iterable[tuple[str, str]]
    ) -> None:
        """Look up (identity, key) pairs not in the cache, in one query."""
        missing: dict[str, set[str]] = {"id": set(), "dev_eui": set(), "wmbus_id": set()}
        for identity, key in wanted:
            # A key no registered device can have is not looked up: it could only make the
            # query fail (a NUL character) for the whole batch.
            if key not in self._by[identity] and VALIDATORS[identity](key):
                missing[identity].add(key)
        if any(missing.values()):
            self._absorb(
                await get_devices(
                    conn,
                    sorted(missing["id"]),
                    dev_euis=sorted(missing["dev_eui"]),
                    wmbus_ids=sorted(missing["wmbus_id"]),
                )
            )

    async def refresh_if_due(self, conn: asyncpg.Connection) -> None:
        now = time.monotonic()
        if now - self._last_refresh < self._refresh_s:
            return
        self._last_refresh = now
        if self._high_water is None:
            since = datetime(1970, 1, 1).astimezone()
        else:
            since = self._high_water - _OVERLAP
        # In pages: a registry of 100k devices read at once left ~65 MB of freed rows in the
        # process's heap for good (Python keeps its arenas); the cache itself is ~13 MB.
        after: tuple[datetime, str] | None = None
        while True:
            page = await devices_changed_since(conn, since, after=after, limit=_PAGE)
            self._absorb(page)
            if len(page) < _PAGE:
                return
            after = (page[-1].updated_at, page[-1].id)

    def __len__(self) -> int:
        return len(self._by["id"])
