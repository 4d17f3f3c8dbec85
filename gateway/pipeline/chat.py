"""One chat request through the pipeline, whatever door it came in by (OpenAI chat completions,
the simple ``/chat`` and ``/chat-stream``):

1. **authenticate** (the door, with the request's key: ``authenticate.authenticate``);
2. **route**: the alias to a version and its fallbacks (``route``); the upstream request;
3. **guard input**: the tier's bounds (``admit.check_limits``), the PII policy (``pii``), the
   canary (``guard``); the injection screen comes after admission (step 4) so a screened-out
   request still counts against the limits;
4. **admit** and 5. **cache**: reservations and the cache lookup, gathered in one round trip;
   then the injection screen and the pre-call external scanners (``scan``);
6. **dispatch**: the provider, with retries, breakers and fallbacks (``dispatch``);
7. **guard output**: leak guard and restoring placeholders over every text of the reply
   (``output``); a plain answer is a one-chunk stream through the same stage; then the
   post-call external scanners on the assembled reply (a stream is held until they pass it);
8. **settle**: cache the answer, meter it, keep the conversation (``settle``).

``ChatCall.answer`` returns a ``Reply``: the filtered deltas to render, and the headers. The
doors (``gateway.api``) only parse HTTP into a ``ParsedChat`` and render the reply.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from asgiref.sync import sync_to_async

from gateway import cache as response_cache
from gateway import metrics, semantic_cache
from gateway.errors import ApiError, ModelNotFound
from gateway.models import SecurityEvent
from gateway.pipeline import admit, background, dispatch, guard, inputs, output, pii, scan, verdicts
from gateway.pipeline.authenticate import Principal
from gateway.pipeline.call import CacheRead, PipelineCall
from gateway.pipeline.dispatch import DispatchPlan, Outcome, Served, StreamServed
from gateway.pipeline.route import SemanticPolicy, Target, routing_table, upstream_request
from gateway.pipeline.settle import (
    chars_to_tokens,
    count_redactions,
    estimate_tokens,
    placeholders,
)
from gateway.pipeline.validate import ParsedChat, ParsedEmbeddings
from gateway.providers import capabilities
from gateway.providers.base import (
    ChatDelta,
    ChatMessage,
    ChatRequest,
    ChatResult,
    UpstreamError,
    Usage,
)
from gateway.scanners.base import ScannerConfig, ScanText
from llmplatform import tracing
from llmplatform.db import fresh_db

log = structlog.get_logger("gateway.api")
# What a stored conversation record keeps: the exchange, not the app's system prompt.
CONVERSATION_ROLES = frozenset({"user", "tool", "assistant"})


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """What the pipeline needs of the HTTP request (the door fills it in)."""

    request_id: str
    route: str  # the door: chat.completions | chat | chat-stream
    started: float  # time.perf_counter() when the request arrived
    cache_control: str = ""
    gpc: bool = False  # Sec-GPC: 1


@fresh_db
def _record_gpc(tenant_id: int, user: str, request_id: str) -> None:
    from privacy import selectors, services

    subject = selectors.subject_for(tenant_id, user)
    if subject is not None and subject.do_not_sell:
        return
    if subject is None:
        from llmplatform.models import Tenant

        subject = services.subject_get_or_create(
            tenant=Tenant.objects.get(pk=tenant_id), external_id=user
        )
    services.consent_apply_gpc(subject=subject, request_id=request_id)


@fresh_db
def _store_conversation(
    tenant_id: int,
    user: str,
    alias: str,
    request_id: str,
    prompt: str,
    response: str,
    attempt: int = 1,
) -> None:
    from llmplatform.models import Tenant
    from privacy.models import Conversation
    from privacy.services import conversation_store

    if (
        attempt > 1
        and Conversation.objects.for_tenant(tenant_id).filter(request_id=request_id).exists()
    ):
        return  # an earlier attempt committed before its connection dropped
    conversation_store(
        tenant=Tenant.objects.get(pk=tenant_id),
        external_id=user,
        alias=alias,
        request_id=request_id,
        prompt=prompt,
        response=response,
    )


def conversation_text(result: ChatResult) -> str:
    """A reply as a conversation record keeps it: the first choice's text, refusal and tool
    calls."""
    choice = result.choices[0] if result.choices else None
    if choice is None:
        return ""
    lines = [choice.content] if choice.content else []
    if choice.refusal:
        lines.append(f"refusal: {choice.refusal}")
    for call in choice.tool_calls or ():
        function = call.get("function", {})
        lines.append(f"tool call {function.get('name', '')}({function.get('arguments', '')})")
    return "\n".join(lines)


@dataclass(slots=True)
class Reply:
    """What the door renders: the deltas (filtered; for a plain answer already drained into
    ``result``) and the response headers."""

    call: ChatCall
    events: AsyncIterator[ChatDelta] | None = None
    result: ChatResult | None = None

    def headers(self) -> dict[str, str]:
        return self.call.headers()


class ChatCall(PipelineCall[ChatRequest]):
    """One chat request going through the pipeline, for plain and streamed answers."""

    def __init__(self, info: RequestInfo, principal: Principal, parsed: ParsedChat) -> None:
        super().__init__(
            info,
            principal,
            streamed=parsed.stream,
            content_kinds=tuple(parsed.content_kinds()),
        )
        self.parsed = parsed
        self.completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.store_answers = "no-store" not in info.cache_control
        self.cacheable = False
        self.leak_guard: guard.LeakGuard | None = None
        self.restorer: pii.Restorer | None = None
        # The messages as the provider may see them (PII masked or pseudonymised).
        self.upstream_messages: list[ChatMessage] | None = None
        self.upstream_extra: dict[str, Any] = {}
        self._upstream_started = 0.0
        self.post_scanners: tuple[ScannerConfig, ...] = ()
        self.verdicts = verdicts.NO_VERDICTS
        # The question and its embedding when the semantic cache was asked and missed.
        self.similar: tuple[semantic_cache.SemanticQuestion, Any] | None = None

    # The stages ------------------------------------------------------------------------------

    async def answer(self) -> Reply:
        """Stages 2 to 8; raises ``ApiError`` before any byte of an answer is sent."""
        await self.honour_gpc()
        target, request, cached = await self.prepare()  # route, guard input, admit, cache
        if cached is not None:
            self._upstream_started = time.perf_counter()
            deltas = output.as_deltas(cached.to_result())
            first, rest = deltas[0], _replay(deltas[1:])
        else:
            first, rest, request = await self.dispatch(target, request)
        events = self.relay(first, rest, request)
        if self.parsed.stream and self.post_scanners:
            # Held whole until the post-call scanners have passed it (at the end of ``relay``).
            held = [delta async for delta in events]
            return Reply(self, events=_replay(held))
        if self.parsed.stream:
            return Reply(self, events=events)
        async for _ in events:
            pass  # a plain answer: the same stage, drained here
        return Reply(self, result=self.out.result(raw=False, usage=self.usage))

    async def prepare(self) -> tuple[Target, ChatRequest, response_cache.CachedAnswer | None]:
        principal, parsed = self.principal, self.parsed
        with tracing.stage("route"):
            if not principal.may_use(parsed.alias):
                raise ModelNotFound(
                    "The model does not exist or you do not have access to it.",
                    param="model",
                )
            self.route_plan = await routing_table.plan(parsed.alias, parsed.user)
            # Only a routed alias is named (an unknown "model" is whatever the client sent).
            if tracing.enabled:
                tracing.set_request_attributes({"llmp.alias": parsed.alias})
        target = self.meter.target = self.route_plan.primary
        self.meter.alias = parsed.alias
        self.meter.version = target.version
        with tracing.stage("guard_input"):
            request = await self.guard_input(target)
        # Admission comes before the screen, so screened-out prompts still count against the
        # request limits.
        with tracing.stage("admit"):
            cached = await self.admit_and_look_up(parsed.user, target, request)
        with tracing.stage("guard"):
            await self.screen()
        await self.scan_input()
        if cached is None and self.route_plan.semantic is not None:
            with tracing.stage("semantic_cache"):
                cached = await self.look_up_similar(target, request, self.route_plan.semantic)
        if cached is not None:
            self.meter.cache_hit = True
        new_guard = (lambda: self._new_leak_guard(target)) if self.leak_guard else None
        self.out = output.Output(new_guard, self.restorer, whole=not parsed.stream)
        return target, request, cached

    async def guard_input(self, target: Target) -> ChatRequest:
        """Stage 3: the tier's bounds, what the provider takes, the PII policy and the canary;
        the request as the provider may see it."""
        principal, parsed = self.principal, self.parsed
        admit.check_limits(principal, parsed)
        try:  # what the routed provider does not take is a 400 naming the part
            capabilities.refuse_unsupported(target.provider, parsed.messages, parsed.extra)
        except UpstreamError as exc:
            raise dispatch.as_api_error(exc) from exc
        if principal.tier.leak_mode != "off" and (
            target.system_prompt or any(m.role in guard.SYSTEM_ROLES for m in parsed.messages)
        ):
            self.leak_guard = self._new_leak_guard(target)
        request = upstream_request(target, parsed, principal)
        # The screen scores and PII findings of long texts: earlier turns' from the verdict
        # store in one round trip, new ones computed (off the event loop when long).
        self.verdicts = await verdicts.look_up(principal, parsed.parts(), parsed.messages)
        # PII policy first (over everything the client sent, not the route's own system
        # prompt), then the canary, so masking can never touch it.
        with tracing.stage("pii"):
            protected, self.restorer = pii.protect(
                principal, request, keep=1 if target.system_prompt else 0, verdicts=self.verdicts
            )
        if protected is not request:
            found = self.verdicts
            self.meter.pii_redactions = count_redactions(
                request.messages,
                protected.messages,
                lambda sent, masked: found.added_placeholders(sent, masked, placeholders),
            )
        if self.leak_guard is not None:
            protected = dataclasses.replace(
                protected, messages=guard.add_canary(protected.messages, self.leak_guard.canary)
            )
        self.upstream_messages, self.upstream_extra = protected.messages, protected.extra
        return protected

    def _new_leak_guard(self, target: Target) -> guard.LeakGuard:
        """A leak guard for one text of the reply (each choice's content, each tool call's
        arguments has its own)."""
        return guard.LeakGuard(
            guard.canary_for(self.principal, target.alias, target.version),
            self.principal.tier.leak_mode,
            system_prompt="\n".join(
                [
                    target.system_prompt or "",
                    *(m.content for m in self.parsed.messages if m.role in guard.SYSTEM_ROLES),
                ]
            ),
        )

    async def dispatch(
        self, target: Target, request: ChatRequest
    ) -> tuple[ChatDelta, AsyncIterator[ChatDelta], ChatRequest]:
        """Stage 6: the first delta, the rest, and the request that was sent (a fallback's, if
        one answered). A plain answer is asked for as a plain call (the provider's JSON
        answer) and passed on as one delta per choice."""
        self._upstream_started = time.perf_counter()
        self.meter.upstream_called = True
        plan = self.dispatch_plan(target, request)
        served: StreamServed | Served[ChatRequest, ChatResult]
        try:
            with tracing.stage("dispatch"):
                if self.parsed.stream:
                    served = await dispatch.open_stream(plan)
                    first, rest = served.first, served.deltas
                else:
                    served = await dispatch.complete(plan)
                    deltas = output.as_deltas(served.result)
                    first, rest = deltas[0], _replay(deltas[1:])
        finally:
            now = time.perf_counter()
            self.meter.upstream_ms = (now - self._upstream_started) * 1000
        self.served(served)
        if self.parsed.stream:
            self.meter.overhead_ms = self.meter.overhead_now(now)
        return first, rest, served.request

    async def relay(
        self, first: ChatDelta, deltas: AsyncIterator[ChatDelta], request: ChatRequest
    ) -> AsyncIterator[ChatDelta]:
        """Stage 7 over every delta, then stage 8, also when the client goes away or the
        upstream breaks mid-stream (an ``ApiError`` is raised for the door to send as an
        error event)."""
        out = self.out
        status, error_code = 200, ""
        # Not made current: it spans this generator's yields (see tracing.stage).
        output_span = tracing.start_stage("output")
        self.trace_parent = tracing.current_context()
        try:
            delta = first
            while True:
                for event in out.feed(delta):
                    yield event
                if out.stopped:
                    await _close(deltas)
                    break
                try:
                    delta = await deltas.__anext__()
                except StopAsyncIteration:
                    break
            finished = out.finish()
            if self.post_scanners:
                # ``answer`` holds the whole reply until this has passed it (nothing has been
                # sent yet), so a refusal is an error answer, not an error event after a 200.
                await self.scan_output()
            for event in finished:
                yield event
        except UpstreamError as exc:
            failure = dispatch.as_api_error(exc)
            status, error_code = failure.status, failure.code or ""
            raise failure from exc
        except ApiError as refusal:  # a post-call scanner's
            status, error_code = refusal.status, refusal.code or ""
            raise
        except BaseException:
            status, error_code = 499, "client_closed_request"
            raise
        finally:
            tracing.end_stage(output_span, error_code)
            with tracing.stage("settle", self.trace_parent):
                await self.settle(status, error_code, request)

    async def settle(self, status: int, error_code: str, request: ChatRequest) -> None:
        """Stage 8: cache the provider's answer, meter it, keep the conversation. ``request``
        is what was sent (a fallback's, if one answered)."""
        out = self.out
        if self.meter.upstream_called:
            self.meter.upstream_ms = (time.perf_counter() - self._upstream_started) * 1000
        usage = out.usage
        if usage is None or (usage.prompt_tokens == 0 and usage.completion_tokens == 0):
            usage = Usage(
                chars_to_tokens(inputs.request_chars(request)), estimate_tokens(out.written_text())
            )
        self.usage = usage
        self.meter.tool_calls = out.tool_call_count
        if out.leaked:
            await self.leak_detected(out.leak_kind, out.blocking)
        elif status == 200 and self.meter.upstream_called and self.cacheable:
            # The cache keeps what the provider wrote: placeholders, never restored values.
            await self.remember(
                out.result(raw=True, usage=usage), eligible=self.cache_status == "MISS"
            )
            if self.similar is not None:
                await self.remember_similar(out.result(raw=True, usage=usage))
        self.meter.settled = True
        record = self.meter.record(
            status=status, now=time.perf_counter(), usage=usage, error_code=error_code
        )
        if self.parsed.stream:
            await record  # the client has had every byte already
        else:
            await background.after_answer(record, event="usage_record_failed")
        if status == 200:
            await self.keep_conversation(
                lambda: conversation_text(out.result(raw=False, usage=usage))
            )

    # Guard input -----------------------------------------------------------------------------

    async def screen(self) -> None:
        verdict = guard.screen_input(self.principal, self.parsed.parts(), self.verdicts)
        if verdict.action == "allow":
            return
        result = verdict.result
        assert result is not None  # a flag or a block comes with the score behind it
        blocked = verdict.action == "block"
        await guard.record_event(
            principal=self.principal,
            request_id=self.request_id,
            kind=SecurityEvent.Kind.PROMPT_INJECTION,
            action=SecurityEvent.Action.BLOCKED if blocked else SecurityEvent.Action.FLAGGED,
            alias=self.parsed.alias,
            score=result.score,
            reasons=list(result.reasons),
            text=verdict.text,
            user=self.parsed.user,
        )
        if blocked:
            # The score and the rules that fired stay in the security event and the log: an
            # attacker would tune against them. The client gets the request id to quote.
            raise guard.PromptInjectionDetected(
                "The request was refused: it looks like a prompt-injection attempt "
                f"(request {self.request_id}).",
                param=verdict.param,
            )

    async def scan_input(self) -> None:
        """Pre-call external scanners (``scan``), on what the client sent; also picks this
        request's post-call ones."""
        configured = self.route_plan.scanners
        if not configured:
            return
        tenant_id = self.principal.tenant_id
        self.post_scanners = scan.scanners_for(configured, tenant_id, scan.POST_CALL)
        scanners = scan.scanners_for(configured, tenant_id, scan.PRE_CALL)
        if not scanners:
            return
        with tracing.stage("scan"):
            await scan.enforce(
                principal=self.principal,
                request_id=self.request_id,
                alias=self.parsed.alias,
                user=self.parsed.user,
                phase=scan.PRE_CALL,
                scanners=scanners,
                texts=scan.request_texts(self.parsed.parts()),
            )

    async def scan_output(self) -> None:
        """Post-call external scanners, on the reply as the client would get it."""
        texts = tuple(
            ScanText(param, "assistant", "reply", text) for param, text in self.out.shown_texts()
        )
        with tracing.stage("scan", self.trace_parent):
            await scan.enforce(
                principal=self.principal,
                request_id=self.request_id,
                alias=self.parsed.alias,
                user=self.parsed.user,
                phase=scan.POST_CALL,
                scanners=self.post_scanners,
                texts=texts,
            )

    async def honour_gpc(self) -> None:
        """``Sec-GPC: 1`` on a request that names its end user is that user's opt-out of sale
        and sharing (CCPA); recorded once, off the answer's path."""
        if not self.info.gpc or not self.parsed.user:
            return
        await background.after_answer(
            sync_to_async(_record_gpc)(self.principal.tenant_id, self.parsed.user, self.request_id),
            event="gpc_record_failed",
        )

    # Settle ----------------------------------------------------------------------------------

    async def keep_conversation(self, response: Callable[[], str]) -> None:
        """Store the exchange as a conversation record if the tenant keeps conversations and
        the end user (the request's ``user``) consented; privacy redacts and encrypts it. Runs
        after the answer, off its path (at once when usage records are written at once), and
        retried while the database is unreachable."""
        user = self.parsed.user
        if not user or not self.principal.privacy.store_conversations:
            return
        prompt = "\n".join(
            f"{m.role}: {m.content}"
            for m in self.parsed.messages
            if m.role in CONVERSATION_ROLES and m.content
        )
        reply = response()
        tenant_id, alias, request_id = self.principal.tenant_id, self.parsed.alias, self.request_id
        await background.after_answer_durably(
            lambda attempt: sync_to_async(_store_conversation)(
                tenant_id, user, alias, request_id, prompt, reply, attempt
            ),
            event="conversation_store_failed",
        )

    async def leak_detected(self, kind: str, blocking: bool) -> None:
        await guard.record_event(
            principal=self.principal,
            request_id=self.request_id,
            kind=SecurityEvent.Kind.SYSTEM_PROMPT_LEAK,
            action=SecurityEvent.Action.BLOCKED if blocking else SecurityEvent.Action.FLAGGED,
            alias=self.parsed.alias,
            score=1.0,
            reasons=[
                {
                    "canary": "canary_in_reply",
                    "canary_encoded": "encoded_canary_in_reply",
                    "system_prompt": "system_prompt_in_reply",
                }.get(kind, "canary_in_reply")
            ],
            text="",
        )

    # Dispatch --------------------------------------------------------------------------------

    def dispatch_plan(
        self, target: Target, request: ChatRequest
    ) -> DispatchPlan[ChatRequest, ChatResult]:
        """The routed target, then the alias's fallbacks; the response cache's answer to the
        same request (even one not served normally) if all of them fail."""
        return dispatch.DispatchPlan.from_route(
            self.route_plan,
            request_for=lambda t: request if t is target else self.fallback_request(t),
            cached_answer=self.fallback_answer,
        )

    def fallback_request(self, target: Target) -> ChatRequest:
        """A fallback's request: the routed version's messages and fields as protected (the
        same system prompt, canary and PII policy), with the fallback's model and params."""
        request = upstream_request(target, self.parsed, self.principal)
        assert self.upstream_messages is not None  # set by prepare, before any dispatch
        return dataclasses.replace(
            request, messages=self.upstream_messages, extra=self.upstream_extra
        )

    async def fallback_answer(self) -> ChatResult | None:
        if self.cache_key is None:
            return None
        _, answer = await response_cache.response_cache().lookup(self.cache_key)
        return answer.to_result() if answer is not None else None

    def served(self, outcome: Outcome[ChatRequest]) -> None:
        """Who answered: for the headers and the usage record."""
        self.meter.target = outcome.target  # None for a cached or degraded answer: cost 0
        self.meter.cache_hit = outcome.source == dispatch.CACHE
        self.meter.upstream_attempts = outcome.attempts
        self.meter.fallback_reason = outcome.fallback_reason
        self.meter.degraded = outcome.degraded
        self.served_by = outcome.deployment
        # Only the routed deployment's own answers are cached (the key names it).
        self.cacheable = outcome.source == dispatch.UPSTREAM and not outcome.fallback_reason

    # Cache -----------------------------------------------------------------------------------

    def cache_read(self, target: Target, request: ChatRequest) -> CacheRead | None:
        """An eligible request (temperature 0, or the tenant opted in) is answered from the
        tenant's cache when the same request was answered before. Any other request still
        leaves a copy of its answer for when every provider fails: under the tenant's namespace
        as it is now, before the answer (an invalidation or an erasure meanwhile must make it
        unreachable), so only the namespace is read."""
        key = response_cache.make_key(
            tenant_id=self.principal.tenant_id,
            alias=target.alias,
            version=target.version,
            deployment=target.deployment,
            request=request,
            token=self.verdicts.token,
        )
        eligible = response_cache.is_eligible(
            request,
            nonzero_temperature_allowed=self.principal.cache_nonzero_temperature,
        )
        if not eligible or "no-cache" in self.info.cache_control or not self.store_answers:
            self.cache_status = "BYPASS"
            return CacheRead(key, None) if self.store_answers else None
        return CacheRead(key, _answered_eligibly)

    async def remember(self, result: ChatResult, eligible: bool) -> None:
        """Store a fresh answer. An eligible one is stored before answering (one round trip),
        so the client's next identical request is a hit; others are kept only as a fallback
        for when every provider fails, and go through the write-behind buffer."""
        if (
            self.cache_key is None
            or self.meter.target is None
            or any(c.finish_reason not in {"stop", "length", "tool_calls"} for c in result.choices)
        ):
            return
        target = self.meter.target
        answer = response_cache.CachedAnswer.of(result, target.deployment, target.version, eligible)
        try:
            if eligible:
                await response_cache.response_cache().store(
                    self.cache_key, self.cache_namespace, answer, response_cache.ttl_seconds()
                )
            else:
                response_cache.response_cache().store_later(
                    self.cache_key, self.cache_namespace, answer, response_cache.ttl_seconds()
                )
        except Exception:
            log.warning("cache_store_failed", exc_info=True)

    # Semantic cache ---------------------------------------------------------------------------

    async def look_up_similar(
        self, target: Target, request: ChatRequest, policy: SemanticPolicy
    ) -> response_cache.CachedAnswer | None:
        """An exact-cache miss of an alias that opted in: the stored answer to a similar
        question, when the request is one a similar question's answer may answer (no personal
        data was masked or pseudonymised in it: placeholders differ per request). Any failure
        (the embeddings call, the store) is a normal call, never an error."""
        if (
            self.cache_status != "MISS"
            or self.meter.pii_redactions
            or self.restorer is not None
            or self.cache_key is None
        ):
            return None
        question = semantic_cache.question_for(
            tenant_id=self.principal.tenant_id,
            alias=target.alias,
            version=target.version,
            deployment=target.deployment,
            embeddings_alias=policy.embeddings_alias,
            request=request,
        )
        if question is None:
            return None
        vector = await self._embed(policy.embeddings_alias, question.text)
        if vector is None:
            return None
        self.similar = (question, vector)
        try:
            hit = await semantic_cache.lookup(
                question, self.cache_namespace, vector, policy.threshold
            )
        except Exception:
            log.warning("semantic_cache_lookup_failed", exc_info=True)
            return None
        if hit is None:
            return None
        self.cache_status = "SEMANTIC-HIT"
        self.cache_similarity = hit.similarity
        metrics.record_cache("semantic_hit")
        return hit.answer

    async def _embed(self, alias: str, text: str) -> Any:
        """The question's unit vector through the governed embeddings path (routed, limited,
        metered to the tenant as an embeddings request), or None if that failed."""
        from gateway.pipeline.embeddings import EmbeddingsCall

        call = EmbeddingsCall(
            RequestInfo(
                request_id=self.request_id, route="embeddings", started=time.perf_counter()
            ),
            self.principal,
            ParsedEmbeddings(alias=alias, inputs=[text], user=self.parsed.user),
            for_semantic_cache=True,
        )
        try:
            result = await call.answer()
        except Exception as exc:  # ApiError (limits, upstream) or anything else
            log.warning("semantic_cache_embedding_failed", error=type(exc).__name__)
            return None
        return semantic_cache.as_unit_vector(result.vectors[0]) if result.vectors else None

    async def remember_similar(self, result: ChatResult) -> None:
        assert self.similar is not None
        target = self.meter.target
        if target is None or any(c.finish_reason != "stop" for c in result.choices):
            return
        question, vector = self.similar
        answer = response_cache.CachedAnswer.of(result, target.deployment, target.version, True)
        try:
            await semantic_cache.remember(
                question, self.cache_namespace, vector, answer, response_cache.ttl_seconds()
            )
        except Exception:
            log.warning("semantic_cache_store_failed", exc_info=True)


def _answered_eligibly(answer: response_cache.CachedAnswer) -> bool:
    return answer.eligible


async def _replay(deltas: list[ChatDelta]) -> AsyncIterator[ChatDelta]:
    for delta in deltas:
        yield delta


async def _close(deltas: AsyncIterator[ChatDelta]) -> None:
    close = getattr(deltas, "aclose", None)
    if close is not None:
        await close()
