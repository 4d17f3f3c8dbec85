"""The Responses API door: ``POST /v1/responses`` (OpenAI's newer API, the default of its SDKs'
``responses.create`` and of agent frameworks built on them).

The door maps a request onto the chat request the pipeline already runs (``ParsedChat``, built
by ``parse_chat_request`` so every bound and check of chat applies), runs it through the same
``ChatCall`` (keys and scopes, limits and budgets, PII policy, injection screen, cache,
dispatch with fallbacks and breakers, leak guard, metering, consented storage), and renders
the reply back as a Response object or as the Responses API's named stream events.

- ``input`` is a string or a list of items: messages (``input_text``, ``input_image``,
  ``input_file``, ``input_audio`` parts; ``output_text`` and ``refusal`` parts in assistant
  turns sent back), ``function_call`` and ``function_call_output`` items. ``instructions`` is
  the first system message.
- Stateless: nothing is kept to be read back by id. ``store`` is false; ``store: true``,
  ``previous_response_id`` and ``conversation`` are refused (400 naming the field), as is every
  field the gateway cannot honour (built-in tools, ``reasoning``, ``background``, ...): a
  client never has a field silently dropped.
- A refusal names the field as the client wrote it (``input[2].content[0]``, not the chat
  request's ``messages[...]`` path it was checked as).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from django.http import HttpRequest, HttpResponseBase

from gateway.api.responses.reply import ResponseEvents, ResponseShell, output_items
from gateway.api.responses.request import parse_responses_request, with_client_param
from gateway.api.views import (
    _authenticated,
    _json,
    _read_json,
    _refused,
    _request_info,
    _sse_response,
    api_view,
)
from gateway.errors import ApiError
from gateway.pipeline.chat import ChatCall, Reply
from llmplatform import tracing

ROUTE = "responses"


async def _events(reply: Reply, events: ResponseEvents) -> AsyncIterator[bytes]:
    for event in events.start():
        yield event
    assert reply.events is not None
    try:
        async for delta in reply.events:
            for event in events.delta(delta):
                yield event
    except ApiError as exc:
        for event in events.fail(exc):
            yield event
        return
    for event in events.finish(reply.call.usage):
        yield event


@api_view("POST")
async def create_response(request: HttpRequest) -> HttpResponseBase:
    """``POST /v1/responses``: one model response, plain or streamed, through the chat
    pipeline."""
    started = time.perf_counter()
    principal = await _authenticated(request, "chat")
    with tracing.stage("validate"):
        responses_request = parse_responses_request(_read_json(request))
    call = ChatCall(_request_info(request, ROUTE, started), principal, responses_request.parsed)
    try:
        reply = await call.answer()
    except ApiError as exc:
        return await _refused(call, with_client_param(exc, responses_request))
    shell = ResponseShell(responses_request)
    if reply.events is not None:
        return _sse_response(reply, _events(reply, ResponseEvents(shell)))
    assert reply.result is not None
    result = reply.result
    body = shell.body(
        "completed",
        output_items(result),
        usage=result.usage,
        finish_reason=result.finish_reason,
    )
    return _json(body, headers=reply.headers())
