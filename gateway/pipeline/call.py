"""What every request through the pipeline has, whatever it asks for (chat, embeddings): its
identity and meter, the cache lookup's bookkeeping, the response headers, and how a refusal
before the answer is metered."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, TypeVar

import structlog

from gateway import cache as response_cache
from gateway import metrics
from gateway.errors import ApiError
from gateway.limits import Admission
from gateway.pipeline import admit
from gateway.pipeline.authenticate import Principal
from gateway.pipeline.route import Target
from gateway.pipeline.settle import Meter
from gateway.providers.base import ChatRequest, EmbeddingRequest

if TYPE_CHECKING:
    from gateway.pipeline.chat import RequestInfo

log = structlog.get_logger("gateway.api")

# What the call sends upstream: a ChatRequest (chat) or an EmbeddingRequest (embeddings).
RequestT = TypeVar("RequestT", ChatRequest, EmbeddingRequest)


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
        self.cache_status: str | None = None  # HIT | MISS | BYPASS
        self.cache_key: response_cache.CacheKey | None = None
        self.cache_namespace = ""
        self.served_by = ""  # x-llmp-deployment when no deployment answered: cache | degraded
        self.admission: Admission | None = None

    async def admit_and_look_up(
        self, user: str | None, target: Target, request: RequestT
    ) -> response_cache.CachedAnswer | None:
        """Stages "admit" and "cache": independent Redis round trips, made at once. Returns the
        cached answer (or None); raises the admission's refusal."""
        admission, cached = await asyncio.gather(
            admit.admit(self.principal, user, target, request),
            self.lookup_cache(target, request),
            return_exceptions=True,
        )
        if isinstance(admission, BaseException):
            raise admission
        self.admission = self.meter.admission = admission
        if isinstance(cached, BaseException):
            raise cached
        return cached

    async def lookup_cache(
        self, target: Target, request: RequestT
    ) -> response_cache.CachedAnswer | None:
        raise NotImplementedError

    async def cached(
        self,
        key: response_cache.CacheKey,
        usable: Callable[[response_cache.CachedAnswer], bool],
    ) -> response_cache.CachedAnswer | None:
        """The tenant's cached answer under ``key`` if ``usable(answer)``; a cache outage is a
        bypass, never a failure."""
        self.cache_key = key
        try:
            self.cache_namespace, answer = await response_cache.response_cache().lookup(key)
        except Exception:  # a cache outage must not fail the request: serve from upstream
            log.warning("cache_lookup_failed", exc_info=True)
            self.cache_key = None
            self.cache_status = "BYPASS"
            return None
        hit = answer is not None and usable(answer)
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
        headers.update(admit.rate_limit_headers(self.admission))
        overhead = self.meter.overhead_now(now if now is not None else time.perf_counter())
        headers["x-llmp-overhead-ms"] = f"{overhead:.2f}"
        return headers

    async def fail(self, exc: ApiError) -> dict[str, str]:
        """A request refused before its answer began: metered; the headers to send."""
        await self.meter.record(
            status=exc.status, now=time.perf_counter(), error_code=exc.code or ""
        )
        return self.headers()
