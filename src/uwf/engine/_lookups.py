"""A per-connection TTL cache for `lookup` steps (owner email → user id, queue name → id).

Lookups are the steps most often repeated with the same criteria, and their answers change
rarely. A lookup is cached when its step sets `cache_ttl_seconds`, or its connection sets
`lookup_cache_ttl_seconds` (the step wins; 0 turns caching off). The key is (metadata
version, connection, object, criteria), so a new metadata version starts afresh. Only lookups
that found something are kept: a record that is missing now may be created any minute.

The cache lives in the worker process (each worker has its own); an entry is used until it
expires, so a change in the CRM shows after at most the TTL.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from typing import Any

from uwf.metadata import ConnectionSpec, StepSpec

__all__ = ["LookupCache"]

CacheKey = tuple[int, str, str, str]


class LookupCache:
    """Lookup results by key until they expire; the oldest go first beyond `max_entries`."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self._entries: OrderedDict[CacheKey, tuple[float, float, Any]] = OrderedDict()
        self._max_entries = max_entries

    @staticmethod
    def key(
        version: int, connection: ConnectionSpec, step: StepSpec, inputs: dict[str, Any]
    ) -> CacheKey | None:
        """The step's cache key, or None when this lookup is not cached."""
        if step.type != "lookup" or _ttl(connection, step) <= 0:
            return None
        criteria = json.dumps(inputs.get("criteria"), sort_keys=True, default=str)
        return version, connection.name, step.object, criteria

    def get(self, key: CacheKey) -> Any:
        """The cached result, or None when there is none or it expired."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, _, result = entry
        if time.monotonic() >= expires:
            del self._entries[key]
            return None
        return result

    def put(self, key: CacheKey, connection: ConnectionSpec, step: StepSpec, result: Any) -> None:
        """Keep `result` for the step's TTL, unless it found nothing."""
        if result in (None, [], {}):
            return
        ttl = _ttl(connection, step)
        self._entries[key] = (time.monotonic() + ttl, ttl, result)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)


def _ttl(connection: ConnectionSpec, step: StepSpec) -> float:
    own = getattr(step, "cache_ttl_seconds", None)
    if own is not None:
        return float(own)
    return float(connection.lookup_cache_ttl_seconds)
