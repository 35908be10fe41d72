"""The public endpoints' protection: a short-lived answer cache and a per-client token bucket
(docs/open-data.md). Both live in the API process; `clock` is injectable for tests."""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Cached:
    body: bytes
    media_type: str
    etag: str
    last_modified: datetime
    expires: float  # on the cache's clock


def make_etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 weak comparison against an If-None-Match list (or `*`)."""
    if not if_none_match:
        return False
    for tag in if_none_match.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


class AnswerCache:
    """Answers keyed by (path, query string), each valid for `ttl_s`. Bounded: a client
    varying the query string evicts the oldest entries, never grows memory."""

    def __init__(
        self, ttl_s: float, max_entries: int = 512, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[tuple[str, str], Cached] = OrderedDict()

    def get(self, key: tuple[str, str]) -> Cached | None:
        entry = self._entries.get(key)
        if entry is None or entry.expires <= self.clock():
            return None  # an expired entry stays until replaced: see `put`
        return entry

    def put(
        self, key: tuple[str, str], body: bytes, media_type: str, last_modified: datetime
    ) -> Cached:
        etag = make_etag(body)
        previous = self._entries.get(key)
        if previous is not None and previous.etag == etag:
            # The same representation as before: it has not been modified since then.
            last_modified = previous.last_modified
        entry = Cached(body, media_type, etag, last_modified, self.clock() + self.ttl_s)
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return entry

    def clear(self) -> None:
        self._entries.clear()


class RateLimiter:
    """One token bucket per client: `burst` requests at once, refilled at `rate_per_s`."""

    def __init__(
        self,
        rate_per_s: float,
        burst: int,
        max_clients: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate_per_s
        self.burst = float(burst)
        self.max_clients = max_clients
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, at)

    def take(self, client: str) -> float:
        """0 when the request may go ahead, else the seconds until a token is back."""
        now = self.clock()
        tokens, at = self._buckets.get(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens >= 1.0:
            self._store(client, tokens - 1.0, now)
            return 0.0
        self._store(client, tokens, now)
        return (1.0 - tokens) / self.rate

    def _store(self, client: str, tokens: float, now: float) -> None:
        if client not in self._buckets and len(self._buckets) >= self.max_clients:
            # A full bucket carries no information: forget those first, then everyone.
            full = [
                c
                for c, (t, a) in self._buckets.items()
                if min(self.burst, t + (now - a) * self.rate) >= self.burst
            ]
            for c in full:
                del self._buckets[c]
            if len(self._buckets) >= self.max_clients:
                self._buckets.clear()
        self._buckets[client] = (tokens, now)


def retry_after(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))
