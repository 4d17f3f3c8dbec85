"""Anthropic's Messages API (``POST {base}/v1/messages``), natively.

The HTTP side (pooled aiohttp session, egress check, credential refetch on 401/403, SSE
reading, error mapping) is ``OpenAICompatibleAdapter``'s; this module translates. OpenAI's
system and developer messages become ``system``; user parts become text and image blocks
(base64 data URLs, or https URLs that Anthropic fetches itself); an assistant's tool calls
become ``tool_use`` blocks and tool messages ``tool_result`` blocks (as text when no tools are
declared, since Anthropic refuses tool blocks without tool definitions); ``tools`` and
``tool_choice`` map one to one. ``max_tokens`` is required upstream: the request's, else the
provider's ``extra.default_max_tokens``, else 4096. What the Messages API cannot honour (``n`` >
1, logprobs, JSON mode, audio, files, logit_bias) is refused before any call.

429 and 529 (overloaded) are ``UpstreamUnavailable`` with the ``retry-after`` hint, so dispatch
retries them no sooner than asked; a stream's ``error`` event maps the same way.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import aiohttp

from gateway.providers.base import (
    ChatDelta,
    ChatMessage,
    ChatRequest,
    ChatResult,
    Choice,
    EmbeddingRequest,
    EmbeddingResult,
    UnsupportedByProvider,
    UpstreamBadResponse,
    UpstreamServerError,
    UpstreamUnavailable,
    Usage,
)
from gateway.providers.capabilities import refuse_unsupported
from gateway.providers.openai_compatible import (
    OpenAICompatibleAdapter,
    _decode,
    parse_retry_after,
)
from gateway.providers.translation import (
    compact_json,
    data_url,
    function_tools,
    image_url,
    named_tool_choice,
    openai_tool_call,
    refuse_single_text_answer_extras,
    tool_call_input,
)

DEFAULT_BASE_URL = "https://api.anthropic.com"
DEFAULT_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
NAME = "Anthropic"
_IMAGE_TYPES = {"image/png", "image/jpeg", "image/gif", "image/webp"}
_STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
# Anthropic's error types that mean "not now", in an error answer or a stream's error event.
_UNAVAILABLE_TYPES = {"overloaded_error", "rate_limit_error"}


def default_max_tokens(extra: dict[str, Any]) -> int:
    value = extra.get("default_max_tokens")
    return value if isinstance(value, int) and not isinstance(value, bool) else DEFAULT_MAX_TOKENS


class AnthropicAdapter(OpenAICompatibleAdapter):
    @property
    def base_url(self) -> str:
        base = self.config.base_url.rstrip("/") or DEFAULT_BASE_URL
        return base.removesuffix("/v1")

    def chat_url(self, request: ChatRequest) -> str:
        return f"{self.base_url}/v1/messages"

    def models_url(self) -> str:
        return f"{self.base_url}/v1/models"

    def auth_headers(self, key: str) -> dict[str, str]:
        headers = {"anthropic-version": self.config.api_version or DEFAULT_VERSION}
        if key:
            headers["x-api-key"] = key
        return headers

    # Translation ---------------------------------------------------------------------------

    def build_body(self, request: ChatRequest, *, stream: bool) -> dict[str, Any]:
        refuse_unsupported(self.config, request.messages, request.extra)
        extra = request.extra
        _refuse_unsupported_params(extra)
        tools = function_tools(extra, NAME)
        choice = extra.get("tool_choice")
        named = named_tool_choice(choice, NAME)
        tools_as_text = not tools
        system: list[str] = []
        turns: list[dict[str, Any]] = []
        for i, message in enumerate(request.messages):
            if message.role in ("system", "developer"):
                if message.content.strip():
                    system.append(message.content)
                continue
            if message.role == "tool":
                role, blocks = "user", [_tool_result_block(message, as_text=tools_as_text)]
            elif message.role == "assistant":
                role, blocks = "assistant", _assistant_blocks(i, message, as_text=tools_as_text)
            else:
                role, blocks = "user", _user_blocks(i, message)
            _add_to_turns(turns, role, blocks)
        max_tokens = request.max_tokens or default_max_tokens(self.config.extra)
        body: dict[str, Any] = {"model": request.model, "messages": turns, "max_tokens": max_tokens}
        if system:
            body["system"] = "\n\n".join(system)
        optional = {
            "temperature": request.temperature,
            "top_p": request.top_p,
            "stop_sequences": request.stop,
        }
        body.update({name: value for name, value in optional.items() if value is not None})
        if request.user:
            # Anthropic asks for an opaque id, never a name or an email: a client's ``user``
            # may be either, so it goes hashed (stable, so abuse reports still group by user).
            body["metadata"] = {"user_id": hashlib.sha256(request.user.encode()).hexdigest()}
        if tools:
            body["tools"] = [
                {
                    "name": tool.name,
                    "input_schema": tool.parameters,
                    **({"description": tool.description} if tool.description else {}),
                }
                for tool in tools
            ]
            tool_choice: dict[str, Any] | None = None
            if named is not None:
                tool_choice = {"type": "tool", "name": named}
            elif choice == "required":
                tool_choice = {"type": "any"}
            elif choice == "none":
                tool_choice = {"type": "none"}
            elif choice == "auto" or extra.get("parallel_tool_calls") is False:
                tool_choice = {"type": "auto"}
            if (
                tool_choice is not None
                and tool_choice["type"] != "none"
                and extra.get("parallel_tool_calls") is False
            ):
                tool_choice["disable_parallel_tool_use"] = True
            if tool_choice is not None:
                body["tool_choice"] = tool_choice
        if stream:
            body["stream"] = True
        return body

    # Answers -------------------------------------------------------------------------------

    async def _raise_for_status(self, response: aiohttp.ClientResponse) -> None:
        if response.status == 529:  # Anthropic's "overloaded": retry after its hint
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            response.release()
            raise UpstreamUnavailable(
                f"{self._label} is overloaded (HTTP 529)",
                upstream_status=529,
                retry_after=retry_after,
            )
        await super()._raise_for_status(response)

    def _parse_completion(self, data: Any, status: int) -> ChatResult:
        blocks = data.get("content") if isinstance(data, dict) else None
        if not isinstance(blocks, list):
            raise UpstreamBadResponse(
                f"{self._label} answered without content", upstream_status=status
            )
        texts: list[str] = []
        tool_calls: list[dict[str, Any]] = []
        for block in blocks:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text" and isinstance(block.get("text"), str):
                texts.append(block["text"])
            elif block.get("type") == "tool_use":
                call_id, name = self._tool_identity(block, status)
                arguments = block.get("input")
                tool_calls.append(openai_tool_call(call_id, name, compact_json(arguments or {})))
            # thinking, redacted_thinking, server tool blocks: no place in OpenAI's message.
        model = data.get("model")
        return ChatResult(
            [
                Choice(
                    index=0,
                    content="".join(texts),
                    finish_reason=_STOP_REASONS.get(str(data.get("stop_reason")), "stop"),
                    tool_calls=tool_calls or None,
                )
            ],
            _usage(data.get("usage")) or Usage(),
            model if isinstance(model, str) else "",
        )

    def _tool_identity(self, block: dict[str, Any], status: int) -> tuple[str, str]:
        call_id, name = block.get("id"), block.get("name")
        if not isinstance(call_id, str) or not isinstance(name, str) or not name:
            raise UpstreamBadResponse(
                f"{self._label} answered with a malformed tool call", upstream_status=status
            )
        return call_id, name

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatDelta]:
        """Anthropic's events as deltas: text_delta as content; a tool_use block's start as
        an OpenAI tool-call fragment with id and name, its input_json_delta pieces as argument
        fragments; message_delta's stop_reason and usage on the last delta."""
        response = await self._open(request, stream=True)
        try:
            self._require_media_type(response, "text/event-stream")
            status = response.status
            usage = Usage()
            finish: str | None = None
            # content block index -> the tool call's position among the answer's calls
            calls: dict[int, int] = {}
            without_arguments: set[int] = set()
            async with aclosing(self._sse_data(response)) as events:
                async for data in events:
                    event = self._parse_event(data, status)
                    kind = event.get("type")
                    position: int | None
                    if kind == "message_start":
                        message = event.get("message")
                        counted = _usage(
                            message.get("usage") if isinstance(message, dict) else None
                        )
                        if counted is not None:
                            usage.prompt_tokens = counted.prompt_tokens
                            usage.completion_tokens = counted.completion_tokens
                    elif kind == "content_block_start":
                        block = event.get("content_block")
                        if isinstance(block, dict) and block.get("type") == "tool_use":
                            call_id, name = self._tool_identity(block, status)
                            position = len(calls)
                            calls[_index(event)] = position
                            without_arguments.add(position)
                            call = openai_tool_call(call_id, name, "")
                            yield ChatDelta(tool_calls=[{"index": position, **call}])
                        elif (
                            isinstance(block, dict)
                            and block.get("type") == "text"
                            and isinstance(block.get("text"), str)
                            and block["text"]
                        ):
                            yield ChatDelta(content=block["text"])
                    elif kind == "content_block_delta":
                        delta = event.get("delta")
                        if not isinstance(delta, dict):
                            continue
                        if delta.get("type") == "text_delta" and isinstance(delta.get("text"), str):
                            if delta["text"]:
                                yield ChatDelta(content=delta["text"])
                        elif delta.get("type") == "input_json_delta":
                            position = calls.get(_index(event))
                            if position is None:
                                raise UpstreamBadResponse(
                                    f"{self._label} streamed a tool call's input before the "
                                    "call began",
                                    upstream_status=status,
                                )
                            piece = delta.get("partial_json")
                            if isinstance(piece, str) and piece:
                                without_arguments.discard(position)
                                yield ChatDelta(
                                    tool_calls=[
                                        {"index": position, "function": {"arguments": piece}}
                                    ]
                                )
                    elif kind == "content_block_stop":
                        position = calls.get(_index(event))
                        if position is not None and position in without_arguments:
                            # A call without input streams no piece: "" is not JSON.
                            without_arguments.discard(position)
                            yield ChatDelta(
                                tool_calls=[{"index": position, "function": {"arguments": "{}"}}]
                            )
                    elif kind == "message_delta":
                        delta = event.get("delta")
                        reason = delta.get("stop_reason") if isinstance(delta, dict) else None
                        if isinstance(reason, str):
                            finish = _STOP_REASONS.get(reason, "stop")
                        counted_output = event.get("usage")
                        if isinstance(counted_output, dict):
                            output = counted_output.get("output_tokens")
                            if isinstance(output, int):
                                usage.completion_tokens = output
                    elif kind == "message_stop":
                        break
                    elif kind == "error":
                        raise self._stream_error(event, status)
                    # ping, and event types added later: nothing to hand on.
            if finish is None:
                raise UpstreamBadResponse(
                    f"{self._label} ended the stream before the answer was complete",
                    upstream_status=status,
                )
            yield ChatDelta(finish_reason=finish, usage=usage)
        finally:
            response.release()

    def _parse_event(self, data: str, status: int) -> dict[str, Any]:
        try:
            event = _decode(data)
        except ValueError:
            event = None
        if not isinstance(event, dict):
            raise UpstreamBadResponse(
                f"{self._label} sent an invalid stream event", upstream_status=status
            )
        return event

    def _stream_error(self, event: dict[str, Any], status: int) -> UpstreamBadResponse:
        error = event.get("error")
        error_type = error.get("type") if isinstance(error, dict) else None
        code = error_type if isinstance(error_type, str) and len(error_type) <= 64 else ""
        if code in _UNAVAILABLE_TYPES:
            # Not retried once bytes have reached the client; the breaker counts it.
            return UpstreamServerError(
                f"{self._label} was overloaded mid-stream ({code})", upstream_status=status
            )
        return UpstreamBadResponse(
            f"{self._label} reported an error mid-stream" + (f" ({code})" if code else ""),
            upstream_status=status,
            upstream_code=code,
        )

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResult:
        raise UnsupportedByProvider(
            "Anthropic does not serve embeddings: route this alias to a provider that does",
            param="model",
        )


# Translation helpers --------------------------------------------------------------------------


def _refuse_unsupported_params(extra: dict[str, Any]) -> None:
    """What the Messages API has no way to honour is refused rather than dropped; harmless
    hints with no equivalent (seed, penalties, store, service_tier...) are not sent."""
    refuse_single_text_answer_extras(extra, "Anthropic", "Anthropic answers with text only")


def _usage(data: Any) -> Usage | None:
    if not isinstance(data, dict):
        return None
    prompt = 0
    # Cached prompt tokens are prompt tokens too (billed at their own rate upstream).
    for name in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"):
        value = data.get(name)
        if isinstance(value, int):
            prompt += value
    output = data.get("output_tokens")
    return Usage(prompt_tokens=prompt, completion_tokens=output if isinstance(output, int) else 0)


def _index(event: dict[str, Any]) -> int:
    index = event.get("index")
    return index if isinstance(index, int) else -1


def _assistant_blocks(i: int, message: ChatMessage, *, as_text: bool) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if message.content.strip():
        blocks.append({"type": "text", "text": message.content})
    for j, call in enumerate(message.tool_calls or ()):
        parsed = tool_call_input(i, j, call, NAME)
        if as_text:
            text = f"Tool call {parsed.name}: {compact_json(parsed.arguments)}"
            blocks.append({"type": "text", "text": text})
            continue
        if not parsed.id:
            raise UnsupportedByProvider(
                "Anthropic needs the id of every tool call",
                param=f"messages[{i}].tool_calls[{j}].id",
            )
        blocks.append(
            {"type": "tool_use", "id": parsed.id, "name": parsed.name, "input": parsed.arguments}
        )
    return blocks


def _tool_result_block(message: ChatMessage, *, as_text: bool) -> dict[str, Any]:
    content = message.content if message.content.strip() else "(no output)"
    if as_text:
        return {"type": "text", "text": f"Tool result: {content}"}
    return {"type": "tool_result", "tool_use_id": message.tool_call_id or "", "content": content}


def _user_blocks(i: int, message: ChatMessage) -> list[dict[str, Any]]:
    if message.parts is None:
        return [{"type": "text", "text": message.content}] if message.content.strip() else []
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(message.parts):
        kind = part.get("type")
        param = f"messages[{i}].content[{j}]"
        if kind == "text":
            text = part.get("text")
            if isinstance(text, str) and text.strip():
                blocks.append({"type": "text", "text": text})
        elif kind == "image_url":
            blocks.append(_image_block(image_url(part), param))
        else:
            what = {"input_audio": "audio", "file": "files"}.get(str(kind), f"'{kind}' parts")
            raise UnsupportedByProvider(
                f"this gateway sends Anthropic text and images only, not {what}", param=param
            )
    return blocks


def _image_block(url: str | None, param: str) -> dict[str, Any]:
    inline = data_url(url)
    if inline is not None:
        if inline.media_type not in _IMAGE_TYPES:
            raise UnsupportedByProvider(
                "Anthropic takes PNG, JPEG, GIF and WebP images only", param=param
            )
        source = {"type": "base64", "media_type": inline.media_type, "data": inline.data}
        return {"type": "image", "source": source}
    if isinstance(url, str) and url.startswith("https://"):
        # Anthropic fetches the image itself; the gateway never does.
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise UnsupportedByProvider(
        "Anthropic takes images as base64 data URLs (data:image/png;base64,...) or https URLs",
        param=param,
    )


def _add_to_turns(turns: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    """Append ``blocks`` as a turn of ``role``, merged into the last turn of the same role, so
    turns alternate (and a turn's tool results travel together, before any text)."""
    if not blocks:
        return
    if not turns or turns[-1]["role"] != role:
        turns.append({"role": role, "content": []})
    content: list[dict[str, Any]] = turns[-1]["content"]
    content.extend(blocks)
