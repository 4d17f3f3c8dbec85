"""The Anthropic Messages door: ``POST /v1/messages`` and ``POST /v1/messages/count_tokens``.

The door reads the key (``x-api-key`` or ``Authorization: Bearer``), parses the body into the
pipeline's ``ParsedChat`` (``messages_request``) and runs it through the same ``ChatCall`` as a
chat completion, so every governance stage applies unchanged and any provider kind can answer.
It renders the reply in Anthropic's shape: a ``message`` with ``text`` and ``tool_use`` blocks,
or, streamed, Anthropic's named events (``message_start``, ``content_block_start``,
``content_block_delta``, ``content_block_stop``, ``message_delta``, ``message_stop``). Every
refusal is Anthropic's error JSON (``{"type": "error", "error": {"type", "message"}}``) with
the pipeline's status and headers (``Retry-After`` on a 429).

``anthropic-version`` is accepted whatever its value; ``anthropic-beta`` is ignored (a beta's
request fields are refused like any field the door does not take).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import orjson
import structlog
from django.http import HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse

from gateway.api.messages_request import parse_messages_request
from gateway.api.views import _read_json, _request_info, api_view, tenant_attributes
from gateway.errors import (
    ApiError,
    AuthenticationFailed,
    ModelNotFound,
    PayloadTooLarge,
)
from gateway.pipeline.authenticate import Principal, authenticate
from gateway.pipeline.chat import ChatCall, Reply
from gateway.pipeline.route import routing_table
from gateway.pipeline.settle import chars_to_tokens
from gateway.providers.base import ChatDelta, ChatResult, Usage
from llmplatform import tracing
from llmplatform.request_context import client_ip

log = structlog.get_logger("gateway.api")

View = Callable[[HttpRequest], Coroutine[Any, Any, HttpResponseBase]]

AUTH_MESSAGE = (
    "Incorrect or missing API key. Send it as 'x-api-key: llmp_...' or "
    "'Authorization: Bearer llmp_...'."
)
# The platform's finish reasons as Anthropic's stop reasons. A stop sequence ends an answer
# like a natural end on every provider's wire the adapters read, so both are end_turn.
STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}
# Anthropic's error types by status (its API's table); any other 5xx is api_error.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
}


# --- errors -----------------------------------------------------------------------------------


def error_body(exc: ApiError) -> dict[str, Any]:
    kind = ERROR_TYPES.get(
        exc.status, "api_error" if exc.status >= 500 else "invalid_request_error"
    )
    return {"type": "error", "error": {"type": kind, "message": exc.message}}


def error_response(exc: ApiError) -> HttpResponse:
    response = HttpResponse(
        orjson.dumps(error_body(exc)), status=exc.status, content_type="application/json"
    )
    for name, value in exc.headers.items():
        response[name] = value
    if exc.code:
        # Anthropic's shape has no code; programs that need the platform's reason read it here.
        response["x-llmp-error-code"] = exc.code
    return response


# The 413 of a body over LLMP_MAX_BODY_BYTES, sent before the view runs (llmplatform.fastpath).
TOO_LARGE = orjson.dumps(error_body(PayloadTooLarge("The request body is too large.")))

# POST only, Anthropic's error JSON for every failure, and never a bare 500 page.
messages_view = api_view("POST", error_response=error_response)


# --- reading the request ------------------------------------------------------------------------


async def _principal(request: HttpRequest) -> Principal:
    key = request.headers.get("x-api-key", "").strip()
    authorization = f"Bearer {key}" if key else request.headers.get("Authorization", "")
    with tracing.stage("authenticate"):
        try:
            principal = await authenticate(authorization, client_ip(request.META))
        except AuthenticationFailed:
            raise AuthenticationFailed(AUTH_MESSAGE) from None
        if tracing.enabled:
            tracing.set_request_attributes(tenant_attributes(principal))
        principal.require_scope("chat")
    return principal


# --- rendering the reply --------------------------------------------------------------------------


def _usage(usage: Usage) -> dict[str, int]:
    return {"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens}


def _tool_input(arguments: Any) -> dict[str, Any]:
    """A tool call's arguments as the ``input`` object (an empty or unreadable string is {})."""
    try:
        value = orjson.loads(arguments) if isinstance(arguments, str) and arguments else {}
    except orjson.JSONDecodeError:
        log.warning("tool_arguments_not_json")
        return {}
    return value if isinstance(value, dict) else {}


def message_json(call: ChatCall, message_id: str, result: ChatResult) -> dict[str, Any]:
    choice = result.choices[0] if result.choices else None
    content: list[dict[str, Any]] = []
    stop_reason = "end_turn"
    if choice is not None:
        text = choice.content or choice.refusal or ""
        if text:
            content.append({"type": "text", "text": text})
        for tool_call in choice.tool_calls or ():
            function = tool_call.get("function") or {}
            content.append(
                {
                    "type": "tool_use",
                    "id": tool_call.get("id") or f"toolu_{uuid.uuid4().hex[:24]}",
                    "name": function.get("name", ""),
                    "input": _tool_input(function.get("arguments")),
                }
            )
        stop_reason = (
            "refusal" if choice.refusal else STOP_REASONS.get(choice.finish_reason, "end_turn")
        )
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": call.parsed.alias,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": _usage(result.usage),
    }


def _event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class MessageEvents:
    """Deltas as Anthropic's stream: one content block open at a time (the text, then each tool
    call as a ``tool_use`` block whose arguments arrive as ``input_json_delta`` pieces)."""

    def __init__(self, call: ChatCall, message_id: str) -> None:
        self.call = call
        self.message_id = message_id
        self.blocks = 0  # blocks opened so far
        self.open: int | None = None  # the open block's index
        self.text_block: int | None = None
        self.tool_blocks: dict[int, int] = {}  # a tool call's index -> its block's index
        self.stop_reason = "end_turn"

    def start(self) -> bytes:
        return _event(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": self.message_id,
                    "type": "message",
                    "role": "assistant",
                    "model": self.call.parsed.alias,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    # Counted when the answer ends: the final figures are in message_delta.
                    "usage": {"input_tokens": 0, "output_tokens": 0},
                },
            },
        )

    def _open(self, block: dict[str, Any]) -> list[bytes]:
        events = self._close()
        self.open = self.blocks
        self.blocks += 1
        events.append(
            _event(
                "content_block_start",
                {"type": "content_block_start", "index": self.open, "content_block": block},
            )
        )
        return events

    def _close(self) -> list[bytes]:
        if self.open is None:
            return []
        index, self.open = self.open, None
        return [_event("content_block_stop", {"type": "content_block_stop", "index": index})]

    def _text(self, text: str) -> list[bytes]:
        events: list[bytes] = []
        if self.open is None or self.open != self.text_block:
            events = self._open({"type": "text", "text": ""})
            self.text_block = self.open
        delta = {"type": "text_delta", "text": text}
        events.append(
            _event(
                "content_block_delta",
                {"type": "content_block_delta", "index": self.open, "delta": delta},
            )
        )
        return events

    def _tool(self, fragment: dict[str, Any]) -> list[bytes]:
        events: list[bytes] = []
        position = fragment.get("index", 0)
        function = fragment.get("function") or {}
        block = self.tool_blocks.get(position)
        if block is None:
            events = self._open(
                {
                    "type": "tool_use",
                    "id": fragment.get("id") or f"toolu_{uuid.uuid4().hex[:24]}",
                    "name": function.get("name") or "",
                    "input": {},
                }
            )
            assert self.open is not None
            block = self.tool_blocks[position] = self.open
        piece = function.get("arguments")
        if piece:
            delta = {"type": "input_json_delta", "partial_json": piece}
            events.append(
                _event(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": block, "delta": delta},
                )
            )
        return events

    def delta(self, delta: ChatDelta) -> list[bytes]:
        if delta.index != 0:
            return []
        events: list[bytes] = []
        text = delta.content or delta.refusal or ""
        if delta.refusal:
            self.stop_reason = "refusal"
        if text:
            events += self._text(text)
        for fragment in delta.tool_calls or ():
            events += self._tool(fragment)
        if delta.finish_reason and self.stop_reason != "refusal":
            self.stop_reason = STOP_REASONS.get(delta.finish_reason, "end_turn")
        return events

    def finish(self, usage: Usage) -> list[bytes]:
        return [
            *self._close(),
            _event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": self.stop_reason, "stop_sequence": None},
                    "usage": _usage(usage),
                },
            ),
            _event("message_stop", {"type": "message_stop"}),
        ]


async def _streamed(reply: Reply, render: MessageEvents) -> AsyncIterator[bytes]:
    """The reply as Anthropic's events; a failure mid-stream is one ``error`` event (the status
    line went out with the first byte)."""
    assert reply.events is not None
    yield render.start()
    try:
        async for delta in reply.events:
            for event in render.delta(delta):
                yield event
    except ApiError as exc:
        yield _event("error", error_body(exc))
        return
    for event in render.finish(reply.call.usage):
        yield event


def _with_headers(response: HttpResponseBase, headers: dict[str, str]) -> HttpResponseBase:
    for name, value in headers.items():
        response[name] = value
    # Anthropic's SDKs read the request id from this header (``message._request_id``).
    if "X-Request-ID" in headers:
        response["request-id"] = headers["X-Request-ID"]
    return response


# --- the views ---------------------------------------------------------------------------------


@messages_view
async def messages(request: HttpRequest) -> HttpResponseBase:
    """``POST /v1/messages``: Anthropic's Messages API, plain or streamed."""
    started = time.perf_counter()
    principal = await _principal(request)
    with tracing.stage("validate"):
        parsed = parse_messages_request(_read_json(request))
    call = ChatCall(_request_info(request, "messages", started), principal, parsed)
    try:
        reply = await call.answer()
    except ApiError as exc:
        headers = await call.fail(exc)  # metered, with the request's headers
        return _with_headers(error_response(exc), headers)
    message_id = f"msg_{uuid.uuid4().hex}"
    if reply.events is not None:
        response = StreamingHttpResponse(
            _streamed(reply, MessageEvents(call, message_id)), content_type="text/event-stream"
        )
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
        return _with_headers(response, reply.headers())
    assert reply.result is not None
    body = orjson.dumps(message_json(call, message_id, reply.result))
    return _with_headers(HttpResponse(body, content_type="application/json"), reply.headers())


@messages_view
async def count_tokens(request: HttpRequest) -> HttpResponseBase:
    """``POST /v1/messages/count_tokens``: the platform's estimate of the input tokens of a
    Messages request, about four characters a token over the text it sends the model, without
    calling a model. Images are not counted (the limits reserve a fixed amount for each:
    ``admit.estimate``)."""
    principal = await _principal(request)
    parsed = parse_messages_request(_read_json(request), count_only=True)
    if not principal.may_use(parsed.alias):
        raise ModelNotFound(
            "The model does not exist or you do not have access to it.", param="model"
        )
    await routing_table.route(parsed.alias)  # an alias that does not exist is a 404 too
    tokens = chars_to_tokens(sum(len(part.text) for part in parsed.parts()))
    return HttpResponse(orjson.dumps({"input_tokens": tokens}), content_type="application/json")
