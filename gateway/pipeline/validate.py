"""Stage "guard input", first part: parse and validate the body into a normalised request.

Prompts are not HTML-escaped: that corrupts them (``a < b`` becomes ``a &lt; b`` for the model).
Escaping belongs where text is rendered. Here we only remove control characters other than
newline and tab, reject invalid UTF-8, and enforce the tier's size limit.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import orjson
from rest_framework import serializers

from gateway.errors import InvalidRequest
from gateway.pipeline.inputs import Part, check_shape, parts
from gateway.providers.base import MEDIA_KINDS, ChatMessage

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# The same characters as bytes, for ASCII text (C0 controls but tab and newline, and DEL).
_ASCII_CONTROL = bytes([*range(0x00, 0x09), *range(0x0B, 0x20), 0x7F])
# C1 controls as UTF-8: C2 80 to C2 9F (C2 is never a continuation byte).
_C1_UTF8 = re.compile(rb"\xc2[\x80-\x9f]")
# Where a character ``clean_text`` removes can come from in a JSON body: an escape (``\b``,
# ``\f``, ``\r``, ``\u0000``-``\u001f``, ``\u007f``-``\u009f``), DEL as it is, or a C1
# control as UTF-8. A C0 control as it is (a raw byte under 0x20) is not valid JSON: ``orjson``
# refuses it, and it refuses invalid UTF-8 (an overlong form, say) too.
_LOW_ESCAPE = re.compile(rb"\\(?:[bfr]|u00(?:[01][0-9a-fA-F]|7[fF]|[89][0-9a-fA-F]))")
_MOST_ESCAPED_BACKSLASHES = 64  # escaped backslashes before b, f, r or u worth telling apart

# OpenAI parameters the gateway accepts and passes through to OpenAI-compatible upstreams.
PASSTHROUGH_PARAMS = frozenset(
    {
        "frequency_penalty",
        "presence_penalty",
        "seed",
        "logit_bias",
        "response_format",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "logprobs",
        "top_logprobs",
        "metadata",
        "store",
        "service_tier",
        "reasoning_effort",
        "modalities",
        "prediction",
        "audio",
    }
)
ROLES = ("system", "developer", "user", "assistant", "tool")


def clean_text(text: str) -> str:
    """``text`` without control characters (but tab and newline). The regular expression's scan
    costs about 5 ns a character, so it runs only on a text that holds one: ASCII text
    (``isascii`` is a flag, no scan) takes ``bytes.translate``; other text is looked at as
    UTF-8, where C0 controls and DEL are single bytes and C1 controls are C2 80 to C2 9F (three
    to four times faster than the scan). A request body that ``control_free_json`` clears skips
    this altogether."""
    if text.isascii():
        raw = text.encode("ascii")
        kept = raw.translate(None, _ASCII_CONTROL)
        return text if len(kept) == len(raw) else kept.decode("ascii")
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw.translate(None, _ASCII_CONTROL)) == len(raw) and (
        b"\xc2" not in raw or _C1_UTF8.search(raw) is None
    ):
        return text
    return _CONTROL.sub("", text)


def control_free_json(body: bytes) -> bool:
    """True when no string of the JSON ``body`` (which ``orjson`` parsed) holds a character
    ``clean_text`` removes, so its texts need no cleaning. Every message of a long conversation
    is cleaned again on every turn: this looks at the body once, at the speed of ``memchr``
    (about 0.2 ms for 400 kB, against 2 ms for cleaning its text), and answers False at the
    first doubt: a false "no" costs the cleaning, never a control character let through."""
    if b"\x7f" in body or (b"\xc2" in body and _C1_UTF8.search(body) is not None):
        return False
    position = 0
    for _ in range(_MOST_ESCAPED_BACKSLASHES):
        escape = _LOW_ESCAPE.search(body, position)
        if escape is None:
            return True
        start = escape.start()
        # The backslash starts an escape unless it is the second of an escaped backslash:
        # an even number of backslashes before it (none, or pairs) means it starts one.
        before = start
        while before and body[before - 1] == 0x5C:
            before -= 1
        if (start - before) % 2 == 0:
            return False
        position = start + 1
    return False  # many escaped backslashes before b, f, r or u: cleaning costs less


_MEDIA_FIELDS = {"image_url": "image_url", "input_audio": "input_audio", "file": "file"}
_IMAGE_DETAIL = ("auto", "low", "high")
_AUDIO_FORMATS = ("wav", "mp3")


def _check_part(index: int, part: Any) -> None:
    """One content part in OpenAI's shape: text, image_url, input_audio or file."""
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "text":
        if not isinstance(part.get("text"), str):
            raise serializers.ValidationError(f"content[{index}].text must be a string")
        return
    if kind not in MEDIA_KINDS:
        raise serializers.ValidationError(
            f"content[{index}].type must be one of text, {', '.join(MEDIA_KINDS)}"
        )
    body = part.get(kind)
    if not isinstance(body, dict):
        raise serializers.ValidationError(f"content[{index}].{kind} must be an object")
    if kind == "image_url":
        url = body.get("url")
        if not isinstance(url, str) or not url.startswith(("https://", "http://", "data:image/")):
            raise serializers.ValidationError(
                f"content[{index}].image_url.url must be an http(s) URL or a data:image/ URL"
            )
        if body.get("detail") not in (None, *_IMAGE_DETAIL):
            raise serializers.ValidationError(
                f"content[{index}].image_url.detail must be one of {', '.join(_IMAGE_DETAIL)}"
            )
    elif kind == "input_audio":
        if not isinstance(body.get("data"), str) or body.get("format") not in _AUDIO_FORMATS:
            raise serializers.ValidationError(
                f"content[{index}].input_audio needs base64 'data' and a 'format' of "
                f"{' or '.join(_AUDIO_FORMATS)}"
            )
    elif not any(isinstance(body.get(k), str) for k in ("file_data", "file_id")):
        raise serializers.ValidationError(
            f"content[{index}].file needs 'file_data' (base64) or 'file_id'"
        )


def media_size(part: dict[str, Any]) -> int:
    """Characters of a media part's payload (a data URL, base64 data, a URL)."""
    body = part.get(part.get("type", ""), {})
    return sum(len(v) for v in body.values() if isinstance(v, str))


# A message's content once validated: its text, its content parts, or None (absent).
MessageContent = str | list[dict[str, Any]] | None


class ContentField(serializers.Field[MessageContent, Any, MessageContent, Any]):
    """A message's content: a string, or a list of parts (text, image_url, input_audio, file).
    Text only: the text. With a non-text part: the parts as given (validated)."""

    def to_internal_value(self, data: Any) -> MessageContent:
        if data is None:
            return None
        if isinstance(data, str):
            return data
        if isinstance(data, list):
            media = False
            for index, part in enumerate(data):
                _check_part(index, part)
                media = media or part["type"] != "text"
            return list(data) if media else "".join(p["text"] for p in data)
        raise serializers.ValidationError("content must be a string or a list of content parts")

    def to_representation(self, value: MessageContent) -> MessageContent:
        return value


# The serializers below only validate input: the instance they would represent is the
# validated mapping.


class MessageSerializer(serializers.Serializer[dict[str, Any]]):
    # DRF's own message repeats the value sent; error messages never carry the request's text.
    role = serializers.ChoiceField(
        choices=ROLES, error_messages={"invalid_choice": f"must be one of {', '.join(ROLES)}"}
    )
    content = ContentField(required=False, allow_null=True)
    name = serializers.CharField(required=False, max_length=64)
    tool_call_id = serializers.CharField(required=False, max_length=128)
    tool_calls = serializers.ListField(
        child=serializers.DictField(), required=False, max_length=128
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        role = attrs["role"]
        if role == "tool" and not attrs.get("tool_call_id"):
            raise serializers.ValidationError("a 'tool' message needs 'tool_call_id'")
        content = attrs.get("content")
        if content is None and not (role == "assistant" and attrs.get("tool_calls")):
            raise serializers.ValidationError("'content' is required")
        if isinstance(content, list) and role != "user":
            # OpenAI takes images, audio and files in user messages only.
            raise serializers.ValidationError(
                f"only user messages may carry {', '.join(MEDIA_KINDS)} parts"
            )
        return attrs


class StopField(serializers.Field[list[str] | None, Any, list[str] | None, Any]):
    def to_internal_value(self, data: Any) -> list[str] | None:
        if data is None:
            return None
        if isinstance(data, str):
            return [data]
        if isinstance(data, list) and len(data) <= 4 and all(isinstance(s, str) for s in data):
            return data
        raise serializers.ValidationError("stop must be a string or a list of up to 4 strings")

    def to_representation(self, value: list[str] | None) -> list[str] | None:
        return value


class StreamOptionsSerializer(serializers.Serializer[dict[str, Any]]):
    include_usage = serializers.BooleanField(required=False, default=False)


class ChatCompletionSerializer(serializers.Serializer[dict[str, Any]]):
    model = serializers.CharField(max_length=64)
    # With many=True DRF hands max_length to the ListSerializer; the stubs leave it out.
    messages = MessageSerializer(  # type: ignore[call-arg]
        many=True, allow_empty=False, max_length=2048
    )
    temperature = serializers.FloatField(required=False, allow_null=True, min_value=0, max_value=2)
    top_p = serializers.FloatField(required=False, allow_null=True, min_value=0, max_value=1)
    max_tokens = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    max_completion_tokens = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    stop = StopField(required=False, allow_null=True)
    n = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=128)
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
    n: int = 1
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

    def media(self) -> list[tuple[str, dict[str, Any]]]:
        """(param, part) of every image, audio and file part the client sent."""
        return [
            (f"messages[{i}].content[{j}]", part)
            for i, m in enumerate(self.messages)
            for j, part in m.media()
        ]

    def content_kinds(self) -> list[str]:
        """Which kinds of content the request carried, sorted (for usage records and metrics;
        never their bodies): text, image_url, input_audio, file, tool_calls, tool_results."""
        kinds = {part["type"] for _, part in self.media()}
        if any(m.content for m in self.messages):
            kinds.add("text")
        if any(m.tool_calls for m in self.messages):
            kinds.add("tool_calls")
        if any(m.role == "tool" for m in self.messages):
            kinds.add("tool_results")
        return sorted(kinds)


def parse_json_body(body: bytes) -> dict[str, Any]:
    # orjson checks that the whole body is UTF-8 before parsing it, so a body it parses is
    # valid UTF-8; only a refused one is decoded again, to say which of the two it is not.
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as not_utf8:
            raise InvalidRequest(
                "The request body is not valid UTF-8.", code="invalid_utf8"
            ) from not_utf8
        raise InvalidRequest(
            f"The request body is not valid JSON: {exc}", code="invalid_json"
        ) from exc
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    return data


def refuse_unknown_fields(data: dict[str, Any], known: Collection[str]) -> None:
    """OpenAI's 400 for a field the endpoint does not take (the first, alphabetically)."""
    unknown = sorted(set(data).difference(known))
    if unknown:
        raise InvalidRequest(
            f"Unrecognized request argument supplied: {unknown[0]}",
            param=unknown[0],
            code="unknown_parameter",
        )


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


def _validate(data: dict[str, Any]) -> ChatCompletionSerializer:
    serializer = getattr(_local, "serializer", None)
    if serializer is None:
        serializer = _local.serializer = ChatCompletionSerializer()
    for attr in ("_validated_data", "_errors", "_data"):
        serializer.__dict__.pop(attr, None)
    serializer.initial_data = data
    serializer.is_valid()
    return serializer


# The plain shape of a chat request, checked by hand: the serializer's field machinery costs
# about 100 microseconds a request, a tenth of the gateway's CPU per request. A request in this
# shape is valid and ``plain_chat_request`` returns exactly the serializer's validated data; for
# anything else (another type, a value out of range or that the serializer would trim or
# convert, a message with more than a role and text) it returns None and the serializer
# decides. tests/test_validate_plain.py holds the two equal on generated requests.
_PLAIN_ROLES = frozenset(ROLES) - {"tool"}  # a tool message needs its tool_call_id
_UNSAFE_TEXT = re.compile(r"[\x00\ud800-\udfff]")  # what DRF's CharField refuses


def _plain_str(value: Any, max_length: int, *, blank: bool) -> bool:
    return (
        type(value) is str
        and len(value) <= max_length
        and (blank or value != "")
        and value == value.strip()
        and _UNSAFE_TEXT.search(value) is None
    )


def _plain_number(value: Any, low: float, high: float) -> bool:
    return value is None or (type(value) in (int, float) and low <= value <= high)


def _plain_int(value: Any, high: int | None = None) -> bool:
    return value is None or (type(value) is int and value >= 1 and (high is None or value <= high))


def plain_chat_request(data: dict[str, Any]) -> dict[str, Any] | None:
    """``data``'s validated form if it is a plain chat request (see above), else None."""
    model = data.get("model")
    messages = data.get("messages")
    if (
        not _plain_str(model, 64, blank=False)
        or type(messages) is not list
        or not 0 < len(messages) <= 2048
    ):
        return None
    plain_messages = []
    for m in messages:
        if type(m) is not dict or len(m) != 2:
            return None
        role, content = m.get("role"), m.get("content")
        if type(content) is not str or type(role) is not str or role not in _PLAIN_ROLES:
            return None
        plain_messages.append({"role": role, "content": content})
    v: dict[str, Any] = {"model": model, "messages": plain_messages}
    for name, low, high in (("temperature", 0, 2), ("top_p", 0, 1)):
        if name in data:
            value = data[name]
            if not _plain_number(value, low, high):
                return None
            v[name] = None if value is None else float(value)
    for name, most in (("max_tokens", None), ("max_completion_tokens", None), ("n", 128)):
        if name in data:
            if not _plain_int(data[name], most):
                return None
            v[name] = data[name]
    if "stop" in data:
        stop = data["stop"]
        if type(stop) is str:
            v["stop"] = [stop]
        elif stop is None or (
            type(stop) is list and len(stop) <= 4 and all(type(s) is str for s in stop)
        ):
            v["stop"] = stop
        else:
            return None
    if "user" in data:
        if not _plain_str(data["user"], 256, blank=True):
            return None
        v["user"] = data["user"]
    stream = data.get("stream", False)
    if stream is not None and type(stream) is not bool:
        return None
    v["stream"] = stream
    if "stream_options" in data:
        options = data["stream_options"]
        if options is None:
            v["stream_options"] = None
        elif type(options) is dict and set(options) <= {"include_usage"}:
            include = options.get("include_usage", False)
            if type(include) is not bool:
                return None
            v["stream_options"] = {"include_usage": include}
        else:
            return None
    return v


def parse_chat_request(data: dict[str, Any], *, control_free: bool = False) -> ParsedChat:
    """``control_free``: the caller made sure no string of ``data`` holds a character
    ``clean_text`` removes (``control_free_json`` on the body it was parsed from)."""
    extra = {k: data.pop(k) for k in list(data) if k in PASSTHROUGH_PARAMS}
    check_shape(extra)
    refuse_unknown_fields(data, _KNOWN_FIELDS)
    v = plain_chat_request(data)
    if v is None:  # not the plain shape: the serializer judges it, and words any error
        serializer = _validate(data)
        if serializer.errors:
            param, message = _first_error(serializer.errors)
            raise InvalidRequest(
                f"Invalid value for '{param}': {message}", param=param, code="invalid_value"
            )
        v = serializer.validated_data
    messages = [_message(m, clean=not control_free) for m in v["messages"]]
    n = v.get("n") or 1
    if n > 1:
        extra["n"] = n
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
        n=n,
    )


def _message(m: dict[str, Any], *, clean: bool = True) -> ChatMessage:
    content = m.get("content")
    parts = None
    if isinstance(content, list):
        # Text parts are cleaned like any text; media parts pass as given.
        parts = tuple(
            {**p, "text": clean_text(p["text"])} if clean and p["type"] == "text" else p
            for p in content
        )
        content = "".join(p["text"] for p in parts if p["type"] == "text")
    return ChatMessage(
        # Developer messages go upstream as developer messages (OpenAI's newer name for system
        # instructions); every stage treats the two alike.
        role=m["role"],
        content=clean_text(content or "") if clean else content or "",
        name=m.get("name"),
        tool_call_id=m.get("tool_call_id"),
        tool_calls=m.get("tool_calls"),
        parts=parts,
    )


# --- /v1/embeddings ---------------------------------------------------------------------------

EMBEDDING_FIELDS = frozenset({"model", "input", "dimensions", "encoding_format", "user"})
MAX_EMBEDDING_INPUTS = 2048  # OpenAI's bound


@dataclass(frozen=True, slots=True)
class ParsedEmbeddings:
    alias: str
    inputs: list[str]
    dimensions: int | None = None
    encoding_format: str = "float"  # float | base64
    user: str | None = None


def _invalid(message: str, param: str) -> InvalidRequest:
    return InvalidRequest(message, param=param, code="invalid_value")


def parse_embeddings_request(data: dict[str, Any]) -> ParsedEmbeddings:
    refuse_unknown_fields(data, EMBEDDING_FIELDS)
    model = data.get("model")
    if not isinstance(model, str) or not 0 < len(model) <= 64 or "\x00" in model:
        raise _invalid("'model' must be a model name of at most 64 characters.", "model")
    raw = data.get("input")
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not items:
        raise _invalid("'input' must be a string or a non-empty list of strings.", "input")
    if len(items) > MAX_EMBEDDING_INPUTS:
        raise _invalid(f"'input' holds at most {MAX_EMBEDDING_INPUTS} items.", "input")
    inputs = []
    for index, item in enumerate(items):
        param = "input" if isinstance(raw, str) else f"input[{index}]"
        if isinstance(item, int) or (
            isinstance(item, list) and all(isinstance(t, int) for t in item)
        ):
            # Token ids cannot be screened for personal data or cached by text: the gateway
            # takes text. (LangChain's OpenAIEmbeddings: check_embedding_ctx_length=False.)
            raise InvalidRequest(
                "'input' must be text: token arrays are not accepted, because the gateway "
                "applies the privacy policy to the text it sends.",
                param=param,
                code="unsupported_input",
            )
        if not isinstance(item, str) or not item.strip():
            raise _invalid(f"'{param}' must be a non-empty string.", param)
        if "\x00" in item:
            raise _invalid(f"'{param}' must not contain NUL characters.", param)
        inputs.append(clean_text(item))
    dimensions = data.get("dimensions")
    if dimensions is not None and (
        isinstance(dimensions, bool)
        or not isinstance(dimensions, int)
        or not 1 <= dimensions <= 16384
    ):
        raise _invalid("'dimensions' must be an integer from 1 to 16384.", "dimensions")
    encoding = data.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise _invalid("'encoding_format' must be 'float' or 'base64'.", "encoding_format")
    user = data.get("user")
    if user is not None and (not isinstance(user, str) or len(user) > 256 or "\x00" in user):
        raise _invalid("'user' must be a string of at most 256 characters.", "user")
    return ParsedEmbeddings(model, inputs, dimensions, encoding, user or None)
