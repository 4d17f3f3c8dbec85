"""A real Anthropic Messages API server on loopback (``POST /v1/messages``, ``GET /v1/models``),
built on ``tests.upstreams``' threaded server: the same attributes (``base_url``, ``requests``,
``behaviour``, ``reply``, ``required_key``, ``on_request``, ``hang_seconds``).

- ``base_url`` is ``http://127.0.0.1:PORT`` (the adapter adds ``/v1/messages``).
- ``required_key`` is checked against ``x-api-key`` (401 ``authentication_error``); a request
  without ``anthropic-version`` gets 400, as Anthropic answers.
- Bodies are checked as Anthropic checks them (400 ``invalid_request_error``): ``model``,
  ``max_tokens`` (an integer >= 1) and ``messages`` present; the first turn is the user's and
  roles alternate; no empty turn or blank text block; ``tool_use`` / ``tool_result`` blocks need
  ``tools``; each ``tool_result`` answers a ``tool_use`` id of the turn before; images are base64
  of a known media type or an https URL.
- ``"ok"``: a message whose text echoes the last user turn (its text and tool results' content;
  ``" [saw N images]"`` appended for images), or ``reply``; ``stop_reason`` (default
  ``"end_turn"``). ``tool_use``: ``None`` or ``{"name", "input", "id"?}`` (or a list): the answer
  is those blocks (after a text block only when ``reply`` is set), stop_reason ``tool_use``.
  Streams send Anthropic's events: message_start (input tokens), per block content_block_start,
  text_delta or input_json_delta pieces (7 characters), content_block_stop, then message_delta
  (stop_reason, output tokens) and message_stop, with a ping after the start.
- Errors: ``"unauthorized"`` (401), ``"rate_limited"`` (429) and ``"overloaded"`` (529), both with
  ``retry-after: <retry_after>`` (default ``"1"``), ``"error500"``, ``"malformed_json"``,
  ``"hang"``, ``"reset"``, ``"stream_break"`` (five events, then the connection closes),
  ``"stream_error"`` (five events, then an ``error`` event of type ``overloaded_error``).
"""

from __future__ import annotations

import json
from typing import Any

from tests.upstreams import ReceivedRequest, _Handler, _pieces, _Upstream, _words

_IMAGE_TYPES = {"image/png", "image/jpeg", "image/gif", "image/webp"}


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return (
        [block for block in content if isinstance(block, dict)] if isinstance(content, list) else []
    )


def messages_problem(body: Any) -> str | None:
    """What Anthropic would refuse in ``body``, or None."""
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        return "model: Field required"
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        return "max_tokens: Field required"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: Field required"
    has_tools = bool(body.get("tools"))
    previous: dict[str, Any] | None = None
    for n, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("user", "assistant"):
            return f"messages.{n}.role: Input should be 'user' or 'assistant'"
        if n == 0 and role != "user":
            return "messages: first message must use the user role"
        if previous is not None and previous["role"] == role:
            return "messages: roles must alternate between user and assistant"
        blocks = _blocks(message.get("content"))
        if not blocks:
            return f"messages.{n}: all messages must have non-empty content"
        asked = (
            {b.get("id") for b in _blocks(previous["content"]) if b.get("type") == "tool_use"}
            if previous
            else set()
        )
        for block in blocks:
            kind = block.get("type")
            if kind == "text" and not str(block.get("text", "")).strip():
                return f"messages.{n}: text content blocks must contain non-whitespace text"
            if kind in ("tool_use", "tool_result") and not has_tools:
                return (
                    "Requests which include `tool_use` or `tool_result` blocks must define tools."
                )
            if kind == "tool_use" and role != "assistant":
                return f"messages.{n}: tool_use blocks are the assistant's"
            if kind == "tool_result" and block.get("tool_use_id") not in asked:
                return f"messages.{n}: tool_result block(s) provided without a matching tool_use"
            if kind == "image":
                source = block.get("source") or {}
                if source.get("type") == "base64":
                    if source.get("media_type") not in _IMAGE_TYPES or not source.get("data"):
                        return f"messages.{n}: invalid image source"
                elif not (
                    source.get("type") == "url" and str(source.get("url")).startswith("https://")
                ):
                    return f"messages.{n}: invalid image source"
        previous = message
    return None


class AnthropicUpstream(_Upstream):
    def __init__(self, behaviour: str = "ok", *, reply: str | None = None) -> None:
        super().__init__(behaviour, reply=reply)
        self.tool_use: dict[str, Any] | list[dict[str, Any]] | None = None
        self.stop_reason = "end_turn"
        self.retry_after = "1"

    def _error(
        self, handler: _Handler, status: int, error_type: str, headers: dict[str, str] | None = None
    ) -> None:
        body = {"type": "error", "error": {"type": error_type, "message": f"{error_type} (test)"}}
        handler.send_json(status, body, headers)

    def answer(self, handler: _Handler, request: ReceivedRequest) -> None:
        if self.behaviour == "unauthorized" or (
            self.required_key is not None and request.headers.get("x-api-key") != self.required_key
        ):
            self._error(handler, 401, "authentication_error")
            return
        if request.method == "GET" and request.path == "/v1/models":
            handler.send_json(200, {"data": [{"id": "claude-test", "type": "model"}]})
            return
        if request.method != "POST" or request.path != "/v1/messages":
            self._error(handler, 404, "not_found_error")
            return
        if not request.headers.get("anthropic-version"):
            self._error(handler, 400, "invalid_request_error")
            return
        behaviour = self.behaviour
        if behaviour == "rate_limited":
            self._error(handler, 429, "rate_limit_error", {"retry-after": self.retry_after})
        elif behaviour == "overloaded":
            self._error(handler, 529, "overloaded_error", {"retry-after": self.retry_after})
        elif behaviour == "error500":
            self._error(handler, 500, "api_error")
        elif behaviour == "malformed_json":
            handler.send_bytes(200, "application/json", b'{"id": "msg_1", "content": [')
        elif behaviour == "hang":
            self._hang(handler)
        elif behaviour == "reset":
            handler.reset()
        else:
            problem = messages_problem(request.json)
            if problem is not None:
                body = {
                    "type": "error",
                    "error": {"type": "invalid_request_error", "message": problem},
                }
                handler.send_json(400, body)
            elif request.json.get("stream"):
                self._stream(handler, request.json)
            else:
                self._complete(handler, request.json)

    # Answers ----------------------------------------------------------------------------------

    def _content(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        calls = self.tool_use
        if calls is not None and body.get("tools"):
            calls = calls if isinstance(calls, list) else [calls]
            blocks: list[dict[str, Any]] = []
            if self.reply is not None:
                blocks.append({"type": "text", "text": self.reply})
            for n, call in enumerate(calls):
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": call.get("id", f"toolu_{n:02d}"),
                        "name": call["name"],
                        "input": call.get("input", {}),
                    }
                )
            return blocks
        return [{"type": "text", "text": self._text(body)}]

    def _text(self, body: dict[str, Any]) -> str:
        last = body["messages"][-1]
        texts, images = [], 0
        for block in _blocks(last.get("content")):
            if block.get("type") == "text":
                texts.append(block["text"])
            elif block.get("type") == "tool_result":
                content = block.get("content")
                texts.append(content if isinstance(content, str) else json.dumps(content))
            elif block.get("type") == "image":
                images += 1
        text = self.reply if self.reply is not None else " ".join(texts) or "ok"
        return text + (f" [saw {images} images]" if images else "")

    def _stop_reason(self, content: list[dict[str, Any]]) -> str:
        return "tool_use" if any(b["type"] == "tool_use" for b in content) else self.stop_reason

    @staticmethod
    def _input_tokens(body: dict[str, Any]) -> int:
        system = body.get("system")
        words = _words(system) if isinstance(system, str) else 0
        for message in body["messages"]:
            for block in _blocks(message.get("content")):
                words += _words(str(block.get("text") or block.get("content") or ""))
        return words

    @staticmethod
    def _output_tokens(content: list[dict[str, Any]]) -> int:
        return sum(
            _words(b["text"]) if b["type"] == "text" else _words(json.dumps(b["input"]))
            for b in content
        )

    def _complete(self, handler: _Handler, body: dict[str, Any]) -> None:
        content = self._content(body)
        answer = {
            "id": "msg_test",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": content,
            "stop_reason": self._stop_reason(content),
            "stop_sequence": None,
            "usage": {
                "input_tokens": self._input_tokens(body),
                "output_tokens": self._output_tokens(content),
            },
        }
        handler.send_json(200, answer)

    def _stream(self, handler: _Handler, body: dict[str, Any]) -> None:
        content = self._content(body)
        events: list[tuple[str, dict[str, Any]]] = [
            (
                "message_start",
                {
                    "type": "message_start",
                    "message": {
                        "id": "msg_test",
                        "type": "message",
                        "role": "assistant",
                        "model": body["model"],
                        "content": [],
                        "stop_reason": None,
                        "usage": {"input_tokens": self._input_tokens(body), "output_tokens": 1},
                    },
                },
            ),
            ("ping", {"type": "ping"}),
        ]
        for index, block in enumerate(content):
            if block["type"] == "text":
                start = {"type": "text", "text": ""}
                deltas = [{"type": "text_delta", "text": p} for p in _pieces(block["text"])]
            else:
                start = {**block, "input": {}}
                encoded = json.dumps(block["input"])
                deltas = (
                    [
                        {"type": "input_json_delta", "partial_json": encoded[i : i + 7]}
                        for i in range(0, len(encoded), 7)
                    ]
                    if block["input"]
                    else []
                )
            events.append(
                (
                    "content_block_start",
                    {"type": "content_block_start", "index": index, "content_block": start},
                )
            )
            events += [
                ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})
                for d in deltas
            ]
            events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
        events.append(
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": self._stop_reason(content), "stop_sequence": None},
                    "usage": {"output_tokens": self._output_tokens(content)},
                },
            )
        )
        events.append(("message_stop", {"type": "message_stop"}))
        handler.start_chunked("text/event-stream; charset=utf-8")
        for n, (name, data) in enumerate(events):
            if n == 5 and self.behaviour in {"stream_break", "stream_stall", "stream_error"}:
                if self.behaviour == "stream_stall":
                    self._stopping.wait(self.hang_seconds)
                if self.behaviour == "stream_error":
                    error = {"type": "error", "error": {"type": "overloaded_error", "message": "x"}}
                    handler.write_chunk(f"event: error\ndata: {json.dumps(error)}\n\n".encode())
                    handler.end_chunked()
                    return
                handler.drop()
                return
            handler.write_chunk(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
            handler.wfile.flush()
        handler.end_chunked()
