"""Stage "cache": an exact response cache per tenant.

Keys hash the tenant, the alias, the resolved model version and deployment, the system prompt,
the messages and the sampling parameters, under a *namespace* made of three counters: one per
alias (bumped when an alias's versions change or an officer invalidates it), one per tenant and
one per tenant and alias (bumped through the invalidation API). Invalidating is one INCR: old
entries are never scanned, they simply stop being addressed and expire by TTL.

Entries remember the data subject (the request's ``user``) in a per-subject index, so an erasure
can remove them (``purge_subject``).

With Redis (``REDIS_URL``) the cache is shared by every process and a lookup is one round trip
(a Lua script reads the namespace and the entry together). Without it (the embedded default), a
SQLite file in ``LLMP_DATA_DIR`` is the cache that the web process, the Celery worker and
management commands share.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import orjson
import structlog
from django.conf import settings

from gateway import write_behind
from gateway.providers.base import ChatRequest, ChatResult, Choice, EmbeddingRequest, Usage
from llmplatform.redis_client import async_redis, async_script, redis_configured, sync_redis

log = structlog.get_logger("gateway.cache")

PREFIX = "llmp:rc"


@dataclass(frozen=True, slots=True)
class CacheKey:
    tenant_id: int
    alias: str
    digest: str
    subject: str | None

    @property
    def ns_keys(self) -> list[str]:
        return [
            f"{PREFIX}:ns:a:{self.alias}",
            f"{PREFIX}:ns:t:{self.tenant_id}",
            f"{PREFIX}:ns:ta:{self.tenant_id}:{self.alias}",
        ]

    def entry_key(self, namespace: str) -> str:
        return f"{PREFIX}:e:{self.tenant_id}:{namespace}:{self.digest}"

    @property
    def subject_key(self) -> str | None:
        return subject_index_key(self.tenant_id, self.subject) if self.subject else None


def subject_index_key(tenant_id: int, subject: str) -> str:
    hashed = hashlib.sha256(f"{tenant_id}:{subject}".encode()).hexdigest()
    return f"{PREFIX}:s:{tenant_id}:{hashed}"


@dataclass(slots=True)
class CachedAnswer:
    content: str  # choice 0's text
    finish_reason: str
    usage: Usage
    deployment: str
    version: str
    eligible: bool  # stored from a cache-eligible request (served as a normal HIT)
    # Every choice whole (tool calls, refusal, logprobs); None for a text-only single choice.
    choices: list[Choice] | None = None
    # An embeddings answer: one vector per input (``content`` is empty).
    vectors: list[list[float]] | None = None

    @classmethod
    def of(cls, result: ChatResult, deployment: str, version: str, eligible: bool) -> CachedAnswer:
        plain = (
            len(result.choices) == 1
            and not result.choices[0].tool_calls
            and result.choices[0].refusal is None
            and result.choices[0].logprobs is None
        )
        return cls(
            result.content,
            result.finish_reason,
            result.usage,
            deployment,
            version,
            eligible,
            None if plain else list(result.choices),
        )

    def to_result(self) -> ChatResult:
        if self.choices:
            return ChatResult([dataclasses.replace(c) for c in self.choices], self.usage)
        return ChatResult.text(self.content, self.finish_reason, self.usage)


def make_key(
    *,
    tenant_id: int,
    alias: str,
    version: str,
    deployment: str,
    request: ChatRequest,
    token: Callable[[str], str | None] | None = None,
) -> CacheKey:
    """``token``: a stand-in for a message's content that names it exactly (within the
    tenant), such as the HMAC the input guard already took of a long text
    (``TextVerdicts.token``), so a long history is not serialised and hashed again on every
    turn. A stand-in goes in as ``{"t": token}``, which no content (a string) can be."""

    def content(text: str) -> str | dict[str, str]:
        stand_in = token(text) if token is not None and text else None
        return text if stand_in is None else {"t": stand_in}

    material = [
        tenant_id,
        alias,
        version,
        deployment,
        request.model,
        [
            [m.role, content(m.content), m.name, m.tool_call_id, m.tool_calls, m.parts]
            for m in request.messages
        ],
        request.temperature,
        request.top_p,
        request.max_tokens,
        request.stop,
        request.extra,
    ]
    digest = hashlib.sha256(orjson.dumps(material, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return CacheKey(tenant_id=tenant_id, alias=alias, digest=digest, subject=request.user)


def make_embedding_key(
    *, tenant_id: int, alias: str, version: str, deployment: str, request: EmbeddingRequest
) -> CacheKey:
    """Embeddings are deterministic: every request is eligible; the key is the tenant's, and
    names the inputs as the provider sees them (after the PII policy)."""
    material = [
        "embeddings",
        tenant_id,
        alias,
        version,
        deployment,
        request.model,
        request.inputs,
        request.dimensions,
    ]
    digest = hashlib.sha256(orjson.dumps(material)).hexdigest()
    return CacheKey(tenant_id=tenant_id, alias=alias, digest=digest, subject=request.user)


def is_eligible(request: ChatRequest, *, nonzero_temperature_allowed: bool) -> bool:
    return request.temperature == 0 or nonzero_temperature_allowed


def _encode(answer: CachedAnswer) -> bytes:
    data: dict[str, Any] = {
        "c": answer.content,
        "f": answer.finish_reason,
        "p": answer.usage.prompt_tokens,
        "o": answer.usage.completion_tokens,
        "d": answer.deployment,
        "v": answer.version,
        "e": answer.eligible,
    }
    if answer.choices:
        data["ch"] = [dataclasses.asdict(c) for c in answer.choices]
    if answer.vectors is not None:
        data["vx"] = answer.vectors
    return orjson.dumps(data)


def _decode(raw: bytes) -> CachedAnswer:
    data = orjson.loads(raw)
    choices = [Choice(**c) for c in data["ch"]] if data.get("ch") else None
    return CachedAnswer(
        data["c"],
        data["f"],
        Usage(data["p"], data["o"]),
        data["d"],
        data["v"],
        data["e"],
        choices,
        data.get("vx"),
    )


# Reads the three namespace counters and, unless ``digest`` is empty, the entry under that
# namespace; returns {namespace} or {namespace, raw}. A Lua function, so a script that does
# more in the same round trip (the admit stage also admits the request) can call it.
READ_FUNCTION = """
local function cache_read(ns_alias, ns_tenant, ns_tenant_alias, prefix, digest)
  local ns = (redis.call('GET', ns_alias) or '0') .. '.' .. (redis.call('GET', ns_tenant) or '0')
      .. '.' .. (redis.call('GET', ns_tenant_alias) or '0')
  if digest == '' then
    return {ns}
  end
  return {ns, redis.call('GET', prefix .. ns .. ':' .. digest)}
end
"""
_LOOKUP = READ_FUNCTION + "return cache_read(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2])\n"


def read_args(key: CacheKey, *, entry: bool) -> list[str]:
    """The read's arguments after the namespace keys: the entry prefix and the digest (empty:
    the namespace alone)."""
    return [f"{PREFIX}:e:{key.tenant_id}:", key.digest if entry else ""]


def read_result(reply: list[bytes | None]) -> tuple[str, CachedAnswer | None]:
    """The read's reply: (namespace, the cached answer or None)."""
    namespace = reply[0]
    assert namespace is not None  # the script always returns the namespace
    raw = reply[1] if len(reply) > 1 else None
    return namespace.decode(), (_decode(raw) if raw else None)


class RedisResponseCache:
    async def lookup(self, key: CacheKey) -> tuple[str, CachedAnswer | None]:
        # EVALSHA (the script is sent once per connection pool, then called by its hash).
        script = async_script(_LOOKUP)
        return read_result(await script(keys=key.ns_keys, args=read_args(key, entry=True)))

    async def namespace(self, key: CacheKey) -> str:
        """The namespace ``lookup`` would use, without reading the entry."""
        script = async_script(_LOOKUP)
        reply = await script(keys=key.ns_keys, args=read_args(key, entry=False))
        return read_result(reply)[0]

    async def store(self, key: CacheKey, namespace: str, answer: CachedAnswer, ttl: int) -> None:
        client = async_redis()
        entry = key.entry_key(namespace)
        async with client.pipeline(transaction=False) as pipe:
            write_behind.queue_set(pipe, entry, _encode(answer), ttl, key.subject_key)
            await pipe.execute()

    def store_later(self, key: CacheKey, namespace: str, answer: CachedAnswer, ttl: int) -> None:
        """``store`` through the write-behind buffer: for copies nobody waits for."""
        write_behind.buffer.add_set(key.entry_key(namespace), _encode(answer), ttl, key.subject_key)

    def bump(self, ns_key: str) -> None:
        sync_redis().incr(ns_key)

    def purge_subject(self, tenant_id: int, subject: str) -> int:
        client = sync_redis()
        index = subject_index_key(tenant_id, subject)
        # redis-py types every command for both clients (``Awaitable[T] | T``); the synchronous
        # client returns the value itself: a set of member names, and the count deleted.
        entries = list(cast(set[bytes], client.smembers(index)))
        removed = client.delete(*entries) if entries else 0
        client.delete(index)
        return int(removed)


class SqliteResponseCache:
    """The embedded default's cache: a SQLite file (``LLMP_SHARED_CACHE_PATH``) that every
    process of the platform opens (web, Celery worker, management commands), so an erasure, an
    invalidation or a rollout's rollback made in any of them reaches the gateway.

    WAL mode: a lookup never waits for a writer. A lookup is one statement on the process's
    own connection (about 20 microseconds), run on the event loop itself: handing it to a
    thread would cost more than it does. Expired entries are deleted now and then by the
    process that stores; the number of entries is bounded like the in-process LRU it replaced.
    """

    MAX_ENTRIES = 10_000
    # Stores between two clean-ups of expired (and surplus) entries.
    SWEEP_EVERY = 500
    # How long a write from the request path waits for another process's write; past that the
    # copy is dropped (it is a cache). Invalidations and erasures wait longer: they must land.
    STORE_BUSY_MS = 200
    WRITE_BUSY_MS = 10_000
    # Copies nobody waits for (``store_later``) are gathered this long and written in one
    # transaction, as the Redis cache's write-behind buffer does.
    DELAY_MS = 20

    _SCHEMA = (
        "CREATE TABLE IF NOT EXISTS entries (key TEXT PRIMARY KEY, value BLOB NOT NULL, "
        "expires REAL NOT NULL, subject TEXT)",
        "CREATE INDEX IF NOT EXISTS entries_subject ON entries (subject) WHERE subject IS NOT NULL",
        "CREATE INDEX IF NOT EXISTS entries_expires ON entries (expires)",
        "CREATE TABLE IF NOT EXISTS counters (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    )
    # The three namespace counters and the entry, in one statement (as the Redis script does).
    _LOOKUP = (
        "SELECT ns, (SELECT value FROM entries WHERE key = ?1 || ns || ':' || ?2 "
        "AND expires > ?3) FROM (SELECT "
        "coalesce((SELECT value FROM counters WHERE key = ?4), 0) || '.' || "
        "coalesce((SELECT value FROM counters WHERE key = ?5), 0) || '.' || "
        "coalesce((SELECT value FROM counters WHERE key = ?6), 0) AS ns)"
    )
    _STORE = "INSERT OR REPLACE INTO entries (key, value, expires, subject) VALUES (?, ?, ?, ?)"

    def __init__(self, path: str | None = None) -> None:
        self._path = path
        self._local = threading.local()
        self._stores = 0
        self._pending: list[tuple[str, bytes, float, str | None]] = []
        self._flush_loop: asyncio.AbstractEventLoop | None = None

    @property
    def path(self) -> str:
        return self._path or str(settings.LLMP_SHARED_CACHE_PATH)

    def _connection(self, *, patient: bool = False) -> sqlite3.Connection:
        """This thread's connection for the request path (it waits ``STORE_BUSY_MS`` for another
        writer), or with ``patient`` the one for writes that must land. New ones after a fork
        or when the path changes."""
        local = self._local
        name = "patient" if patient else "quick"
        conn = getattr(local, name, None)
        if conn is not None and local.pid == os.getpid() and local.path == self.path:
            return conn
        if getattr(local, "pid", None) != os.getpid() or getattr(local, "path", None) != self.path:
            local.quick = local.patient = None  # another process or file: start over
        path = self.path
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        busy_ms = self.WRITE_BUSY_MS if patient else self.STORE_BUSY_MS
        conn = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=busy_ms / 1000
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        for statement in self._SCHEMA:
            conn.execute(statement)
        setattr(local, name, conn)
        local.pid, local.path = os.getpid(), path
        return conn

    async def lookup(self, key: CacheKey) -> tuple[str, CachedAnswer | None]:
        prefix = f"{PREFIX}:e:{key.tenant_id}:"
        namespace, raw = (
            self._connection()
            .execute(self._LOOKUP, (prefix, key.digest, time.time(), *key.ns_keys))
            .fetchone()
        )
        return namespace, (_decode(raw) if raw is not None else None)

    async def namespace(self, key: CacheKey) -> str:
        """The namespace ``lookup`` would use, without reading the entry."""
        counters = dict(
            self._connection()
            .execute("SELECT key, value FROM counters WHERE key IN (?, ?, ?)", tuple(key.ns_keys))
            .fetchall()
        )
        return ".".join(str(counters.get(name, 0)) for name in key.ns_keys)

    async def store(self, key: CacheKey, namespace: str, answer: CachedAnswer, ttl: int) -> None:
        """Store at once: the next identical request is a hit."""
        self._write(
            [(key.entry_key(namespace), _encode(answer), time.time() + ttl, key.subject_key)]
        )

    def store_later(self, key: CacheKey, namespace: str, answer: CachedAnswer, ttl: int) -> None:
        """Store within ``DELAY_MS``, with the other copies gathered meanwhile (at once when no
        event loop runs here: a worker, a management command)."""
        self._pending.append(
            (key.entry_key(namespace), _encode(answer), time.time() + ttl, key.subject_key)
        )
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        if self._flush_loop is not loop:  # none scheduled on this loop yet
            self._flush_loop = loop
            loop.call_later(self.DELAY_MS / 1000, self.flush)

    def flush(self) -> None:
        """Write the gathered copies (a failure is logged: they are only copies)."""
        self._flush_loop = None
        rows, self._pending = self._pending, []
        if not rows:
            return
        try:
            self._write(rows)
        except sqlite3.Error as exc:
            log.warning("cache_store_failed", error=type(exc).__name__, entries=len(rows))

    def _write(self, rows: list[tuple[str, bytes, float, str | None]]) -> None:
        conn = self._connection()
        with conn:  # one transaction
            conn.executemany(self._STORE, rows)
        before, self._stores = self._stores, self._stores + len(rows)
        if before // self.SWEEP_EVERY != self._stores // self.SWEEP_EVERY:
            self.sweep()

    def sweep(self) -> int:
        """Delete expired entries, then the soonest to expire beyond ``MAX_ENTRIES``."""
        conn = self._connection(patient=True)
        removed = conn.execute("DELETE FROM entries WHERE expires <= ?", (time.time(),)).rowcount
        surplus = conn.execute("SELECT count(*) FROM entries").fetchone()[0] - self.MAX_ENTRIES
        if surplus > 0:
            removed += conn.execute(
                "DELETE FROM entries WHERE key IN "
                "(SELECT key FROM entries ORDER BY expires LIMIT ?)",
                (surplus,),
            ).rowcount
        return removed

    def bump(self, ns_key: str) -> None:
        self._connection(patient=True).execute(
            "INSERT INTO counters (key, value) VALUES (?, 1) "
            "ON CONFLICT (key) DO UPDATE SET value = value + 1",
            (ns_key,),
        )

    def purge_subject(self, tenant_id: int, subject: str) -> int:
        self.flush()  # copies gathered here must not survive the erasure
        return (
            self._connection(patient=True)
            .execute(
                "DELETE FROM entries WHERE subject = ?", (subject_index_key(tenant_id, subject),)
            )
            .rowcount
        )

    def counter(self, key: str) -> int:
        """A counter's value (0 when never bumped): what another process's ``bump`` changed."""
        row = (
            self._connection()
            .execute("SELECT value FROM counters WHERE key = ?", (key,))
            .fetchone()
        )
        return int(row[0]) if row else 0

    def clear(self) -> None:
        """Forget every entry and counter (tests)."""
        self._pending.clear()
        conn = self._connection(patient=True)
        conn.execute("DELETE FROM entries")
        conn.execute("DELETE FROM counters")


_local = SqliteResponseCache()
_redis = RedisResponseCache()


def response_cache() -> RedisResponseCache | SqliteResponseCache:
    return _redis if redis_configured() else _local


def shared_file_cache() -> SqliteResponseCache:
    """The embedded default's shared cache file (also holds the routing generation counter)."""
    return _local


def ttl_seconds() -> int:
    return settings.LLMP_CACHE_TTL_SECONDS


# --- invalidation (called by services, admin actions and the API) ---------------------------


def invalidate_alias(alias: str) -> None:
    response_cache().bump(f"{PREFIX}:ns:a:{alias}")


def invalidate_tenant(tenant_id: int, alias: str | None = None) -> None:
    if alias:
        response_cache().bump(f"{PREFIX}:ns:ta:{tenant_id}:{alias}")
    else:
        response_cache().bump(f"{PREFIX}:ns:t:{tenant_id}")


def purge_subject(tenant_id: int, subject: str) -> int:
    """Remove every cached answer produced by a data subject's requests (for erasure)."""
    return response_cache().purge_subject(tenant_id, subject)


def safe_invalidate_alias(**kwargs: Any) -> None:
    """Signal receiver: a saved alias or version bumps its alias namespace."""
    instance = kwargs.get("instance")
    alias = getattr(instance, "alias", instance)
    name = getattr(alias, "name", None)
    if not name:
        return
    try:
        invalidate_alias(name)
    except Exception:  # the change must not fail because the cache is down; entries expire
        log.warning("cache_invalidation_failed", alias=name, exc_info=True)
