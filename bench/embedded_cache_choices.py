"""The platform's ASGI application with another response cache in place of the embedded
default's shared SQLite file, for ``bench/embedded_cache.py``: the choices the embedded default
could have made, run on this tree so that only the cache differs. ``BENCH_RESPONSE_CACHE``
names the choice:

- ``in-process``: a bounded LRU with TTLs in the web process, as the embedded default had before
  its cache was shared (``git show 3ce1ca8^:gateway/cache.py``); another process (the worker
  carrying out an erasure) cannot reach it.
- ``django-file``: Django's file-based cache (``FileBasedCache``), a file per key under
  ``BENCH_RESPONSE_CACHE_DIR``: the three namespace counters and the entry are four files.

Only the response cache is replaced; the routing counter stays in the SQLite file. Started by
uvicorn as ``embedded_cache_choices:application`` from a folder holding a copy of this file.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import OrderedDict

from django.core.cache.backends.filebased import FileBasedCache

from gateway import cache
from gateway.cache import CachedAnswer, CacheKey
from llmplatform.asgi import application  # sets Django up

__all__ = ["application"]


class InProcessResponseCache:
    """The embedded default's cache before 3ce1ca8: one process, bounded LRU with TTLs."""

    MAX_ENTRIES = 10_000

    def __init__(self) -> None:
        self._entries: OrderedDict[str, tuple[float, CachedAnswer]] = OrderedDict()
        self._namespaces: dict[str, int] = {}
        self._subjects: dict[str, set[str]] = {}

    def _namespace(self, key: CacheKey) -> str:
        return ".".join(str(self._namespaces.get(k, 0)) for k in key.ns_keys)

    async def lookup(self, key: CacheKey) -> tuple[str, CachedAnswer | None]:
        namespace = self._namespace(key)
        entry_key = key.entry_key(namespace)
        found = self._entries.get(entry_key)
        if found is None:
            return namespace, None
        expires, answer = found
        if expires < time.monotonic():
            self._entries.pop(entry_key, None)
            return namespace, None
        self._entries.move_to_end(entry_key)
        return namespace, answer

    async def namespace(self, key: CacheKey) -> str:
        return self._namespace(key)

    async def store(self, key: CacheKey, namespace: str, answer: CachedAnswer, ttl: int) -> None:
        self.store_later(key, namespace, answer, ttl)

    def store_later(self, key: CacheKey, namespace: str, answer: CachedAnswer, ttl: int) -> None:
        entry_key = key.entry_key(namespace)
        self._entries[entry_key] = (time.monotonic() + ttl, answer)
        self._entries.move_to_end(entry_key)
        if key.subject_key:
            self._subjects.setdefault(key.subject_key, set()).add(entry_key)
        while len(self._entries) > self.MAX_ENTRIES:
            self._entries.popitem(last=False)

    def bump(self, ns_key: str) -> None:
        self._namespaces[ns_key] = self._namespaces.get(ns_key, 0) + 1

    def purge_subject(self, tenant_id: int, subject: str) -> int:
        removed = 0
        for entry_key in self._subjects.pop(cache.subject_index_key(tenant_id, subject), set()):
            if self._entries.pop(entry_key, None) is not None:
                removed += 1
        return removed


class DjangoFileResponseCache:
    """Django's file-based cache as the shared response cache. Copies nobody waits for are
    gathered for 20 ms and written together, as the SQLite file's are. Its subject index is a
    list read and written back (Django's cache has no set to add to), so two processes storing
    for one subject at once can lose an entry from it: one reason it was not chosen."""

    DELAY_MS = 20

    def __init__(self, location: str) -> None:
        self._cache = FileBasedCache(location, {"OPTIONS": {"MAX_ENTRIES": 10_000}})
        self._pending: list[tuple[CacheKey, str, bytes, int]] = []
        self._flush_loop: asyncio.AbstractEventLoop | None = None

    def _namespace(self, key: CacheKey) -> str:
        counters = self._cache.get_many(key.ns_keys)
        return ".".join(str(counters.get(name, 0)) for name in key.ns_keys)

    async def lookup(self, key: CacheKey) -> tuple[str, CachedAnswer | None]:
        namespace = self._namespace(key)
        raw = self._cache.get(key.entry_key(namespace))
        return namespace, (cache._decode(raw) if raw is not None else None)

    async def namespace(self, key: CacheKey) -> str:
        return self._namespace(key)

    async def store(self, key: CacheKey, namespace: str, answer: CachedAnswer, ttl: int) -> None:
        self._write([(key, namespace, cache._encode(answer), ttl)])

    def store_later(self, key: CacheKey, namespace: str, answer: CachedAnswer, ttl: int) -> None:
        self._pending.append((key, namespace, cache._encode(answer), ttl))
        loop = asyncio.get_running_loop()
        if self._flush_loop is not loop:
            self._flush_loop = loop
            loop.call_later(self.DELAY_MS / 1000, self.flush)

    def flush(self) -> None:
        self._flush_loop = None
        rows, self._pending = self._pending, []
        self._write(rows)

    def _write(self, rows: list[tuple[CacheKey, str, bytes, int]]) -> None:
        for key, namespace, raw, ttl in rows:
            entry_key = key.entry_key(namespace)
            self._cache.set(entry_key, raw, ttl)
            if key.subject_key:
                index = self._cache.get(key.subject_key, [])
                if entry_key not in index:
                    self._cache.set(key.subject_key, [*index, entry_key], None)

    def bump(self, ns_key: str) -> None:
        if not self._cache.add(ns_key, 1, None):
            self._cache.incr(ns_key)

    def purge_subject(self, tenant_id: int, subject: str) -> int:
        self.flush()
        index_key = cache.subject_index_key(tenant_id, subject)
        removed = sum(self._cache.delete(entry) for entry in self._cache.get(index_key, []))
        self._cache.delete(index_key)
        return removed


_choice = os.environ["BENCH_RESPONSE_CACHE"]
if _choice == "in-process":
    _chosen: InProcessResponseCache | DjangoFileResponseCache = InProcessResponseCache()
elif _choice == "django-file":
    _chosen = DjangoFileResponseCache(os.environ["BENCH_RESPONSE_CACHE_DIR"])
else:
    raise SystemExit(f"BENCH_RESPONSE_CACHE={_choice!r}: in-process or django-file")
# The pipeline asks gateway.cache.response_cache() on every request.
cache.response_cache = lambda: _chosen  # type: ignore[assignment]
