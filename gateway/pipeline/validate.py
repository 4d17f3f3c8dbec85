"""Stage "guard input", first part: parse and validate the body into a normalised request.

Prompts are not HTML-escaped: that corrupts them (``a < b`` becomes ``a &lt; b`` for the model).
Escaping belongs where text is rendered. Here we only remove control characters other than
newline and tab, reject invalid UTF-8, and enforce the tier's size limit.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Any

import orjson
from rest_framework import serializers

from gateway.errors import InvalidRequest
from gateway.pipeline.inputs import Part, check_shape, parts
from gateway.providers.base import ChatMessage

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")

# OpenAI parameters the gateway accepts and passes through to OpenAI-compatible upstreams.
PASSTHROUGH_PARAMS = frozenset({
    "frequency_penalty", "presence_penalty", "seed", "logit_bias", "response_format",
    "tools", "tool_choice", "parallel_tool_calls", "logprobs", "top_logprobs", "metadata",
    "store", "service_tier", "reasoning_effort", "modalities", "prediction", "audio",
})
ROLES = ("system", "developer", "user", "assistant", "tool")


def clean_text(text: str) -> str:
    return _CONTROL.sub("", text)


class ContentField(serializers.Field):
    """A message's content: a string, or a list of text parts ``{"type": "text", "text": ...}``."""

    def to_internal_value(self, data: Any) -> str | None:
        if data is None:
            return None
        if isinstance(data, str):
            return data
        if isinstance(data, list):
            texts = []
            for index, part in enumerate(data):
                if not isinstance(part, dict) or part.get("type") != "text":
                    raise serializers.ValidationError(
                        f"content[{index}]: only text parts ({{'type': 'text', 'text': ...}}) "
                        "are supported"
                    )
                text = part.get("text")
                if not isinstance(text, str):
                    raise serializers.ValidationError(f"content[{index}].text must be a string")
                texts.append(text)
            return "".join(texts)
        raise serializers.ValidationError("content must be a string or a list of text parts")

    def to_representation(self, value: Any) -> Any:
        return value


class MessageSerializer(serializers.Serializer):
    # DRF's own message repeats the value sent; error messages never carry the request's text.
    role = serializers.ChoiceField(
        choices=ROLES, error_messages={"invalid_choice": f"must be one of {', '.join(ROLES)}"})
    content = ContentField(required=False, allow_null=True)
    name = serializers.CharField(required=False, max_length=64)
    tool_call_id = serializers.CharField(required=False, max_length=128)
    tool_calls = serializers.ListField(child=serializers.DictField(), required=False,
                                       max_length=128)

    def validate(self, attrs: dict) -> dict:
        role = attrs["role"]
        if role == "tool" and not attrs.get("tool_call_id"):
            raise serializers.ValidationError("a 'tool' message needs 'tool_call_id'")
        if attrs.get("content") is None and not (role == "assistant" and attrs.get("tool_calls")):
            raise serializers.ValidationError("'content' is required")
        return attrs


class StopField(serializers.Field):
    def to_internal_value(self, data: Any) -> list[str] | None:
        if data is None:
            return None
        if isinstance(data, str):
            return [data]
        if isinstance(data, list) and len(data) <= 4 and all(isinstance(s, str) for s in data):
            return data
        raise serializers.ValidationError("stop must be a string or a list of up to 4 strings")

    def to_representation(self, value: Any) -> Any:
        return value


class StreamOptionsSerializer(serializers.Serializer):
    include_usage = serializers.BooleanField(required=False, default=False)


class ChatCompletionSerializer(serializers.Serializer):
    model = serializers.CharField(max_length=64)
    messages = MessageSerializer(many=True, allow_empty=False, max_length=2048)
    temperature = serializers.FloatField(required=False, allow_null=True, min_value=0,
                                         max_value=2)
    top_p = serializers.FloatField(required=False, allow_null=True, min_value=0, max_value=1)
    max_tokens = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    max_completion_tokens = serializers.IntegerField(required=False, allow_null=True,
                                                     min_value=1)
    stop = StopField(required=False, allow_null=True)
    n = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=1,
                                 error_messages={"max_value": "only n=1 is supported"})
    user = serializers.CharField(required=False, allow_blank=True, max_length=256)
    stream = serializers.BooleanField(required=False, allow_null=True, default=False)
    stream_options = StreamOptionsSerializer(required=False, allow_null=True)


@dataclass(slots=True)
class ParsedChat:
    alias: str
    messages: list[ChatMessage]
    stream: bool
    include_usage: bool
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: list[str] | None = None
    user: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    _parts: list[Part] | None = field(default=None, repr=False, compare=False)

    def parts(self) -> list[Part]:
        """Everything the client sent that reaches the model (``gateway.pipeline.inputs``);
        worked out once per request (limits and the screen both read it)."""
        if self._parts is None:
            self._parts = parts(self.messages, self.extra)
        return self._parts

    @property
    def prompt_chars(self) -> int:
        return sum(len(p.text) for p in self.parts())


def parse_json_body(body: bytes) -> dict:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest("The request body is not valid UTF-8.", code="invalid_utf8") from exc
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(
            f"The request body is not valid JSON: {exc}", code="invalid_json"
        ) from exc
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    return data


def _first_error(errors: Any, path: str = "") -> tuple[str, str]:
    """The first (param path, message) of DRF's nested error structure."""
    if isinstance(errors, dict):
        for key, value in errors.items():
            if key == "non_field_errors":
                return _first_error(value, path)
            if isinstance(key, int) or str(key).isdigit():
                return _first_error(value, f"{path}[{key}]")
            return _first_error(value, f"{path}.{key}" if path else str(key))
    if isinstance(errors, list):
        for index, value in enumerate(errors):
            if isinstance(value, dict | list) and value:
                return _first_error(value, f"{path}[{index}]")
            if not isinstance(value, dict | list):
                return path, str(value)
    return path, str(errors)


# One serializer instance per thread, reused: DRF deep-copies a serializer's fields every time
# one is created (most of its cost). Validation is synchronous, so within a thread one request
# at a time uses it, and resetting its per-call state is enough.
_local = threading.local()
_KNOWN_FIELDS = frozenset(ChatCompletionSerializer().fields)


def _validate(data: dict) -> ChatCompletionSerializer:
    serializer = getattr(_local, "serializer", None)
    if serializer is None:
        serializer = _local.serializer = ChatCompletionSerializer()
    for attr in ("_validated_data", "_errors", "_data"):
        serializer.__dict__.pop(attr, None)
    serializer.initial_data = data
    serializer.is_valid()
    return serializer


def parse_chat_request(data: dict) -> ParsedChat:
    extra = {k: data.pop(k) for k in list(data) if k in PASSTHROUGH_PARAMS}
    check_shape(extra)
    unknown = sorted(set(data) - _KNOWN_FIELDS)
    if unknown:
        raise InvalidRequest(f"Unrecognized request argument supplied: {unknown[0]}",
                             param=unknown[0], code="unknown_parameter")
    serializer = _validate(data)
    if serializer.errors:
        param, message = _first_error(serializer.errors)
        raise InvalidRequest(f"Invalid value for '{param}': {message}", param=param,
                             code="invalid_value")
    v = serializer.validated_data
    messages = [
        ChatMessage(
            role="system" if m["role"] == "developer" else m["role"],
            content=clean_text(m.get("content") or ""),
            name=m.get("name"),
            tool_call_id=m.get("tool_call_id"),
            tool_calls=m.get("tool_calls"),
        )
        for m in v["messages"]
    ]
    options = v.get("stream_options") or {}
    max_tokens = v.get("max_completion_tokens") or v.get("max_tokens")
    return ParsedChat(
        alias=v["model"],
        messages=messages,
        stream=bool(v.get("stream")),
        include_usage=bool(options.get("include_usage")),
        temperature=v.get("temperature"),
        top_p=v.get("top_p"),
        max_tokens=max_tokens,
        stop=v.get("stop"),
        user=v.get("user") or None,
        extra=extra,
    )
