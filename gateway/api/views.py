"""The API's doors: OpenAI-compatible ``/v1/chat/completions``, ``/v1/embeddings`` and
``/v1/models`` (the Responses API and legacy completions are in ``responses`` and
``completions``), the simple ``/chat`` and ``/chat-stream`` shapes, cache invalidation and
the privacy API.

A door only reads HTTP (the key, the JSON body, a few headers) into the pipeline's types and
renders what the pipeline returns; the request path itself is ``gateway.pipeline`` (see
``gateway.pipeline.chat``). Every failure is an ``ApiError`` rendered as OpenAI's error JSON.
"""

from __future__ import annotations

import base64
import functools
import struct
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import orjson
import structlog
from asgiref.sync import sync_to_async
from django.core.exceptions import RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from gateway.errors import (
    ApiError,
    InternalError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    api_error_for,
)
from gateway.pipeline.authenticate import Principal, authenticate
from gateway.pipeline.chat import ChatCall, Reply, RequestInfo
from gateway.pipeline.embeddings import EmbeddingsCall
from gateway.pipeline.route import AliasRoute, routing_table
from gateway.pipeline.validate import (
    ParsedChat,
    control_free_json,
    parse_chat_request,
    parse_embeddings_request,
    parse_json_body,
    refuse_unknown_fields,
)
from gateway.providers import capabilities
from gateway.providers.base import ChatDelta, ChatResult, Choice, Usage
from llmplatform import tracing
from llmplatform.db import fresh_db
from llmplatform.errors import DomainError
from llmplatform.request_context import client_ip

log = structlog.get_logger("gateway.api")

View = Callable[..., Coroutine[Any, Any, HttpResponseBase]]


def api_view(
    *methods: str, error_response: Callable[[ApiError], HttpResponseBase] = ApiError.response
) -> Callable[[View], View]:
    """Method check, errors for everything in the door's shape (OpenAI's by default), and
    never a bare 500 page."""

    def decorate(view: View) -> View:
        @csrf_exempt
        @functools.wraps(view)
        async def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            try:
                if request.method not in methods:
                    # RFC 9110: a 405 names the methods the route has.
                    raise MethodNotAllowed(
                        f"Use {' or '.join(methods)} for this route.",
                        headers={"Allow": ", ".join(methods)},
                    )
                return await view(request, *args, **kwargs)
            except ApiError as exc:
                return error_response(exc)
            except (OperationalError, InterfaceError):
                log.exception("database_unavailable", path=request.path)
                return error_response(
                    ServiceUnavailable(
                        "The service is temporarily unavailable; retry shortly.",
                        code="database_unavailable",
                        headers={"Retry-After": "1"},
                    )
                )
            except Exception:
                log.exception("unhandled_error", path=request.path)
                return error_response(
                    InternalError("The server had an error while processing your request.")
                )

        wrapper.__name__ = view.__name__
        return wrapper

    return decorate


def _json(data: dict, status: int = 200, headers: dict[str, str] | None = None) -> HttpResponse:
    response = HttpResponse(orjson.dumps(data), status=status, content_type="application/json")
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def _read_body(request: HttpRequest) -> bytes:
    try:
        return request.body
    except RequestDataTooBig as exc:
        raise PayloadTooLarge("The request body is too large.") from exc


def _read_json(request: HttpRequest) -> dict:
    return parse_json_body(_read_body(request))


def _refuse_nul(value, param: str):
    """PostgreSQL text cannot hold NUL (U+0000): a value with one that would be stored or looked
    up is refused as invalid here (as DRF's CharField does for the chat API's fields) instead
    of failing in the database. Walks JSON bodies; returns the value."""
    if isinstance(value, str):
        if "\x00" in value:
            raise InvalidRequest(
                f"'{param}' must not contain NUL characters.", param=param, code="invalid_value"
            )
    elif isinstance(value, dict):
        for key, item in value.items():
            _refuse_nul(item, f"{param}.{key}" if param else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _refuse_nul(item, f"{param}[{index}]")
    return value


def _request_id(request: HttpRequest) -> str:
    return getattr(request, "request_id", "") or f"req_{uuid.uuid4().hex}"


def _request_info(request: HttpRequest, route: str, started: float) -> RequestInfo:
    return RequestInfo(
        request_id=_request_id(request),
        route=route,
        started=started,
        cache_control=request.headers.get("Cache-Control", ""),
        gpc=request.headers.get("Sec-GPC") == "1",
    )


def _usage_json(usage: Usage) -> dict:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def _sse(data: dict | str) -> bytes:
    payload = data if isinstance(data, str) else orjson.dumps(data).decode()
    return f"data: {payload}\n\n".encode()


def _logprobs_json(logprobs: dict | None) -> dict | None:
    if not logprobs:
        return None
    return {
        "content": logprobs.get("content"),
        "refusal": logprobs.get("refusal"),
        **{k: v for k, v in logprobs.items() if k not in ("content", "refusal")},
    }


# --- rendering: OpenAI's chat completion and chunk shapes, and the simple ones -------------


def _message_json(choice: Choice) -> dict[str, Any]:
    """The assistant message whole, as OpenAI writes it."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": choice.content
        if choice.content or not (choice.tool_calls or choice.refusal)
        else None,
        "refusal": choice.refusal,
    }
    if choice.tool_calls:
        message["tool_calls"] = choice.tool_calls
    return message


def _openai_completion(call: ChatCall, result: ChatResult) -> dict:
    body = {
        "id": call.completion_id,
        "object": "chat.completion",
        "created": call.created,
        "model": call.parsed.alias,
        "choices": [
            {
                "index": choice.index,
                "message": _message_json(choice),
                "logprobs": _logprobs_json(choice.logprobs),
                "finish_reason": choice.finish_reason,
            }
            for choice in result.choices
        ],
        "usage": _usage_json(result.usage),
        "system_fingerprint": None,
    }
    if call.meter.degraded:
        body["status"] = "degraded"
    return body


def _simple_completion(call: ChatCall, result: ChatResult) -> dict:
    body = {
        "response": result.content,
        "model": call.parsed.alias,
        "usage": _usage_json(result.usage),
    }
    if call.meter.degraded:
        body["status"] = "degraded"  # the alias's fixed reply, marked so clients can tell
    return body


class OpenAIChunks:
    """Renders deltas as OpenAI ``chat.completion.chunk`` events: a role chunk opens each
    choice, then its content, refusal, tool-call fragments and logprobs as they come, and a
    chunk with its ``finish_reason``."""

    def __init__(self, call: ChatCall) -> None:
        self.base = {
            "id": call.completion_id,
            "object": "chat.completion.chunk",
            "created": call.created,
            "model": call.parsed.alias,
            "system_fingerprint": None,
        }
        self.include_usage = call.parsed.include_usage
        self.opened: set[int] = set()

    def _chunk(
        self, index: int, delta: dict, finish: str | None, logprobs: dict | None = None
    ) -> bytes:
        chunk = {
            **self.base,
            "choices": [
                {
                    "index": index,
                    "delta": delta,
                    "logprobs": _logprobs_json(logprobs),
                    "finish_reason": finish,
                }
            ],
        }
        if self.include_usage:
            chunk["usage"] = None
        return _sse(chunk)

    def delta(self, delta: ChatDelta) -> list[bytes]:
        events = []
        index = delta.index
        if index not in self.opened:
            self.opened.add(index)
            events.append(
                self._chunk(index, {"role": "assistant", "content": "", "refusal": None}, None)
            )
        body: dict[str, Any] = {}
        if delta.content:
            body["content"] = delta.content
        if delta.refusal:
            body["refusal"] = delta.refusal
        if delta.tool_calls:
            body["tool_calls"] = delta.tool_calls
        if body or delta.logprobs:
            events.append(self._chunk(index, body, None, delta.logprobs))
        if delta.finish_reason:
            events.append(self._chunk(index, {}, delta.finish_reason))
        return events

    def finish(self, usage: Usage) -> list[bytes]:
        events = []
        if self.include_usage:
            events.append(_sse({**self.base, "choices": [], "usage": _usage_json(usage)}))
        events.append(_sse("[DONE]"))
        return events


class SimpleChunks:
    """Renders deltas as the simple ``{"delta": {"text": ...}}`` events (the first
    choice's text)."""

    def __init__(self) -> None:
        self.finish_reason = "stop"

    def delta(self, delta: ChatDelta) -> list[bytes]:
        if delta.index != 0:
            return []
        if delta.finish_reason:
            self.finish_reason = delta.finish_reason
        return [_sse({"delta": {"text": delta.content}})] if delta.content else []

    def finish(self, usage: Usage) -> list[bytes]:
        return [
            _sse({"finish_reason": self.finish_reason, "usage": _usage_json(usage)}),
            _sse("[DONE]"),
        ]


async def _rendered(reply: Reply, render) -> AsyncIterator[bytes]:
    """The reply's deltas as SSE events; a failure mid-stream is one error event (the status
    line went out with the first byte)."""
    assert reply.events is not None
    try:
        async for delta in reply.events:
            for event in render.delta(delta):
                yield event
    except ApiError as exc:
        yield _sse(exc.body())
        return
    for event in render.finish(reply.call.usage):
        yield event


def _sse_response(reply: Reply, events: AsyncIterator[bytes]) -> StreamingHttpResponse:
    response = StreamingHttpResponse(events, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    for name, value in reply.headers().items():
        response[name] = value
    return response


async def _authenticated(request: HttpRequest, scope: str) -> Principal:
    with tracing.stage("authenticate"):
        principal = await authenticate(
            request.headers.get("Authorization", ""), client_ip(request.META)
        )
        if tracing.enabled:
            tracing.set_request_attributes(tenant_attributes(principal))
        principal.require_scope(scope)
    return principal


def tenant_attributes(principal: Principal) -> dict[str, str | int]:
    """What a trace says of the caller: the tenant and the key's id, never the key."""
    return {
        "llmp.tenant": principal.tenant_slug,
        "llmp.tenant_id": principal.tenant_id,
        "llmp.api_key_id": principal.key_id,
    }


async def _refused(call, exc: ApiError) -> HttpResponse:
    """An error before any answer: metered, with the request's headers."""
    headers = await call.fail(exc)
    response = exc.response()
    for name, value in headers.items():
        response[name] = value
    return response


async def _run_chat(
    request: HttpRequest,
    principal: Principal,
    parsed: ParsedChat,
    route: str,
    started: float,
    render_plain,
    render_stream,
) -> HttpResponseBase:
    call = ChatCall(_request_info(request, route, started), principal, parsed)
    try:
        reply = await call.answer()
    except ApiError as exc:
        return await _refused(call, exc)
    if reply.events is not None:
        return _sse_response(reply, _rendered(reply, render_stream(call)))
    assert reply.result is not None
    return _json(render_plain(call, reply.result), headers=reply.headers())


@api_view("POST")
async def chat_completions(request: HttpRequest) -> HttpResponseBase:
    started = time.perf_counter()
    principal = await _authenticated(request, "chat")
    with tracing.stage("validate"):
        body = _read_body(request)
        parsed = parse_chat_request(parse_json_body(body), control_free=control_free_json(body))
    return await _run_chat(
        request, principal, parsed, "chat.completions", started, _openai_completion, OpenAIChunks
    )


def _parse_simple(data: dict, *, stream: bool) -> ParsedChat:
    prompt = data.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidRequest(
            "'prompt' must be a non-empty string.", param="prompt", code="invalid_value"
        )
    refuse_unknown_fields(data, {"prompt", "model", "user", "temperature", "max_tokens"})
    body = {
        "model": data.get("model", "default"),
        "messages": [{"role": "user", "content": prompt}],
        "stream": stream,
        **{k: data[k] for k in ("user", "temperature", "max_tokens") if k in data},
    }
    return parse_chat_request(body)


@api_view("POST")
async def simple_chat(request: HttpRequest) -> HttpResponseBase:
    started = time.perf_counter()
    principal = await _authenticated(request, "chat")
    with tracing.stage("validate"):
        parsed = _parse_simple(_read_json(request), stream=False)
    return await _run_chat(
        request, principal, parsed, "chat", started, _simple_completion, lambda call: SimpleChunks()
    )


@api_view("POST")
async def simple_chat_stream(request: HttpRequest) -> HttpResponseBase:
    started = time.perf_counter()
    principal = await _authenticated(request, "chat")
    with tracing.stage("validate"):
        parsed = _parse_simple(_read_json(request), stream=True)
    return await _run_chat(
        request,
        principal,
        parsed,
        "chat-stream",
        started,
        _simple_completion,
        lambda call: SimpleChunks(),
    )


def _vector_json(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "base64":
        # OpenAI's base64 form: little-endian float32, what its SDKs decode by default.
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector


@api_view("POST")
async def embeddings(request: HttpRequest) -> HttpResponse:
    """``POST /v1/embeddings``: string or array input, ``dimensions``, ``encoding_format``."""
    started = time.perf_counter()
    principal = await _authenticated(request, "embeddings")
    with tracing.stage("validate"):
        parsed = parse_embeddings_request(_read_json(request))
    call = EmbeddingsCall(_request_info(request, "embeddings", started), principal, parsed)
    try:
        result = await call.answer()
    except ApiError as exc:
        return await _refused(call, exc)
    body = {
        "object": "list",
        "data": [
            {
                "object": "embedding",
                "index": index,
                "embedding": _vector_json(vector, parsed.encoding_format),
            }
            for index, vector in enumerate(result.vectors)
        ],
        "model": parsed.alias,
        "usage": {
            "prompt_tokens": result.usage.prompt_tokens,
            "total_tokens": result.usage.prompt_tokens,
        },
    }
    return _json(body, headers=call.headers())


# The doors a chat request may come in by (the Messages door is Anthropic's shape of it).
CHAT_DOORS = ("chat.completions", "responses", "completions", "messages")


def _doors(principal: Principal, route: AliasRoute) -> list[str]:
    """The doors this key may call the alias through: the chat doors with the chat scope, and
    embeddings with its scope unless one of the alias's versions declares it does not serve
    them (a routed request to it would be refused)."""
    granted = principal.scopes if "admin" not in principal.scopes else {"chat", "embeddings"}
    doors = list(CHAT_DOORS) if "chat" in granted else []
    if "embeddings" in granted and not any(
        "embeddings" in capabilities.unsupported(target.provider) for target in route.targets
    ):
        doors.append("embeddings")
    return doors


@api_view("GET")
async def list_models(request: HttpRequest) -> HttpResponse:
    """``GET /v1/models``: the aliases this key may use, in OpenAI's list shape, each with the
    doors (``doors``) it serves to this key."""
    principal = await _authenticated(request, "models:read")
    routes = await routing_table.routes()
    data = [
        {
            "id": name,
            "object": "model",
            "created": route.created,
            "owned_by": "llmplatform",
            "doors": _doors(principal, route),
        }
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
    services.cache_invalidate_tenant(actor=principal.actor, tenant=tenant, alias_name=alias)


# --- the privacy API: consent and subject registration for tenants' apps --------------------


def _privacy_call(handler, *args, **kwargs) -> dict:
    """The privacy app's refusals as API errors. Anything else it raises is a bug of ours:
    api_view answers it with a bare 500, never with its message."""
    try:
        return handler(*args, **kwargs)
    except DomainError as exc:
        raise api_error_for(exc) from exc


@fresh_db
def _consent(principal: Principal, method: str, user: str, body, gpc: bool, request_id: str):
    from privacy.api import handlers

    if method == "GET":
        return _privacy_call(handlers.get_consent, principal.tenant_id, user)
    return _privacy_call(
        handlers.set_consent,
        principal.tenant_id,
        user,
        body,
        actor=principal.actor,
        gpc=gpc,
        request_id=request_id,
    )


@fresh_db
def _register(principal: Principal, user: str, body):
    from privacy.api import handlers

    return _privacy_call(
        handlers.register_subject, principal.tenant_id, user, body, actor=principal.actor
    )


@api_view("GET", "POST")
async def subject_consent(request: HttpRequest, user: str) -> HttpResponse:
    """``GET``/``POST /v1/privacy/subjects/<user>/consent`` (see privacy.api.handlers)."""
    assert request.method is not None  # api_view let only GET and POST through
    principal = await _authenticated(request, "privacy")
    _refuse_nul(user, "user")
    body = _refuse_nul(_read_json(request), "") if request.method == "POST" else None
    result = await sync_to_async(_consent)(
        principal,
        request.method,
        user,
        body,
        request.headers.get("Sec-GPC") == "1",
        _request_id(request),
    )
    return _json(result)


@api_view("PUT")
async def subject_register(request: HttpRequest, user: str) -> HttpResponse:
    """``PUT /v1/privacy/subjects/<user>`` ``{"email": ...}``: register the contact email."""
    principal = await _authenticated(request, "privacy")
    _refuse_nul(user, "user")
    result = await sync_to_async(_register)(principal, user, _refuse_nul(_read_json(request), ""))
    return _json(result)


def _request_json(request) -> dict:
    from privacy.subject_requests import selectors as request_selectors

    return {
        "object": "privacy.subject_request",
        "id": request_selectors.public_id(request),
        "kind": request.kind,
        "law": request.law,
        "state": request.state,
        "received_at": request.received_at.isoformat(),
        "acknowledge_by": request.acknowledge_by.isoformat() if request.acknowledge_by else None,
        "due_at": (request.extended_due_at or request.due_at).isoformat()
        if (request.extended_due_at or request.due_at)
        else None,
        "completed_at": request.completed_at.isoformat() if request.completed_at else None,
    }


@fresh_db
def _create_subject_request(principal: Principal, user: str, body) -> dict:
    from llmplatform.models import Tenant
    from privacy.models import SubjectRequest
    from privacy.subject_requests import services as request_services

    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_value")
    refuse_unknown_fields(body, {"kind", "law"})
    kind, law = body.get("kind"), body.get("law", "gdpr")
    if kind not in SubjectRequest.Kind.values:
        raise InvalidRequest(
            f"'kind' must be one of {', '.join(SubjectRequest.Kind.values)}.",
            param="kind",
            code="invalid_value",
        )
    if law not in SubjectRequest.Law.values:
        raise InvalidRequest(
            f"'law' must be one of {', '.join(SubjectRequest.Law.values)}.",
            param="law",
            code="invalid_value",
        )
    # A user id the privacy app refuses (too long, blank) is the caller's error, not ours.
    created = _privacy_call(
        request_services.subject_request_create,
        tenant=Tenant.objects.get(pk=principal.tenant_id),
        kind=kind,
        law=law,
        source=SubjectRequest.Source.API,
        external_id=user,
        actor=principal.actor,
    )
    return _request_json(created)


@fresh_db
def _subject_request_status(principal: Principal, public_id: str) -> dict | None:
    from privacy.subject_requests import selectors as request_selectors

    found = request_selectors.tenant_request_for_public_id(principal.tenant_id, public_id)
    return None if found is None else _request_json(found)


@api_view("POST")
async def subject_request_create(request: HttpRequest, user: str) -> HttpResponse:
    """``POST /v1/privacy/subjects/<user>/requests`` ``{"kind": "erasure", "law": "gdpr"}``: a
    data-subject request made by the tenant's app for its authenticated user. It is identity-
    verified by the tenant and waits for an officer's approval."""
    principal = await _authenticated(request, "privacy")
    _refuse_nul(user, "user")
    result = await sync_to_async(_create_subject_request)(
        principal, user, _refuse_nul(_read_json(request), "")
    )
    return _json(result, status=202)


@api_view("GET")
async def subject_request_status(request: HttpRequest, public_id: str) -> HttpResponse:
    """``GET /v1/privacy/requests/<id>``: the state and deadlines of one of the tenant's
    requests (another tenant's request is not found, like a missing one)."""
    principal = await _authenticated(request, "privacy")
    result = await sync_to_async(_subject_request_status)(principal, public_id)
    if result is None:
        raise NotFound("No such request.", param="id")
    return _json(result)
