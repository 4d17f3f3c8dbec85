"""One embeddings request through the pipeline (``/v1/embeddings``): the same stages as chat,
minus what has no meaning for vectors.

1. **authenticate** (the door; the key needs the ``embeddings`` scope);
2. **route**: the alias to a version and its fallbacks, as for chat;
3. **guard input**: the tier's size limit over every input; what the provider cannot do is
   refused (400); the PII policy blocks, masks or pseudonymises each input. There is no
   injection screen: an embedding model follows no instructions, and its vectors reach no model
   as instructions;
4. **admit** and 5. **cache**: token and spend reservations (the inputs' estimate, no
   completion) and an exact, tenant-isolated cache lookup (embeddings are deterministic: every
   request is eligible unless it says ``Cache-Control: no-cache`` or ``no-store``), in one
   round trip;
6. **dispatch**: timeouts, retries, breakers and fallbacks as for chat (no degraded reply);
8. **settle**: the usage record (prompt tokens, cost from the deployment's input price), the
   cache entry, metrics.
"""

from __future__ import annotations

import time

import structlog

from gateway import cache as response_cache
from gateway.errors import InvalidRequest, ModelNotFound
from gateway.pipeline import background, dispatch, pii
from gateway.pipeline.authenticate import Principal
from gateway.pipeline.call import CacheRead, PipelineCall
from gateway.pipeline.chat import RequestInfo
from gateway.pipeline.route import RoutePlan, Target, routing_table
from gateway.pipeline.settle import chars_to_tokens, count_new_placeholders
from gateway.pipeline.validate import ParsedEmbeddings
from gateway.providers import capabilities
from gateway.providers.base import EmbeddingRequest, EmbeddingResult, UpstreamError, Usage
from llmplatform import tracing

log = structlog.get_logger("gateway.api")


class EmbeddingsCall(PipelineCall[EmbeddingRequest]):
    def __init__(
        self,
        info: RequestInfo,
        principal: Principal,
        parsed: ParsedEmbeddings,
        *,
        for_semantic_cache: bool = False,
    ) -> None:
        super().__init__(info, principal, content_kinds=("embeddings",))
        self.parsed = parsed
        # The semantic cache's own call for a chat request: the officer chose the alias for the
        # chat alias, so the tenant's tier need not list it (it is still metered to the tenant).
        self.for_semantic_cache = for_semantic_cache

    async def answer(self) -> EmbeddingResult:
        """Every stage; raises ``ApiError``."""
        principal, parsed = self.principal, self.parsed
        with tracing.stage("route"):
            if not self.for_semantic_cache and not principal.may_use(parsed.alias):
                raise ModelNotFound(
                    "The model does not exist or you do not have access to it.", param="model"
                )
            route_plan = await routing_table.plan(parsed.alias, parsed.user)
            if tracing.enabled:
                tracing.set_request_attributes({"llmp.alias": parsed.alias})
        target = self.meter.target = route_plan.primary
        self.meter.alias = parsed.alias
        self.meter.version = target.version
        with tracing.stage("guard_input"):
            self.check_limits()
            try:
                capabilities.refuse_embeddings(target.provider)
            except UpstreamError as exc:
                raise dispatch.as_api_error(exc) from exc
            with tracing.stage("pii"):
                inputs = pii.protect_texts(principal, parsed.inputs)
        if inputs is not parsed.inputs:
            self.meter.pii_redactions = count_new_placeholders(parsed.inputs, inputs)
        request = EmbeddingRequest(target.model, inputs, parsed.dimensions, parsed.user)
        with tracing.stage("admit"):
            cached = await self.admit_and_look_up(parsed.user, target, request)
        if cached is not None and cached.vectors is not None:
            self.meter.cache_hit = True
            result = EmbeddingResult(cached.vectors, cached.usage)
            await self.settle(result.usage)
            return result
        with tracing.stage("dispatch"):
            result = await self.dispatch(target, request, route_plan)
        usage = result.usage
        if usage.prompt_tokens == 0:
            usage = Usage(chars_to_tokens(sum(len(text) for text in inputs)), 0)
            result.usage = usage
        if (
            self.cache_key is not None
            and self.meter.target is not None
            and not self.meter.fallback_reason
        ):
            await self.remember(result)
        await self.settle(usage)
        return result

    def check_limits(self) -> None:
        tier, inputs = self.principal.tier, self.parsed.inputs
        size = sum(len(text) for text in inputs)
        if size > tier.max_prompt_chars:
            largest = max(range(len(inputs)), key=lambda i: len(inputs[i]))
            raise InvalidRequest(
                f"The request sends {size} characters; the '{tier.name}' tier allows at most "
                f"{tier.max_prompt_chars}. The largest input is {len(inputs[largest])} "
                "characters.",
                code="prompt_too_large",
                param=f"input[{largest}]" if len(inputs) > 1 else "input",
            )

    async def dispatch(
        self, target: Target, request: EmbeddingRequest, route_plan: RoutePlan
    ) -> EmbeddingResult:
        self.meter.upstream_called = True
        started = time.perf_counter()

        def request_for(t: Target) -> EmbeddingRequest:
            return (
                request
                if t is target
                else EmbeddingRequest(t.model, request.inputs, request.dimensions, request.user)
            )

        async def cached_answer() -> EmbeddingResult | None:
            if self.cache_key is None:
                return None
            _, answer = await response_cache.response_cache().lookup(self.cache_key)
            if answer is None or answer.vectors is None:
                return None
            return EmbeddingResult(answer.vectors, answer.usage)

        plan = dispatch.DispatchPlan.from_route(
            route_plan, request_for=request_for, cached_answer=cached_answer
        )
        try:
            served = await dispatch.embed(plan)
        finally:
            self.meter.upstream_ms = (time.perf_counter() - started) * 1000
        self.meter.target = served.target
        self.meter.cache_hit = served.source == dispatch.CACHE
        self.meter.upstream_attempts = served.attempts
        self.meter.fallback_reason = served.fallback_reason
        self.served_by = served.deployment
        return served.result

    def cache_read(self, target: Target, request: EmbeddingRequest) -> CacheRead | None:
        """The tenant's cached vectors for the same input; with ``no-cache`` only the namespace,
        for the fresh answer to be kept under (``no-store``: nothing)."""
        cache_control = self.info.cache_control
        if "no-store" in cache_control:
            self.cache_status = "BYPASS"
            return None
        key = response_cache.make_embedding_key(
            tenant_id=self.principal.tenant_id,
            alias=target.alias,
            version=target.version,
            deployment=target.deployment,
            request=request,
        )
        if "no-cache" in cache_control:
            self.cache_status = "BYPASS"
            return CacheRead(key, None)
        return CacheRead(key, _has_vectors)

    async def remember(self, result: EmbeddingResult) -> None:
        target = self.meter.target
        assert target is not None and self.cache_key is not None
        answer = response_cache.CachedAnswer(
            "",
            "stop",
            result.usage,
            target.deployment,
            target.version,
            True,
            vectors=result.vectors,
        )
        try:
            await response_cache.response_cache().store(
                self.cache_key, self.cache_namespace, answer, response_cache.ttl_seconds()
            )
        except Exception:
            log.warning("cache_store_failed", exc_info=True)

    async def settle(self, usage: Usage) -> None:
        with tracing.stage("settle"):
            await background.after_answer(
                self.meter.record(status=200, now=time.perf_counter(), usage=usage),
                event="usage_record_failed",
            )


def _has_vectors(answer: response_cache.CachedAnswer) -> bool:
    return answer.vectors is not None
