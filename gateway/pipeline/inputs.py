"""Everything a client sends that reaches the model, as (param, role, text) parts.

Limits, reservations, the PII policy and the injection screen all read this one list, so none of
them sees only ``messages[].content``: tool-call arguments, ``tools`` definitions, system and
developer messages, assistant turns the client wrote, and the pass-through fields the upstream
reads (``prediction``, ``response_format``, ``metadata``, ``tool_choice``) count, are capped,
are reserved for, and are screened like any message.

``param`` is the request's own path to the part (``messages[2].tool_calls[0].function.arguments``,
``tools[1]``, ``response_format``), so an error can name it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.errors import InvalidRequest
from gateway.providers.base import ChatMessage, ChatRequest

# Pass-through fields whose text reaches the model (the rest are numbers and switches).
TEXT_PARAMS = ("tools", "tool_choice", "response_format", "prediction", "metadata", "audio")
# Extra roles: where a part comes from when it is not a message's content.
TOOLS, FIELD = "tools", "field"

# OpenAI's own bounds, enforced here so an upstream never sees more than it would accept.
MAX_TOOLS = 128
MAX_METADATA_PAIRS, MAX_METADATA_KEY, MAX_METADATA_VALUE = 16, 64, 512


@dataclass(frozen=True, slots=True)
class Part:
    param: str
    role: str  # a message's role, "tools" or "field"
    text: str  # for a structured field: its compact JSON (what is counted)
    strings: tuple[str, ...] = ()  # a structured field's string leaves (what is screened)

    @property
    def screened(self) -> tuple[str, ...]:
        return self.strings if self.strings else ((self.text,) if self.text else ())


def _dumps(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except (TypeError, orjson.JSONEncodeError):
        return str(value)


def string_leaves(value: Any) -> Iterator[str]:
    """Every string inside a JSON value, keys included (a schema's property names and
    descriptions reach the model as much as its values do)."""
    if isinstance(value, str):
        if value:
            yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and key:
                yield key
            yield from string_leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from string_leaves(item)


def message_parts(index: int, message: ChatMessage) -> Iterator[Part]:
    if message.content:
        yield Part(f"messages[{index}].content", message.role, message.content)
    for n, call in enumerate(message.tool_calls or ()):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            continue
        base = f"messages[{index}].tool_calls[{n}].function"
        if isinstance(function.get("name"), str) and function["name"]:
            yield Part(f"{base}.name", message.role, function["name"])
        if isinstance(function.get("arguments"), str) and function["arguments"]:
            yield Part(f"{base}.arguments", message.role, function["arguments"])


def field_parts(extra: dict[str, Any]) -> Iterator[Part]:
    for name in TEXT_PARAMS:
        value = extra.get(name)
        if value is None:
            continue
        if name == "tools" and isinstance(value, list):
            for n, tool in enumerate(value):
                yield Part(f"tools[{n}]", TOOLS, _dumps(tool), tuple(string_leaves(tool)))
            continue
        if isinstance(value, str):
            yield Part(name, FIELD, value)
        else:
            yield Part(name, FIELD, _dumps(value), tuple(string_leaves(value)))


def parts(messages: list[ChatMessage], extra: dict[str, Any]) -> list[Part]:
    result = [p for i, m in enumerate(messages) for p in message_parts(i, m)]
    result.extend(field_parts(extra))
    return result


def request_chars(request: ChatRequest) -> int:
    """Characters of everything the upstream will read (for reservations and estimates)."""
    return sum(len(p.text) for p in parts(request.messages, request.extra))


def check_shape(extra: dict[str, Any]) -> None:
    """OpenAI's bounds on pass-through fields, as a 400 naming the param."""
    tools = extra.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise InvalidRequest("'tools' must be a list.", param="tools", code="invalid_value")
        if len(tools) > MAX_TOOLS:
            raise InvalidRequest(
                f"'tools' holds {len(tools)} tools; at most {MAX_TOOLS}.",
                param="tools",
                code="invalid_value",
            )
    metadata = extra.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
        ):
            raise InvalidRequest(
                "'metadata' must map strings to strings.", param="metadata", code="invalid_value"
            )
        if len(metadata) > MAX_METADATA_PAIRS:
            raise InvalidRequest(
                f"'metadata' holds at most {MAX_METADATA_PAIRS} pairs.",
                param="metadata",
                code="invalid_value",
            )
        for key, value in metadata.items():
            if len(key) > MAX_METADATA_KEY or len(value) > MAX_METADATA_VALUE:
                raise InvalidRequest(
                    f"'metadata' keys are at most {MAX_METADATA_KEY} characters and values at "
                    f"most {MAX_METADATA_VALUE}.",
                    param="metadata",
                    code="invalid_value",
                )


def transform_fields(extra: dict[str, Any], text_fn: Callable[[str], str]) -> dict[str, Any]:
    """The pass-through fields with ``text_fn`` applied to every string value (not keys: a
    schema's property names are structure). Used to mask PII the same way as in messages."""

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            return text_fn(value) if value else value
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    changed = {name: walk(extra[name]) for name in TEXT_PARAMS if extra.get(name) is not None}
    return {**extra, **changed} if changed else extra
