"""Stage "cache": an exact response cache per tenant.

Keys hash the tenant, the alias, the resolved model version and deployment, the system prompt,
the messages and the sampling parameters, under a *namespace* made of three counters: one per
alias (bumped when an alias's versions change or an officer invalidates it), one per tenant and
one per tenant and alias (bumped through the invalidation API). Invalidating is one INCR: old
entries are never scanned, they simply stop being addressed and expire by TTL.

Entries remember the data subject (the request's ``user``) in a per-subject index, so an erasure
can remove them (``purge_subject``).

With Redis (``REDIS_URL``) the cache is shared by every process and a lookup is one round trip
(a Lua script reads the namespace and the entry together). Without it, an in-process LRU serves
the single-process embedded default.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import orjson
import structlog
from django.conf import settings

from gateway import write_behind
from gateway.providers.base import ChatRequest, ChatResult, Usage
from llmplatform.redis_client import async_redis, redis_configured, sync_redis

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
        return [f"{PREFIX}:ns:a:{self.alias}", f"{PREFIX}:ns:t:{self.tenant_id}",
                f"{PREFIX}:ns:ta:{self.tenant_id}:{self.alias}"]

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
    content: str
    finish_reason: str
    usage: Usage
    deployment: str
    version: str
    eligible: bool  # stored from a cache-eligible request (served as a normal HIT)

    def to_result(self) -> ChatResult:
        return ChatResult(content=self.content, finish_reason=self.finish_reason,
                          usage=self.usage)


def make_key(*, tenant_id: int, alias: str, version: str, deployment: str,
             request: ChatRequest) -> CacheKey:
    material = [
        tenant_id, alias, version, deployment, request.model,
        [[m.role, m.content, m.name, m.tool_call_id, m.tool_calls] for m in request.messages],
        request.temperature, request.top_p, request.max_tokens, request.stop, request.extra,
    ]
    digest = hashlib.sha256(orjson.dumps(material, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return CacheKey(tenant_id=tenant_id, alias=alias, digest=digest, subject=request.user)


def is_eligible(request: ChatRequest, *, nonzero_temperature_allowed: bool) -> bool:
    return request.temperature == 0 or nonzero_temperature_allowed


def _encode(answer: CachedAnswer) -> bytes:
    return orjson.dumps({
        "c": answer.content, "f": answer.finish_reason, "p": answer.usage.prompt_tokens,
        "o": answer.usage.completion_tokens, "d": answer.deployment, "v": answer.version,
        "e": answer.eligible,
    })


def _decode(raw: bytes) -> CachedAnswer:
    data = orjson.loads(raw)
    return CachedAnswer(data["c"], data["f"], Usage(data["p"], data["o"]), data["d"], data["v"],
                        data["e"])


# Reads the three namespace counters and the entry in one round trip; returns {namespace, raw}.
_LOOKUP = """
local ns = (redis.call('GET', KEYS[1]) or '0') .. '.' .. (redis.call('GET', KEYS[2]) or '0')
    .. '.' .. (redis.call('GET', KEYS[3]) or '0')
return {ns, redis.call('GET', ARGV[1] .. ns .. ':' .. ARGV[2])}
"""


class RedisResponseCache:
    async def lookup(self, key: CacheKey) -> tuple[str, CachedAnswer | None]:
        client = async_redis()
        prefix = f"{PREFIX}:e:{key.tenant_id}:"
        # EVALSHA (the script is sent once per connection pool, then called by its hash).
        script = client.register_script(_LOOKUP)
        namespace, raw = await script(keys=key.ns_keys, args=[prefix, key.digest])
        namespace = namespace.decode() if isinstance(namespace, bytes) else namespace
        return namespace, (_decode(raw) if raw else None)

    async def store(self, key: CacheKey, namespace: str, answer: CachedAnswer, ttl: int) -> None:
        client = async_redis()
        entry = key.entry_key(namespace)
        async with client.pipeline(transaction=False) as pipe:
            write_behind.queue_set(pipe, entry, _encode(answer), ttl, key.subject_key)
            await pipe.execute()

    def store_later(self, key: CacheKey, namespace: str, answer: CachedAnswer,
                    ttl: int) -> None:
        """``store`` through the write-behind buffer: for copies nobody waits for."""
        write_behind.buffer.add_set(key.entry_key(namespace), _encode(answer), ttl,
                                    key.subject_key)

    def bump(self, ns_key: str) -> None:
        sync_redis().incr(ns_key)

    def purge_subject(self, tenant_id: int, subject: str) -> int:
        client = sync_redis()
        index = subject_index_key(tenant_id, subject)
        entries = list(client.smembers(index))
        removed = client.delete(*entries) if entries else 0
        client.delete(index)
        return int(removed)


class LocalResponseCache:
    """The embedded default's cache: one process, bounded LRU with TTLs."""

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

    async def store(self, key: CacheKey, namespace: str, answer: CachedAnswer, ttl: int) -> None:
        self.store_later(key, namespace, answer, ttl)

    def store_later(self, key: CacheKey, namespace: str, answer: CachedAnswer,
                    ttl: int) -> None:
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
        for entry_key in self._subjects.pop(subject_index_key(tenant_id, subject), set()):
            if self._entries.pop(entry_key, None) is not None:
                removed += 1
        return removed


_local = LocalResponseCache()
_redis = RedisResponseCache()


def response_cache() -> RedisResponseCache | LocalResponseCache:
    return _redis if redis_configured() else _local


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
