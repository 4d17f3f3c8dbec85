"""The chat API: OpenAI-compatible ``/v1/chat/completions`` and ``/v1/models``, plus the seed's
simple ``/chat`` and ``/chat-stream`` shapes as thin aliases over the same pipeline.

Each view reads like the pipeline: authenticate, parse and validate, route, check limits,
dispatch, settle. Every failure is an ``ApiError`` rendered as OpenAI's error JSON.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import orjson
import structlog
from asgiref.sync import sync_to_async
from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from gateway import cache as response_cache
from gateway import metrics
from gateway.errors import (
    ApiError,
    InternalError,
    InvalidRequest,
    MethodNotAllowed,
    ModelNotFound,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
)
from gateway.models import SecurityEvent
from gateway.pipeline import admit, background, dispatch, guard, inputs, pii
from gateway.pipeline.authenticate import Principal, authenticate
from gateway.pipeline.route import routing_table
from gateway.pipeline.settle import Meter, chars_to_tokens, count_redactions, estimate_tokens
from gateway.pipeline.validate import ParsedChat, parse_chat_request, parse_json_body
from gateway.providers.base import ChatDelta, ChatMessage, UpstreamError, Usage
from llmplatform.db import fresh_db
from llmplatform.request_context import client_ip

log = structlog.get_logger("gateway.api")
# What a stored conversation record keeps: the exchange, not the app's system prompt.
CONVERSATION_ROLES = frozenset({"user", "tool", "assistant"})

View = Callable[..., Awaitable[HttpResponse]]


async def _empty_stream() -> AsyncIterator[ChatDelta]:
    return
    yield  # an async generator that yields nothing


def api_view(*methods: str) -> Callable[[View], View]:
    """Method check, OpenAI-style errors for everything, and never a bare 500 page."""

    def decorate(view: View) -> View:
        @csrf_exempt
        @functools.wraps(view)
        async def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            try:
                if request.method not in methods:
                    # RFC 9110: a 405 names the methods the route has.
                    raise MethodNotAllowed(f"Use {' or '.join(methods)} for this route.",
                                           headers={"Allow": ", ".join(methods)})
                return await view(request, *args, **kwargs)
            except ApiError as exc:
                return exc.response()
            except (OperationalError, InterfaceError):
                log.exception("database_unavailable", path=request.path)
                return ServiceUnavailable("The service is temporarily unavailable; retry shortly.",
                                          code="database_unavailable",
                                          headers={"Retry-After": "1"}).response()
            except Exception:
                log.exception("unhandled_error", path=request.path)
                return InternalError(
                    "The server had an error while processing your request.").response()

        wrapper.__name__ = view.__name__
        return wrapper

    return decorate


@fresh_db
def _record_gpc(tenant_id: int, user: str, request_id: str) -> None:
    from privacy import selectors, services

    subject = selectors.subject_for(tenant_id, user)
    if subject is not None and subject.do_not_sell:
        return
    if subject is None:
        from llmplatform.models import Tenant

        subject = services.subject_get_or_create(tenant=Tenant.objects.get(pk=tenant_id),
                                                 external_id=user)
    services.consent_apply_gpc(subject=subject, request_id=request_id)


@fresh_db
def _store_conversation(tenant_id: int, user: str, alias: str, request_id: str, prompt: str,
                        response: str, attempt: int = 1) -> None:
    from llmplatform.models import Tenant
    from privacy.models import Conversation
    from privacy.services import conversation_store

    if attempt > 1 and Conversation.objects.filter(tenant_id=tenant_id,
                                                   request_id=request_id).exists():
        return  # an earlier attempt committed before its connection dropped
    conversation_store(tenant=Tenant.objects.get(pk=tenant_id), external_id=user, alias=alias,
                       request_id=request_id, prompt=prompt, response=response)


def _json(data: dict, status: int = 200, headers: dict[str, str] | None = None) -> HttpResponse:
    response = HttpResponse(orjson.dumps(data), status=status, content_type="application/json")
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def _read_json(request: HttpRequest) -> dict:
    try:
        body = request.body
    except RequestDataTooBig as exc:
        raise PayloadTooLarge("The request body is too large.") from exc
    return parse_json_body(body)


def _refuse_nul(value, param: str):
    """PostgreSQL text cannot hold NUL (U+0000): a value with one that would be stored or looked
    up is refused as invalid here (as DRF's CharField does for the chat API's fields) instead
    of failing in the database. Walks JSON bodies; returns the value."""
    if isinstance(value, str):
        if "\x00" in value:
            raise InvalidRequest(f"'{param}' must not contain NUL characters.", param=param,
                                 code="invalid_value")
    elif isinstance(value, dict):
        for key, item in value.items():
            _refuse_nul(item, f"{param}.{key}" if param else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _refuse_nul(item, f"{param}[{index}]")
    return value


def _request_id(request: HttpRequest) -> str:
    return getattr(request, "request_id", "") or f"req_{uuid.uuid4().hex}"


def _usage_json(usage: Usage) -> dict:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def _sse(data: dict | str) -> bytes:
    payload = data if isinstance(data, str) else orjson.dumps(data).decode()
    return f"data: {payload}\n\n".encode()


class ChatCall:
    """One chat request going through the pipeline, for plain and streamed answers."""

    def __init__(self, request: HttpRequest, principal: Principal, parsed: ParsedChat,
                 route: str, started: float) -> None:
        self.request = request
        self.principal = principal
        self.parsed = parsed
        self.request_id = _request_id(request)
        # The alias is metered (metrics label, log line, usage record) once it is routed: an
        # unknown "model" is whatever the client sent (an email, a pasted key), never a label.
        self.meter = Meter(self.request_id, route, principal, started, alias="",
                           streamed=parsed.stream)
        self.completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.cache_status: str | None = None  # HIT | MISS | BYPASS
        self.cache_key: response_cache.CacheKey | None = None
        self.cache_namespace = ""
        self.store_answers = "no-store" not in request.headers.get("Cache-Control", "")
        self.served_by = ""  # x-llmp-deployment when no deployment answered: cache | degraded
        self.cacheable = False
        self.admission = None
        self.leak_guard: guard.LeakGuard | None = None
        self.restorer: pii.Restorer | None = None
        # The messages as the provider may see them (PII masked or pseudonymised).
        self.upstream_messages: list[ChatMessage] | None = None
        self.upstream_extra: dict = {}

    async def prepare(self):
        principal, parsed = self.principal, self.parsed
        if not principal.may_use(parsed.alias):
            raise ModelNotFound(
                "The model does not exist or you do not have access to it.", param="model",
            )
        self.route_plan = await routing_table.plan(parsed.alias, parsed.user)
        target = self.meter.target = self.route_plan.primary
        self.meter.alias = parsed.alias
        self.meter.version = target.version
        dispatch.check_limits(principal, parsed)
        if principal.tier.leak_mode != "off" and (
                target.system_prompt or any(m.role in guard.SYSTEM_ROLES for m in parsed.messages)):
            self.leak_guard = guard.LeakGuard(
                guard.canary_for(principal, target.alias, target.version),
                principal.tier.leak_mode,
                system_prompt="\n".join([target.system_prompt or "", *(
                    m.content for m in parsed.messages if m.role in guard.SYSTEM_ROLES)]))
        upstream_request = dispatch.build_request(target, parsed, principal)
        # PII policy first (over everything the client sent, not the route's own system
        # prompt), then the canary, so masking can never touch it.
        protected, self.restorer = pii.protect(principal, upstream_request,
                                               keep=1 if target.system_prompt else 0)
        if protected is not upstream_request:
            self.meter.pii_redactions = count_redactions(upstream_request.messages,
                                                         protected.messages)
        if self.leak_guard is not None:
            protected = dataclasses.replace(
                protected, messages=guard.add_canary(protected.messages, self.leak_guard.canary))
        upstream_request = protected
        self.upstream_messages, self.upstream_extra = upstream_request.messages, protected.extra
        # Admission and the cache lookup are independent Redis round trips: made at once.
        # Admission comes before the screen, so screened-out prompts still count against the
        # request limits.
        admission, cached = await asyncio.gather(
            admit.admit(principal, parsed.user, target, upstream_request),
            self.lookup_cache(target, upstream_request), return_exceptions=True)
        if isinstance(admission, BaseException):
            raise admission
        self.admission = self.meter.admission = admission
        if isinstance(cached, BaseException):
            raise cached
        await self.screen()
        if cached is not None:
            self.meter.cache_hit = True
        return target, upstream_request, cached

    def build_request(self, target):
        """A fallback's request: the routed version's messages and fields as protected (the
        same system prompt, canary and PII policy), with the fallback's model and params."""
        request = dispatch.build_request(target, self.parsed, self.principal)
        return dataclasses.replace(request, messages=self.upstream_messages,
                                   extra=self.upstream_extra)

    async def screen(self) -> None:
        verdict = guard.screen_input(self.principal, self.parsed.parts())
        if verdict.action == "allow":
            return
        result = verdict.result
        blocked = verdict.action == "block"
        await guard.record_event(
            principal=self.principal, request_id=self.request_id,
            kind=SecurityEvent.Kind.PROMPT_INJECTION,
            action=SecurityEvent.Action.BLOCKED if blocked else SecurityEvent.Action.FLAGGED,
            alias=self.parsed.alias, score=result.score, reasons=list(result.reasons),
            text=verdict.text, user=self.parsed.user,
        )
        if blocked:
            # The score and the rules that fired stay in the security event and the log: an
            # attacker would tune against them. The client gets the request id to quote.
            raise guard.PromptInjectionDetected(
                "The request was refused: it looks like a prompt-injection attempt "
                f"(request {self.request_id}).",
                param=verdict.param,
            )

    async def honour_gpc(self) -> None:
        """``Sec-GPC: 1`` on a request that names its end user is that user's opt-out of sale
        and sharing (CCPA); recorded once, off the answer's path."""
        if self.request.headers.get("Sec-GPC") != "1" or not self.parsed.user:
            return
        await background.after_answer(
            sync_to_async(_record_gpc)(self.principal.tenant_id, self.parsed.user,
                                       self.request_id), event="gpc_record_failed")

    async def keep_conversation(self, response: str) -> None:
        """Store the exchange as a conversation record if the tenant keeps conversations and
        the end user (the request's ``user``) consented; privacy redacts and encrypts it. Runs
        after the answer, off its path (at once when usage records are written at once), and
        retried while the database is unreachable."""
        user = self.parsed.user
        if not user or not self.principal.privacy.store_conversations:
            return
        prompt = "\n".join(f"{m.role}: {m.content}" for m in self.parsed.messages
                           if m.role in CONVERSATION_ROLES and m.content)
        tenant_id, alias, request_id = self.principal.tenant_id, self.parsed.alias, self.request_id
        await background.after_answer_durably(
            lambda attempt: sync_to_async(_store_conversation)(
                tenant_id, user, alias, request_id, prompt, response, attempt),
            event="conversation_store_failed")

    async def leak_detected(self) -> None:
        guard_ = self.leak_guard
        await guard.record_event(
            principal=self.principal, request_id=self.request_id,
            kind=SecurityEvent.Kind.SYSTEM_PROMPT_LEAK,
            action=SecurityEvent.Action.BLOCKED if guard_.blocking
            else SecurityEvent.Action.FLAGGED,
            alias=self.parsed.alias, score=1.0,
            reasons=[{"canary": "canary_in_reply", "canary_encoded": "encoded_canary_in_reply",
                      "system_prompt": "system_prompt_in_reply"}.get(guard_.kind,
                                                                      "canary_in_reply")],
            text="",
        )

    def dispatch_plan(self, target, upstream_request) -> dispatch.DispatchPlan:
        """The routed target, then the alias's fallbacks; the response cache's answer to the
        same request (even one not served normally) if all of them fail."""
        return dispatch.DispatchPlan.from_route(
            self.route_plan,
            request_for=lambda t: upstream_request if t is target else self.build_request(t),
            cached_answer=self.fallback_answer,
        )

    async def fallback_answer(self):
        if self.cache_key is None:
            return None
        _, answer = await response_cache.response_cache().lookup(self.cache_key)
        return answer.to_result() if answer is not None else None

    def served(self, outcome: dispatch.Outcome) -> None:
        """Who answered: for the headers and the usage record."""
        self.meter.target = outcome.target  # None for a cached or degraded answer: cost 0
        self.meter.cache_hit = outcome.source == dispatch.CACHE
        self.meter.upstream_attempts = outcome.attempts
        self.meter.fallback_reason = outcome.fallback_reason
        self.meter.degraded = outcome.degraded
        self.served_by = outcome.deployment
        # Only the routed deployment's own answers are cached (the key names it).
        self.cacheable = outcome.source == dispatch.UPSTREAM and not outcome.fallback_reason

    async def lookup_cache(self, target, upstream_request) -> response_cache.CachedAnswer | None:
        """An eligible request (temperature 0, or the tenant opted in) is answered from the
        tenant's cache when the same request was answered before."""
        self.cache_key = response_cache.make_key(
            tenant_id=self.principal.tenant_id, alias=target.alias, version=target.version,
            deployment=target.deployment, request=upstream_request,
        )
        eligible = response_cache.is_eligible(
            upstream_request,
            nonzero_temperature_allowed=self.principal.cache_nonzero_temperature,
        )
        cache_control = self.request.headers.get("Cache-Control", "")
        if not eligible or "no-cache" in cache_control or not self.store_answers:
            self.cache_status = "BYPASS"
            self.cache_key = self.cache_key if self.store_answers else None
            return None
        try:
            self.cache_namespace, answer = await response_cache.response_cache().lookup(
                self.cache_key)
        except Exception:  # a cache outage must not fail the request: serve from upstream
            log.warning("cache_lookup_failed", exc_info=True)
            self.cache_key = None
            self.cache_status = "BYPASS"
            return None
        self.cache_status = "HIT" if answer is not None and answer.eligible else "MISS"
        metrics.record_cache(self.cache_status.lower())
        return answer if self.cache_status == "HIT" else None

    async def remember(self, content: str, finish: str, usage: Usage, eligible: bool) -> None:
        """Store a fresh answer. An eligible one is stored before answering (one round trip),
        so the client's next identical request is a hit; others are kept only as a fallback
        for when every provider fails, and go through the write-behind buffer."""
        if self.cache_key is None or self.meter.target is None or finish not in {"stop",
                                                                                  "length"}:
            return
        target = self.meter.target
        answer = response_cache.CachedAnswer(content, finish, usage, target.deployment,
                                             target.version, eligible)
        if eligible:
            await self._store(answer)
            return
        try:
            response_cache.response_cache().store_later(
                self.cache_key, self.cache_namespace, answer, response_cache.ttl_seconds())
        except Exception:
            log.warning("cache_store_failed", exc_info=True)

    async def _store(self, answer: response_cache.CachedAnswer) -> None:
        try:
            await response_cache.response_cache().store(
                self.cache_key, self.cache_namespace, answer, response_cache.ttl_seconds())
        except Exception:
            log.warning("cache_store_failed", exc_info=True)

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

    async def fail(self, exc: ApiError) -> HttpResponse:
        await self.meter.record(status=exc.status, now=time.perf_counter(),
                                error_code=exc.code or "")
        response = exc.response()
        for name, value in self.headers().items():
            response[name] = value
        return response

    async def complete(self):
        """(content, finish_reason, usage) of a plain answer; raises ApiError."""
        target, upstream_request, cached = await self.prepare()
        if cached is not None:
            await self.settle_after_answer(cached.usage)
            content = (self.restorer.whole(cached.content) if self.restorer is not None
                       else cached.content)
            await self.keep_conversation(content)
            return content, cached.finish_reason, cached.usage
        upstream_started = time.perf_counter()
        self.meter.upstream_called = True
        try:
            served = await dispatch.complete(self.dispatch_plan(target, upstream_request))
        finally:
            self.meter.upstream_ms = (time.perf_counter() - upstream_started) * 1000
        self.served(served)
        result, upstream_request = served.result, served.request
        usage = result.usage
        if usage.prompt_tokens == 0 and usage.completion_tokens == 0:
            usage = Usage(chars_to_tokens(inputs.request_chars(upstream_request)),
                          estimate_tokens(result.content))
        content, finish = result.content, result.finish_reason
        if self.leak_guard is not None:
            content = self.leak_guard.check(content)
            if self.leak_guard.leaked:
                await self.leak_detected()
                if self.leak_guard.blocking:
                    finish = "content_filter"
        if self.cacheable and not (self.leak_guard and self.leak_guard.leaked):
            # The cache keeps what the provider saw: placeholders, never restored values.
            await self.remember(content, finish, usage, eligible=self.cache_status == "MISS")
        if self.restorer is not None:
            content = self.restorer.whole(content)
        await self.settle_after_answer(usage)
        await self.keep_conversation(content)
        return content, finish, usage

    async def settle_after_answer(self, usage: Usage) -> None:
        """Meter a plain answer (usage record, limit corrections, metrics, log line) after it
        is sent: its time is fixed now, the work is done off the answer's path."""
        await background.after_answer(
            self.meter.record(status=200, now=time.perf_counter(), usage=usage),
            event="usage_record_failed")

    async def open_stream(self) -> tuple[ChatDelta, AsyncIterator[ChatDelta], list[ChatMessage]]:
        """Start the upstream stream and wait for its first delta, so that a failure before any
        byte reaches the client is still a proper HTTP error status."""
        target, upstream_request, cached = await self.prepare()
        if cached is not None:
            # A cache hit is replayed as a stream: the whole answer in one content chunk.
            self._upstream_started = time.perf_counter()
            replay = ChatDelta(content=cached.content, finish_reason=cached.finish_reason,
                               usage=cached.usage)
            return replay, _empty_stream(), upstream_request.messages
        self._upstream_started = time.perf_counter()
        self.meter.upstream_called = True
        try:
            served = await dispatch.open_stream(self.dispatch_plan(target, upstream_request))
        except ApiError:
            self.meter.upstream_ms = (time.perf_counter() - self._upstream_started) * 1000
            raise
        self.served(served)
        first, deltas = served.first, served.deltas
        now = time.perf_counter()
        self.meter.upstream_ms = (now - self._upstream_started) * 1000
        self.meter.overhead_ms = self.meter.overhead_now(now)
        return first, deltas, upstream_request.messages

    async def relay(self, first: ChatDelta, deltas: AsyncIterator[ChatDelta],
                    messages: list[ChatMessage], render) -> AsyncIterator[bytes]:
        """Pass deltas on as SSE events (rendered by ``render``) and meter at the end, also
        when the client goes away or the upstream breaks mid-stream."""
        text: list[str] = []
        usage: Usage | None = None
        finish: str | None = None
        status, error_code = 200, ""
        leak = self.leak_guard
        out = OutputFilter(leak, self.restorer)
        shown_parts: list[str] = []  # what the client saw, for the conversation record
        try:
            delta = first
            while True:
                if delta.usage is not None:
                    usage = delta.usage
                if delta.content:
                    text.append(delta.content)
                if delta.finish_reason:
                    finish = delta.finish_reason
                if out.active:
                    shown = out.feed(delta.content) if delta.content else ""
                    if out.stopped:
                        finish = "content_filter"
                        shown += out.flush()
                    delta = dataclasses.replace(delta, content=shown)
                if delta.content:
                    shown_parts.append(delta.content)
                for event in render.delta(delta):
                    yield event
                if out.stopped:
                    close = getattr(deltas, "aclose", None)
                    if close is not None:
                        await close()
                    break
                try:
                    delta = await deltas.__anext__()
                except StopAsyncIteration:
                    rest = out.flush() if out.active else ""
                    if rest:
                        shown_parts.append(rest)
                        for event in render.delta(ChatDelta(content=rest)):
                            yield event
                    break
        except UpstreamError as exc:
            failure = dispatch.as_api_error(exc)
            status, error_code = failure.status, failure.code or ""
            yield _sse(failure.body())
            return
        except BaseException:
            status, error_code = 499, "client_closed_request"
            raise
        finally:
            if self.meter.upstream_called:
                self.meter.upstream_ms = (time.perf_counter() - self._upstream_started) * 1000
            if usage is None or (usage.prompt_tokens == 0 and usage.completion_tokens == 0):
                sent = sum(len(p.text) for p in inputs.parts(messages, self.parsed.extra))
                usage = Usage(chars_to_tokens(sent),
                              estimate_tokens("".join(text)))
            if leak is not None and leak.leaked:
                await self.leak_detected()
            elif status == 200 and self.meter.upstream_called and self.cacheable:
                await self.remember("".join(text), finish or "stop", usage,
                              eligible=self.cache_status == "MISS")
            await self.meter.record(status=status, now=time.perf_counter(), usage=usage,
                                    error_code=error_code)
            if status == 200:
                await self.keep_conversation("".join(shown_parts))
        for event in render.finish(finish or "stop", usage):
            yield event


class OutputFilter:
    """A streamed reply on its way to the client: the canary check first (on what the provider
    wrote), then placeholders restored to the values they stand for."""

    def __init__(self, leak: guard.LeakGuard | None, restorer: pii.Restorer | None) -> None:
        self.leak = leak
        self.restorer = restorer
        self.active = leak is not None or restorer is not None

    @property
    def stopped(self) -> bool:
        return self.leak is not None and self.leak.leaked and self.leak.blocking

    def feed(self, chunk: str) -> str:
        if self.leak is not None:
            chunk = self.leak.feed(chunk)
        if self.restorer is not None and chunk:
            chunk = self.restorer.feed(chunk)
        return chunk

    def flush(self) -> str:
        rest = self.leak.flush() if self.leak is not None else ""
        if self.restorer is not None:
            rest = (self.restorer.feed(rest) if rest else "") + self.restorer.flush()
        return rest


class OpenAIChunks:
    """Renders deltas as OpenAI ``chat.completion.chunk`` events."""

    def __init__(self, call: ChatCall) -> None:
        self.base = {
            "id": call.completion_id,
            "object": "chat.completion.chunk",
            "created": call.created,
            "model": call.parsed.alias,
            "system_fingerprint": None,
        }
        self.include_usage = call.parsed.include_usage
        self.started = False

    def _chunk(self, delta: dict, finish: str | None) -> bytes:
        chunk = {**self.base, "choices": [
            {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        ]}
        if self.include_usage:
            chunk["usage"] = None
        return _sse(chunk)

    def delta(self, delta: ChatDelta) -> list[bytes]:
        events = []
        if not self.started:
            self.started = True
            events.append(self._chunk({"role": "assistant", "content": "", "refusal": None},
                                      None))
        if delta.content:
            events.append(self._chunk({"content": delta.content}, None))
        return events

    def finish(self, finish_reason: str, usage: Usage) -> list[bytes]:
        events = [self._chunk({}, finish_reason)]
        if self.include_usage:
            events.append(_sse({**self.base, "choices": [], "usage": _usage_json(usage)}))
        events.append(_sse("[DONE]"))
        return events


class SimpleChunks:
    """Renders deltas as the seed's simple ``{"delta": {"text": ...}}`` events."""

    def delta(self, delta: ChatDelta) -> list[bytes]:
        return [_sse({"delta": {"text": delta.content}})] if delta.content else []

    def finish(self, finish_reason: str, usage: Usage) -> list[bytes]:
        return [_sse({"finish_reason": finish_reason, "usage": _usage_json(usage)}),
                _sse("[DONE]")]


def _sse_response(call: ChatCall, events: AsyncIterator[bytes]) -> StreamingHttpResponse:
    response = StreamingHttpResponse(events, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    for name, value in call.headers().items():
        response[name] = value
    return response


async def _authenticated(request: HttpRequest, scope: str) -> Principal:
    principal = await authenticate(request.headers.get("Authorization", ""),
                                   client_ip(request.META))
    principal.require_scope(scope)
    return principal


async def _run_chat(request: HttpRequest, principal: Principal, parsed: ParsedChat,
                    route: str, started: float, render_plain, render_stream) -> HttpResponse:
    call = ChatCall(request, principal, parsed, route, started)
    await call.honour_gpc()
    try:
        if parsed.stream:
            first, deltas, messages = await call.open_stream()
            return _sse_response(call, call.relay(first, deltas, messages, render_stream(call)))
        content, finish, usage = await call.complete()
    except ApiError as exc:
        return await call.fail(exc)
    return _json(render_plain(call, content, finish, usage), headers=call.headers())


def _openai_completion(call: ChatCall, content: str, finish: str, usage: Usage) -> dict:
    body = {
        "id": call.completion_id,
        "object": "chat.completion",
        "created": call.created,
        "model": call.parsed.alias,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content, "refusal": None},
            "logprobs": None,
            "finish_reason": finish,
        }],
        "usage": _usage_json(usage),
        "system_fingerprint": None,
    }
    if call.meter.degraded:
        body["status"] = "degraded"
    return body


def _simple_completion(call: ChatCall, content: str, finish: str, usage: Usage) -> dict:
    body = {"response": content, "model": call.parsed.alias, "usage": _usage_json(usage)}
    if call.meter.degraded:
        body["status"] = "degraded"  # the seed's degraded reply (best practices 2.4)
    return body


@api_view("POST")
async def chat_completions(request: HttpRequest) -> HttpResponse:
    started = time.perf_counter()
    principal = await _authenticated(request, "chat")
    parsed = parse_chat_request(_read_json(request))
    return await _run_chat(request, principal, parsed, "chat.completions", started,
                           _openai_completion, OpenAIChunks)


def _parse_simple(data: dict, *, stream: bool) -> ParsedChat:
    prompt = data.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidRequest("'prompt' must be a non-empty string.", param="prompt",
                             code="invalid_value")
    unknown = sorted(set(data) - {"prompt", "model", "user", "temperature", "max_tokens"})
    if unknown:
        raise InvalidRequest(f"Unrecognized request argument supplied: {unknown[0]}",
                             param=unknown[0], code="unknown_parameter")
    body = {
        "model": data.get("model", "default"),
        "messages": [{"role": "user", "content": prompt}],
        "stream": stream,
        **{k: data[k] for k in ("user", "temperature", "max_tokens") if k in data},
    }
    return parse_chat_request(body)


@api_view("POST")
async def simple_chat(request: HttpRequest) -> HttpResponse:
    started = time.perf_counter()
    principal = await _authenticated(request, "chat")
    parsed = _parse_simple(_read_json(request), stream=False)
    return await _run_chat(request, principal, parsed, "chat", started, _simple_completion,
                           lambda call: SimpleChunks())


@api_view("POST")
async def simple_chat_stream(request: HttpRequest) -> HttpResponse:
    started = time.perf_counter()
    principal = await _authenticated(request, "chat")
    parsed = _parse_simple(_read_json(request), stream=True)
    return await _run_chat(request, principal, parsed, "chat-stream", started,
                           _simple_completion, lambda call: SimpleChunks())


@api_view("GET")
async def list_models(request: HttpRequest) -> HttpResponse:
    principal = await _authenticated(request, "models:read")
    routes = await routing_table.routes()
    data = [
        {"id": name, "object": "model", "created": route.created, "owned_by": "llmplatform"}
        for name, route in sorted(routes.items())
        if principal.may_use(name)
    ]
    return _json({"object": "list", "data": data})


@api_view("POST")
async def invalidate_cache(request: HttpRequest) -> HttpResponse:
    """``POST /v1/cache/invalidate {"model": "default"}``: the calling tenant's cached answers
    (for one alias, or all when ``model`` is omitted) stop being served. Needs the admin scope."""
    principal = await _authenticated(request, "admin")
    body = _read_json(request) if request.body else {}
    alias = body.get("model")
    if alias is not None and not isinstance(alias, str):
        raise InvalidRequest("'model' must be a string.", param="model", code="invalid_value")
    _refuse_nul(alias, "model")
    await sync_to_async(_invalidate_for_tenant)(principal, alias)
    return _json({"object": "cache.invalidation", "model": alias, "invalidated": True})


@fresh_db
def _invalidate_for_tenant(principal: Principal, alias: str | None) -> None:
    from gateway import services
    from llmplatform.models import Tenant

    tenant = Tenant.objects.get(pk=principal.tenant_id)
    services.cache_invalidate_tenant(actor=f"api_key:{principal.key_name}#{principal.key_id}",
                                     tenant=tenant, alias_name=alias)


# --- the privacy API: consent and subject registration for tenants' apps --------------------

def _privacy_call(handler, *args, **kwargs) -> dict:
    from django.core.exceptions import ValidationError

    try:
        return handler(*args, **kwargs)
    except (ValueError, ValidationError) as exc:
        message = exc.messages[0] if isinstance(exc, ValidationError) else str(exc)
        raise InvalidRequest(message[:1].upper() + message[1:], code="invalid_value") from exc


@fresh_db
def _consent(principal: Principal, method: str, user: str, body, gpc: bool, request_id: str):
    from privacy.api import handlers

    if method == "GET":
        return _privacy_call(handlers.get_consent, principal.tenant_id, user)
    return _privacy_call(handlers.set_consent, principal.tenant_id, user, body,
                         actor=principal.actor, gpc=gpc, request_id=request_id)


@fresh_db
def _register(principal: Principal, user: str, body):
    from privacy.api import handlers

    return _privacy_call(handlers.register_subject, principal.tenant_id, user, body,
                         actor=principal.actor)


@api_view("GET", "POST")
async def subject_consent(request: HttpRequest, user: str) -> HttpResponse:
    """``GET``/``POST /v1/privacy/subjects/<user>/consent`` (see privacy.api.handlers)."""
    principal = await _authenticated(request, "privacy")
    _refuse_nul(user, "user")
    body = _refuse_nul(_read_json(request), "") if request.method == "POST" else None
    result = await sync_to_async(_consent)(principal, request.method, user, body,
                                           request.headers.get("Sec-GPC") == "1",
                                           _request_id(request))
    return _json(result)


@api_view("PUT")
async def subject_register(request: HttpRequest, user: str) -> HttpResponse:
    """``PUT /v1/privacy/subjects/<user>`` ``{"email": ...}``: register the contact email."""
    principal = await _authenticated(request, "privacy")
    _refuse_nul(user, "user")
    result = await sync_to_async(_register)(principal, user,
                                            _refuse_nul(_read_json(request), ""))
    return _json(result)


def _request_json(request) -> dict:
    from privacy import requests as subject_requests

    return {
        "object": "privacy.subject_request",
        "id": subject_requests.public_id(request),
        "kind": request.kind,
        "law": request.law,
        "state": request.state,
        "received_at": request.received_at.isoformat(),
        "acknowledge_by": request.acknowledge_by.isoformat() if request.acknowledge_by
        else None,
        "due_at": (request.extended_due_at or request.due_at).isoformat()
        if (request.extended_due_at or request.due_at) else None,
        "completed_at": request.completed_at.isoformat() if request.completed_at else None,
    }


@fresh_db
def _create_subject_request(principal: Principal, user: str, body) -> dict:
    from llmplatform.models import Tenant
    from privacy import requests as subject_requests
    from privacy.models import SubjectRequest

    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_value")
    unknown = sorted(set(body) - {"kind", "law"})
    if unknown:
        raise InvalidRequest(f"Unrecognized request argument supplied: {unknown[0]}",
                             param=unknown[0], code="unknown_parameter")
    kind, law = body.get("kind"), body.get("law", "gdpr")
    if kind not in SubjectRequest.Kind.values:
        raise InvalidRequest(f"'kind' must be one of {', '.join(SubjectRequest.Kind.values)}.",
                             param="kind", code="invalid_value")
    if law not in SubjectRequest.Law.values:
        raise InvalidRequest(f"'law' must be one of {', '.join(SubjectRequest.Law.values)}.",
                             param="law", code="invalid_value")
    # A user id the privacy app refuses (too long, blank) is the caller's error, not ours.
    created = _privacy_call(
        subject_requests.subject_request_create,
        tenant=Tenant.objects.get(pk=principal.tenant_id), kind=kind, law=law,
        source=SubjectRequest.Source.API, external_id=user, actor=principal.actor)
    return _request_json(created)


@fresh_db
def _subject_request_status(principal: Principal, request_id: str) -> dict | None:
    from privacy import requests as subject_requests

    found = subject_requests.request_for_public_id(request_id)
    if found is None or found.tenant_id != principal.tenant_id:
        return None
    return _request_json(found)


@api_view("POST")
async def subject_request_create(request: HttpRequest, user: str) -> HttpResponse:
    """``POST /v1/privacy/subjects/<user>/requests`` ``{"kind": "erasure", "law": "gdpr"}``: a
    data-subject request made by the tenant's app for its authenticated user. It is identity-
    verified by the tenant and waits for an officer's approval."""
    principal = await _authenticated(request, "privacy")
    _refuse_nul(user, "user")
    result = await sync_to_async(_create_subject_request)(principal, user,
                                                          _refuse_nul(_read_json(request), ""))
    return _json(result, status=202)


@api_view("GET")
async def subject_request_status(request: HttpRequest, request_id: str) -> HttpResponse:
    """``GET /v1/privacy/requests/<id>``: the state and deadlines of one of the tenant's
    requests (another tenant's request is not found, like a missing one)."""
    principal = await _authenticated(request, "privacy")
    result = await sync_to_async(_subject_request_status)(principal, request_id)
    if result is None:
        raise NotFound("No such request.", param="id")
    return _json(result)
