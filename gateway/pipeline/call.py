"""What every request through the pipeline has, whatever it asks for (chat, embeddings): its
identity and meter, the cache lookup's bookkeeping, the response headers, and how a refusal
before the answer is metered."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

import structlog
from opentelemetry import context as otel_context

from gateway import cache as response_cache
from gateway import metrics
from gateway.errors import ApiError
from gateway.limits import Admission
from gateway.pipeline import admit
from gateway.pipeline.authenticate import Principal
from gateway.pipeline.route import Target
from gateway.pipeline.settle import Meter
from gateway.providers.base import ChatRequest, EmbeddingRequest
from llmplatform.redis_client import redis_configured

if TYPE_CHECKING:
    from gateway.pipeline.chat import RequestInfo

log = structlog.get_logger("gateway.api")

# What the call sends upstream: a ChatRequest (chat) or an EmbeddingRequest (embeddings).
RequestT = TypeVar("RequestT", ChatRequest, EmbeddingRequest)


@dataclass(frozen=True, slots=True)
class CacheRead:
    """What the cache stage reads for a request: the tenant's entry under ``key`` (a lookup:
    ``usable`` says whether a found answer may answer this request), or, with ``usable`` None,
    only the tenant's namespace, for a fresh answer to be kept under."""

    key: response_cache.CacheKey
    usable: Callable[[response_cache.CachedAnswer], bool] | None


async def _read(read: CacheRead | None) -> admit.CacheFound | None:
    """The cache's read on its own: what it found, or why it failed."""
    if read is None:
        return None
    cache = response_cache.response_cache()
    try:
        if read.usable is None:
            return await cache.namespace(read.key), None
        return await cache.lookup(read.key)
    except Exception as exc:
        return exc


class PipelineCall(Generic[RequestT]):
    def __init__(
        self,
        info: RequestInfo,
        principal: Principal,
        *,
        content_kinds: tuple[str, ...],
        streamed: bool = False,
    ) -> None:
        self.info = info
        self.principal = principal
        self.request_id = info.request_id
        # The alias is metered (metrics label, log line, usage record) once it is routed: an
        # unknown "model" is whatever the client sent (an email, a pasted key), never a label.
        self.meter = Meter(
            info.request_id,
            info.route,
            principal,
            info.started,
            alias="",
            streamed=streamed,
            content_kinds=content_kinds,
        )
        self.cache_status: str | None = None  # HIT | SEMANTIC-HIT | MISS | BYPASS
        self.cache_similarity: float | None = None  # a semantic hit's
        self.cache_key: response_cache.CacheKey | None = None
        self.cache_namespace = ""
        self.served_by = ""  # x-llmp-deployment when no deployment answered: cache | degraded
        self.admission: Admission | None = None
        # The context later stages' spans hang from when they run outside it (None: not traced).
        self.trace_parent: otel_context.Context | None = None

    async def admit_and_look_up(
        self, user: str | None, target: Target, request: RequestT
    ) -> response_cache.CachedAnswer | None:
        """Stages "admit" and "cache": the reservation, then the cache's read; with Redis, both
        in one round trip. Returns the cached answer (or None); raises the admission's
        refusal."""
        read = self.cache_read(target, request)
        now = time.time()
        wanted = admit.counters(self.principal, user, target, request, now)
        found: admit.CacheFound | None
        if read is not None and wanted and redis_configured():
            self.admission, found = await admit.admit_and_read(
                wanted, now, read.key, entry=read.usable is not None
            )
        else:  # one of them has nothing to do, or neither goes to Redis
            self.admission = await admit.admit(wanted, now)
            found = await _read(read)
        self.meter.admission = self.admission
        if read is None or found is None:
            return None
        return self._found(read, found)

    def cache_read(self, target: Target, request: RequestT) -> CacheRead | None:
        """What the cache stage reads for this request (None: nothing)."""
        raise NotImplementedError

    def _found(
        self, read: CacheRead, found: admit.CacheFound
    ) -> response_cache.CachedAnswer | None:
        """The cached answer if the read found one this request may use; a cache outage is a
        bypass, never a failure."""
        if isinstance(found, BaseException):
            log.warning("cache_lookup_failed", exc_info=found)
            if read.usable is not None:
                self.cache_status = "BYPASS"
            return None
        self.cache_key = read.key
        self.cache_namespace, answer = found
        if read.usable is None:
            return None
        hit = answer is not None and read.usable(answer)
        self.cache_status = "HIT" if hit else "MISS"
        metrics.record_cache(self.cache_status.lower())
        return answer if hit else None

    def headers(self, now: float | None = None) -> dict[str, str]:
        headers = {"X-Request-ID": self.request_id}
        if self.meter.target is not None:
            headers["x-llmp-deployment"] = self.meter.target.deployment
            headers["x-llmp-model-version"] = self.meter.target.version
        elif self.served_by:
            headers["x-llmp-deployment"] = self.served_by
        if self.cache_status:
            headers["X-Cache"] = self.cache_status
        if self.cache_similarity is not None:
            headers["X-Cache-Similarity"] = f"{self.cache_similarity:.4f}"
        headers.update(admit.rate_limit_headers(self.admission))
        overhead = self.meter.overhead_now(now if now is not None else time.perf_counter())
        headers["x-llmp-overhead-ms"] = f"{overhead:.2f}"
        return headers

    async def fail(self, exc: ApiError) -> dict[str, str]:
        """A request refused before its answer began: metered; the headers to send. A reply a
        post-call scanner refused was metered when it settled (with its tokens)."""
        if not self.meter.settled:
            await self.meter.record(
                status=exc.status, now=time.perf_counter(), error_code=exc.code or ""
            )
        return self.headers()
