"""The chat API: OpenAI-compatible ``/v1/chat/completions`` and ``/v1/models``, plus the seed's
simple ``/chat`` and ``/chat-stream`` shapes as thin aliases over the same pipeline.

Each view reads like the pipeline: authenticate, parse and validate, route, check limits,
dispatch, settle. Every failure is an ``ApiError`` rendered as OpenAI's error JSON.
"""

from __future__ import annotations

import asyncio
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
    InvalidRequest,
    MethodNotAllowed,
    ModelNotFound,
    PayloadTooLarge,
)
from gateway.pipeline import dispatch
from gateway.pipeline.authenticate import Principal, authenticate
from gateway.pipeline.route import routing_table
from gateway.pipeline.settle import Meter, estimate_tokens
from gateway.pipeline.validate import ParsedChat, parse_chat_request, parse_json_body
from gateway.providers.base import ChatDelta, ChatMessage, UpstreamError, Usage
from llmplatform.db import fresh_db

log = structlog.get_logger("gateway.api")

View = Callable[..., Awaitable[HttpResponse]]
# Background work a request started (references kept so the tasks are not collected).
_background: set[asyncio.Task] = set()


async def _empty_stream() -> AsyncIterator[ChatDelta]:
    return
    yield  # an async generator that yields nothing


def api_view(method: str) -> Callable[[View], View]:
    """Method check, OpenAI-style errors for everything, and never a bare 500 page."""

    def decorate(view: View) -> View:
        @csrf_exempt
        @functools.wraps(view)
        async def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            try:
                if request.method != method:
                    raise MethodNotAllowed(f"Use {method} for this route.")
                return await view(request, *args, **kwargs)
            except ApiError as exc:
                return exc.response()
            except (OperationalError, InterfaceError):
                log.exception("database_unavailable", path=request.path)
                return ApiError("The service is temporarily unavailable; retry shortly.",
                                code="database_unavailable", status=503,
                                headers={"Retry-After": "1"}).response()
            except Exception:
                log.exception("unhandled_error", path=request.path)
                return ApiError("The server had an error while processing your request.",
                                code="internal_error", status=500).response()

        wrapper.__name__ = view.__name__
        return wrapper

    return decorate


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
        self.meter = Meter(self.request_id, route, principal, started, alias=parsed.alias,
                           streamed=parsed.stream)
        self.completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.cache_status: str | None = None  # HIT | MISS | BYPASS
        self.cache_key: response_cache.CacheKey | None = None
        self.cache_namespace = ""
        self.store_answers = "no-store" not in request.headers.get("Cache-Control", "")
        self.served_by = ""  # x-llmp-deployment when no deployment answered: cache | degraded
        self.cacheable = False

    async def prepare(self):
        principal, parsed = self.principal, self.parsed
        if not principal.may_use(parsed.alias):
            raise ModelNotFound(
                f"The model '{parsed.alias}' does not exist or you do not have access to it.",
                param="model",
            )
        self.route_plan = await routing_table.plan(parsed.alias, parsed.user)
        target = self.meter.target = self.route_plan.primary
        dispatch.check_limits(principal, parsed)
        return target, dispatch.build_request(target, parsed, principal)

    def dispatch_plan(self, target, upstream_request) -> dispatch.DispatchPlan:
        """The routed target, then the alias's fallbacks; the response cache's answer to the
        same request (even one not served normally) if all of them fail."""
        return dispatch.DispatchPlan.from_route(
            self.route_plan,
            request_for=lambda t: upstream_request if t is target
            else dispatch.build_request(t, self.parsed, self.principal),
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
        if self.cache_status == "HIT":
            self.meter.cache_hit = True
            return answer
        return None

    async def remember(self, content: str, finish: str, usage: Usage, eligible: bool) -> None:
        """Store a fresh answer. An eligible one is stored before answering (one round trip),
        so the client's next identical request is a hit; others are kept only as a fallback
        for when every provider fails, and are stored in the background."""
        if self.cache_key is None or self.meter.target is None or finish not in {"stop",
                                                                                  "length"}:
            return
        target = self.meter.target
        answer = response_cache.CachedAnswer(content, finish, usage, target.deployment,
                                             target.version, eligible)
        if eligible:
            await self._store(answer)
        else:
            task = asyncio.get_running_loop().create_task(self._store(answer))
            _background.add(task)
            task.add_done_callback(_background.discard)

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
        target, upstream_request = await self.prepare()
        cached = await self.lookup_cache(target, upstream_request)
        if cached is not None:
            await self.meter.record(status=200, now=time.perf_counter(), usage=cached.usage)
            return cached.content, cached.finish_reason, cached.usage
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
            usage = Usage(
                estimate_tokens("".join(m.content for m in upstream_request.messages)),
                estimate_tokens(result.content),
            )
        if self.cacheable:
            await self.remember(result.content, result.finish_reason, usage,
                                eligible=self.cache_status == "MISS")
        await self.meter.record(status=200, now=time.perf_counter(), usage=usage)
        return result.content, result.finish_reason, usage

    async def open_stream(self) -> tuple[ChatDelta, AsyncIterator[ChatDelta], list[ChatMessage]]:
        """Start the upstream stream and wait for its first delta, so that a failure before any
        byte reaches the client is still a proper HTTP error status."""
        target, upstream_request = await self.prepare()
        cached = await self.lookup_cache(target, upstream_request)
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
        try:
            delta = first
            while True:
                if delta.usage is not None:
                    usage = delta.usage
                if delta.content:
                    text.append(delta.content)
                if delta.finish_reason:
                    finish = delta.finish_reason
                for event in render.delta(delta):
                    yield event
                try:
                    delta = await deltas.__anext__()
                except StopAsyncIteration:
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
                usage = Usage(estimate_tokens("".join(m.content for m in messages)),
                              estimate_tokens("".join(text)))
            if status == 200 and self.meter.upstream_called and self.cacheable:
                await self.remember("".join(text), finish or "stop", usage,
                              eligible=self.cache_status == "MISS")
            await self.meter.record(status=status, now=time.perf_counter(), usage=usage,
                                    error_code=error_code)
        for event in render.finish(finish or "stop", usage):
            yield event


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
    principal = await authenticate(request.headers.get("Authorization", ""))
    principal.require_scope(scope)
    return principal


async def _run_chat(request: HttpRequest, principal: Principal, parsed: ParsedChat,
                    route: str, started: float, render_plain, render_stream) -> HttpResponse:
    call = ChatCall(request, principal, parsed, route, started)
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
    await sync_to_async(_invalidate_for_tenant)(principal, alias)
    return _json({"object": "cache.invalidation", "model": alias, "invalidated": True})


@fresh_db
def _invalidate_for_tenant(principal: Principal, alias: str | None) -> None:
    from gateway import services
    from llmplatform.models import Tenant

    tenant = Tenant.objects.get(pk=principal.tenant_id)
    services.cache_invalidate_tenant(actor=f"api_key:{principal.key_name}#{principal.key_id}",
                                     tenant=tenant, alias_name=alias)
