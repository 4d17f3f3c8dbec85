"""The legacy completions door: ``POST /v1/completions`` (OpenAI's text completions, for older
clients and tools).

A prompt becomes one user message of a chat request (``parse_chat_request``, so every bound of
chat applies) and runs through the same ``ChatCall`` as chat: keys and scopes, limits, PII
policy, injection screen, cache, dispatch, leak guard, metering and consented storage. The
answer is rendered as a ``text_completion`` (or its stream chunks). The model answers the
prompt as a chat model does; it does not continue the text.

- ``prompt`` is a string or a list of strings. A list runs one request per prompt (each metered
  as its own request) and answers with ``n`` choices per prompt, in prompt order, as OpenAI
  does; a list of more than one prompt cannot be streamed (400 naming ``prompt``). Token
  arrays are refused: the gateway applies its policies to text.
- ``suffix``, ``echo``, ``best_of`` above 1 and ``logprobs`` are refused with a 400 naming the
  field; ``logit_bias`` goes upstream as in chat (a provider that cannot take it refuses it).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from typing import Any

from django.http import HttpRequest, HttpResponseBase

from gateway.api.views import (
    _authenticated,
    _json,
    _read_json,
    _refused,
    _rendered,
    _request_info,
    _sse,
    _sse_response,
    _usage_json,
    api_view,
)
from gateway.errors import ApiError, InvalidRequest
from gateway.pipeline.chat import ChatCall, Reply
from gateway.pipeline.validate import ParsedChat, parse_chat_request
from gateway.providers.base import ChatDelta, Choice, Usage
from llmplatform import tracing

ROUTE = "completions"

# Mapped onto the chat request as they are.
_CHAT_FIELDS = (
    "max_tokens",
    "temperature",
    "top_p",
    "n",
    "stop",
    "user",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "stream",
    "stream_options",
)
_REFUSED = {
    "suffix": "insertion (text after the completion) is not supported; send the whole task "
    "in 'prompt'",
    "echo": "the prompt is not repeated in the answer",
    "logprobs": "log probabilities are not returned by the completions door; use "
    "/v1/chat/completions with 'logprobs'",
}
_KNOWN = frozenset({"model", "prompt", "best_of", *_CHAT_FIELDS, *_REFUSED})
MAX_PROMPTS = 16  # each prompt is a request of its own through the pipeline


def _refuse(message: str, param: str, code: str = "invalid_value") -> InvalidRequest:
    return InvalidRequest(message, param=param, code=code)


def _prompts(raw: Any) -> list[str]:
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and raw and all(isinstance(p, str) for p in raw):
        if len(raw) > MAX_PROMPTS:
            raise _refuse(f"'prompt' holds at most {MAX_PROMPTS} prompts.", "prompt")
        return raw
    if isinstance(raw, list) and raw and all(isinstance(t, int | list) for t in raw):
        raise _refuse(
            "'prompt' must be text: token arrays are not accepted, because the gateway applies "
            "the privacy policy to the text it sends.",
            "prompt",
            code="unsupported_input",
        )
    raise _refuse("'prompt' must be a string or a non-empty list of strings.", "prompt")


def parse_completions_request(data: dict[str, Any]) -> list[ParsedChat]:
    """One chat request per prompt. Raises ``InvalidRequest`` naming the field."""
    unknown = sorted(set(data) - _KNOWN)
    if unknown:
        raise _refuse(
            f"Unrecognized request argument supplied: {unknown[0]}",
            unknown[0],
            code="unknown_parameter",
        )
    for name, why in _REFUSED.items():
        if data.get(name) not in (None, False):  # unset, or set to what it would be unset
            raise _refuse(
                f"'{name}' is not supported by this gateway: {why}.",
                name,
                code="unsupported_parameter",
            )
    if data.get("best_of") not in (None, 1):
        raise _refuse(
            "'best_of' is not supported by this gateway: ask for 'n' choices and pick one.",
            "best_of",
            code="unsupported_parameter",
        )
    prompts = _prompts(data.get("prompt"))
    if len(prompts) > 1 and data.get("stream"):
        raise _refuse(
            "A list of prompts cannot be streamed here; stream one prompt per request.",
            "prompt",
            code="unsupported_value",
        )
    fields = {name: data[name] for name in _CHAT_FIELDS if data.get(name) is not None}
    parsed = []
    for index, prompt in enumerate(prompts):
        body = {
            "model": data.get("model"),
            "messages": [{"role": "user", "content": prompt}],
            **fields,
        }
        try:
            parsed.append(parse_chat_request(body))
        except ApiError as exc:
            raise _client_param(exc, "prompt" if len(prompts) == 1 else f"prompt[{index}]") from exc
    return parsed


def _client_param(exc: ApiError, prompt_param: str) -> ApiError:
    """An error about the chat request's one message names the prompt it came from."""
    if exc.param and exc.param.startswith("messages[0]"):
        param = prompt_param
        exc.message = exc.message.replace(exc.param, param)
        exc.param = param
    return exc


def _choice_json(choice: Choice, index: int) -> dict[str, Any]:
    return {
        "text": choice.content or choice.refusal or "",
        "index": index,
        "logprobs": None,
        "finish_reason": choice.finish_reason,
    }


class CompletionChunks:
    """Deltas as legacy ``text_completion`` stream chunks, then a usage chunk when asked for
    (``stream_options.include_usage``) and ``data: [DONE]``."""

    def __init__(self, call: ChatCall, completion_id: str) -> None:
        self.base = {
            "id": completion_id,
            "object": "text_completion",
            "created": call.created,
            "model": call.parsed.alias,
            "system_fingerprint": None,
        }
        self.include_usage = call.parsed.include_usage

    def delta(self, delta: ChatDelta) -> list[bytes]:
        text = delta.content or delta.refusal or ""
        if not text and not delta.finish_reason:
            return []
        choice = {
            "text": text,
            "index": delta.index,
            "logprobs": None,
            "finish_reason": delta.finish_reason,
        }
        return [_sse({**self.base, "choices": [choice]})]

    def finish(self, usage: Usage) -> list[bytes]:
        events = []
        if self.include_usage:
            events.append(_sse({**self.base, "choices": [], "usage": _usage_json(usage)}))
        events.append(_sse("[DONE]"))
        return events


async def _answer(call: ChatCall) -> Reply | ApiError:
    try:
        return await call.answer()
    except ApiError as exc:
        return exc


@api_view("POST")
async def create_completion(request: HttpRequest) -> HttpResponseBase:
    """``POST /v1/completions``: a legacy text completion through the chat pipeline."""
    started = time.perf_counter()
    principal = await _authenticated(request, "chat")
    with tracing.stage("validate"):
        parsed = parse_completions_request(_read_json(request))
    info = _request_info(request, ROUTE, started)
    completion_id = f"cmpl-{uuid.uuid4().hex}"
    if len(parsed) > 1:  # one request per prompt, each with an id of its own
        infos = [
            dataclasses.replace(info, request_id=f"{info.request_id}.{i}")
            for i in range(len(parsed))
        ]
    else:
        infos = [info]
    calls = [ChatCall(i, principal, p) for i, p in zip(infos, parsed, strict=True)]
    answers = await asyncio.gather(*(_answer(call) for call in calls))
    for index, (call, answer) in enumerate(zip(calls, answers, strict=True)):
        if isinstance(answer, ApiError):
            # The other prompts' answers were made and metered; the client gets this refusal.
            for other, other_answer in zip(calls, answers, strict=True):
                if other is not call and isinstance(other_answer, ApiError):
                    await other.fail(other_answer)
            prompt = "prompt" if len(calls) == 1 else f"prompt[{index}]"
            return await _refused(call, _client_param(answer, prompt))
    replies = [answer for answer in answers if isinstance(answer, Reply)]
    first = replies[0]
    if first.events is not None:
        return _sse_response(first, _rendered(first, CompletionChunks(first.call, completion_id)))
    choices: list[dict[str, Any]] = []
    usage = Usage()
    for prompt_index, reply in enumerate(replies):
        assert reply.result is not None
        n = reply.call.parsed.n
        choices += [_choice_json(c, prompt_index * n + c.index) for c in reply.result.choices]
        usage.prompt_tokens += reply.result.usage.prompt_tokens
        usage.completion_tokens += reply.result.usage.completion_tokens
    body = {
        "id": completion_id,
        "object": "text_completion",
        "created": first.call.created,
        "model": first.call.parsed.alias,
        "choices": choices,
        "usage": _usage_json(usage),
        "system_fingerprint": None,
    }
    return _json(body, headers=first.headers())
