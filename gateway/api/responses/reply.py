"""The Responses API door's reply: a Response object (``ResponseShell``, ``output_items``) and
the named stream events (``ResponseEvents``)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.api.responses.request import ResponsesRequest
from gateway.errors import ApiError
from gateway.providers.base import ChatDelta, ChatResult, Usage


def _usage_json(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.total_tokens,
    }


_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


class ResponseShell:
    """What a Response object says besides its output: its id, the request's echo, its
    status (from the finish reason) and its usage."""

    def __init__(self, request: ResponsesRequest) -> None:
        self.id = f"resp_{uuid.uuid4().hex}"
        self.created_at = int(time.time())
        self.model = request.parsed.alias
        self.echo = request.echo

    def body(
        self,
        status: str,
        output: list[dict[str, Any]],
        *,
        usage: Usage | None = None,
        finish_reason: str | None = None,
        error: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        incomplete = _INCOMPLETE.get(finish_reason or "")
        if status == "completed" and incomplete:
            status = "incomplete"
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": False,
            "error": error,
            "incomplete_details": {"reason": incomplete} if status == "incomplete" else None,
            "model": self.model,
            "output": output,
            "previous_response_id": None,
            "reasoning": None,
            "store": False,
            "truncation": "disabled",
            "usage": _usage_json(usage) if usage is not None else None,
            **self.echo,
        }


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def _text_part(kind: str, text: str) -> dict[str, Any]:
    if kind == "refusal":
        return {"type": "refusal", "refusal": text}
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def output_items(result: ChatResult) -> list[dict[str, Any]]:
    """A plain answer's first choice as Response output items: a message (its text, or its
    refusal), then one function_call item per tool call."""
    choice = result.choices[0] if result.choices else None
    if choice is None:
        return []
    status = "incomplete" if choice.finish_reason in _INCOMPLETE else "completed"
    items: list[dict[str, Any]] = []
    parts = []
    if choice.content or not (choice.tool_calls or choice.refusal):
        parts.append(_text_part("output_text", choice.content))
    if choice.refusal:
        parts.append(_text_part("refusal", choice.refusal))
    if parts:
        items.append(
            {
                "type": "message",
                "id": _new_id("msg"),
                "status": status,
                "role": "assistant",
                "content": parts,
            }
        )
    for call in choice.tool_calls or ():
        function = call.get("function") or {}
        items.append(
            {
                "type": "function_call",
                "id": _new_id("fc"),
                "call_id": call.get("id") or _new_id("call"),
                "name": function.get("name", ""),
                "arguments": function.get("arguments", ""),
                "status": "completed",
            }
        )
    return items


def _sse_event(kind: str, sequence: int, body: dict[str, Any]) -> bytes:
    payload = orjson.dumps({"type": kind, "sequence_number": sequence, **body})
    return b"event: " + kind.encode() + b"\ndata: " + payload + b"\n\n"


@dataclass(slots=True)
class _OpenItem:
    """The output item being streamed: a message (its parts) or a function call."""

    index: int  # output_index
    item: dict[str, Any]
    tool_index: int | None = None  # the chat delta's tool-call index, for a function call
    part_kind: str | None = None  # the message's open part: output_text | refusal
    texts: list[str] = field(default_factory=list)


class ResponseEvents:
    """A streamed reply as the Responses API's named events, in OpenAI's order:
    ``response.created``, ``response.in_progress``, then per output item
    ``response.output_item.added``, its content (``response.content_part.added``,
    ``response.output_text.delta`` ... ``.done``, ``response.content_part.done``; or
    ``response.function_call_arguments.delta`` ... ``.done``), ``response.output_item.done``;
    and ``response.completed`` (``response.incomplete`` when cut short, ``error`` and
    ``response.failed`` when the upstream failed mid-way). Every event has its
    ``sequence_number``."""

    def __init__(self, shell: ResponseShell) -> None:
        self.shell = shell
        self.sequence = 0
        self.output: list[dict[str, Any]] = []
        self.open: _OpenItem | None = None
        self.finish_reason: str | None = None

    def _event(self, kind: str, **body: Any) -> bytes:
        event = _sse_event(kind, self.sequence, body)
        self.sequence += 1
        return event

    def start(self) -> list[bytes]:
        snapshot = self.shell.body("in_progress", [])
        return [
            self._event("response.created", response=snapshot),
            self._event("response.in_progress", response=snapshot),
        ]

    # Items -------------------------------------------------------------------------------------

    def _open_message(self) -> list[bytes]:
        item = {
            "type": "message",
            "id": _new_id("msg"),
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        self.open = _OpenItem(len(self.output), item)
        self.output.append(item)
        return [self._event("response.output_item.added", output_index=self.open.index, item=item)]

    def _open_part(self, kind: str) -> list[bytes]:
        current = self.open
        assert current is not None
        current.part_kind, current.texts = kind, []
        current.item["content"].append(_text_part(kind, ""))
        return [
            self._event(
                "response.content_part.added",
                item_id=current.item["id"],
                output_index=current.index,
                content_index=len(current.item["content"]) - 1,
                part=_text_part(kind, ""),
            )
        ]

    def _close_part(self) -> list[bytes]:
        current = self.open
        if current is None or current.part_kind is None:
            return []
        kind, text = current.part_kind, "".join(current.texts)
        content_index = len(current.item["content"]) - 1
        part = _text_part(kind, text)
        current.item["content"][content_index] = part
        where = {
            "item_id": current.item["id"],
            "output_index": current.index,
            "content_index": content_index,
        }
        done = (
            self._event("response.refusal.done", refusal=text, **where)
            if kind == "refusal"
            else self._event("response.output_text.done", text=text, logprobs=[], **where)
        )
        current.part_kind = None
        return [done, self._event("response.content_part.done", part=part, **where)]

    def _close(self, status: str = "completed") -> list[bytes]:
        current = self.open
        if current is None:
            return []
        events = self._close_part()
        item = current.item
        if item["type"] == "function_call":
            item["arguments"] = "".join(current.texts)
            events.append(
                self._event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=current.index,
                    name=item["name"],
                    arguments=item["arguments"],
                )
            )
        item["status"] = status
        events.append(
            self._event("response.output_item.done", output_index=current.index, item=item)
        )
        self.open = None
        return events

    def _text(self, kind: str, piece: str) -> list[bytes]:
        events: list[bytes] = []
        if self.open is None or self.open.item["type"] != "message":
            events += self._close()
            events += self._open_message()
        current = self.open
        assert current is not None
        if current.part_kind != kind:
            events += self._close_part()
            events += self._open_part(kind)
        current.texts.append(piece)
        where = {
            "item_id": current.item["id"],
            "output_index": current.index,
            "content_index": len(current.item["content"]) - 1,
        }
        if kind == "refusal":
            events.append(self._event("response.refusal.delta", delta=piece, **where))
        else:
            events.append(
                self._event("response.output_text.delta", delta=piece, logprobs=[], **where)
            )
        return events

    def _tool_fragment(self, fragment: dict[str, Any]) -> list[bytes]:
        events: list[bytes] = []
        tool_index = fragment.get("index", 0)
        function = fragment.get("function") or {}
        current = self.open
        if current is None or current.tool_index != tool_index:
            events += self._close()
            item = {
                "type": "function_call",
                "id": _new_id("fc"),
                "call_id": fragment.get("id") or _new_id("call"),
                "name": function.get("name") or "",
                "arguments": "",
                "status": "in_progress",
            }
            current = self.open = _OpenItem(len(self.output), item, tool_index=tool_index)
            self.output.append(item)
            events.append(
                self._event("response.output_item.added", output_index=current.index, item=item)
            )
        piece = function.get("arguments") or ""
        if piece:
            current.texts.append(piece)
            events.append(
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=current.item["id"],
                    output_index=current.index,
                    delta=piece,
                )
            )
        return events

    # The stream --------------------------------------------------------------------------------

    def delta(self, delta: ChatDelta) -> list[bytes]:
        if delta.index != 0:
            return []  # the Responses API has one answer; the door never asks for more
        events: list[bytes] = []
        if delta.content:
            events += self._text("output_text", delta.content)
        if delta.refusal:
            events += self._text("refusal", delta.refusal)
        for fragment in delta.tool_calls or ():
            events += self._tool_fragment(fragment)
        if delta.finish_reason:
            self.finish_reason = delta.finish_reason
        return events

    def finish(self, usage: Usage) -> list[bytes]:
        events: list[bytes] = []
        if not self.output:  # an empty answer is still one (empty) message, as OpenAI's is
            events += self._open_message()
            events += self._open_part("output_text")
        cut_short = self.finish_reason in _INCOMPLETE
        events += self._close("incomplete" if cut_short else "completed")
        body = self.shell.body(
            "completed", self.output, usage=usage, finish_reason=self.finish_reason
        )
        kind = "response.incomplete" if body["status"] == "incomplete" else "response.completed"
        events.append(self._event(kind, response=body))
        return events

    def fail(self, exc: ApiError) -> list[bytes]:
        """The upstream failed after the stream began: OpenAI's ``error`` event, then the
        response as failed."""
        error = {"code": exc.code, "message": exc.message}
        return [
            self._event("error", code=exc.code, message=exc.message, param=exc.param),
            self._event(
                "response.failed", response=self.shell.body("failed", self.output, error=error)
            ),
        ]
