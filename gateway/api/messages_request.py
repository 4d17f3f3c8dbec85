"""Anthropic's Messages API request, read into the pipeline's ``ParsedChat``.

The body is checked in Anthropic's terms (its field names in every message), then written as
the OpenAI chat request it means and parsed by ``validate.parse_chat_request``, so it gets the
same normalisation, bounds and types as a chat completion and every later stage sees nothing
new: ``system`` becomes a system message, ``tool_use`` blocks an assistant turn's
``tool_calls``, ``tool_result`` blocks ``tool`` messages, ``image`` blocks ``image_url`` parts,
``tools``/``tool_choice`` OpenAI's function tools, ``metadata.user_id`` the end user's id.

What the platform cannot carry to every provider is refused with a 400 naming the field:
``top_k``, extended ``thinking``, server tools, ``document`` and other block kinds.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.errors import InvalidRequest
from gateway.pipeline.validate import ParsedChat, parse_chat_request

# Every top-level field the door reads; the rest are refused by name below or as unknown.
FIELDS = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "system",
        "stop_sequences",
        "temperature",
        "top_p",
        "top_k",
        "metadata",
        "stream",
        "tools",
        "tool_choice",
        "thinking",
        "output_config",
        # Accepted and ignored, as they only tune Anthropic's own service: a prompt-caching
        # hint (blocks' cache_control is ignored too; the gateway keeps its own response cache)
        # and the capacity tier.
        "cache_control",
        "service_tier",
    }
)
# Fields of Anthropic's API that the platform knows and does not serve, with the reason.
UNSUPPORTED = {
    "top_k": "top_k is not supported: the platform's providers (OpenAI-compatible, Bedrock, "
    "the local model) share no top-k sampling parameter; use temperature or top_p.",
    "thinking": "Extended thinking is not supported by this gateway; omit 'thinking' or send "
    '{"type": "disabled"}.',
    "output_config.effort": "output_config.effort is not supported by this gateway: its "
    "providers share no effort setting.",
}
IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
MAX_STOP_SEQUENCES = 4  # what OpenAI-compatible upstreams and Bedrock both take


def _invalid(message: str, param: str | None = None) -> InvalidRequest:
    return InvalidRequest(message, param=param, code="invalid_value")


def _text(value: Any, param: str) -> str:
    if not isinstance(value, str):
        raise _invalid(f"{param}: must be a string.", param)
    return value


def _text_blocks(value: Any, param: str) -> str:
    """A string, or a list of ``text`` blocks (``system``, a tool result's content)."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise _invalid(f"{param}: must be a string or a list of text blocks.", param)
    texts = []
    for index, block in enumerate(value):
        where = f"{param}.{index}"
        if not isinstance(block, dict) or block.get("type") != "text":
            kind = block.get("type") if isinstance(block, dict) else None
            raise _invalid(
                f"{where}: only text blocks are accepted here"
                + (f" (got '{kind}')." if isinstance(kind, str) else "."),
                where,
            )
        texts.append(_text(block.get("text"), f"{where}.text"))
    return "\n".join(texts)


def _image_part(block: dict[str, Any], where: str) -> dict[str, Any]:
    source = block.get("source")
    if not isinstance(source, dict):
        raise _invalid(f"{where}.source: an image needs a source.", f"{where}.source")
    kind = source.get("type")
    if kind == "base64":
        media_type = source.get("media_type")
        if media_type not in IMAGE_TYPES:
            raise _invalid(
                f"{where}.source.media_type: must be one of {', '.join(IMAGE_TYPES)}.",
                f"{where}.source.media_type",
            )
        data = _text(source.get("data"), f"{where}.source.data")
        url = f"data:{media_type};base64,{data}"
    elif kind == "url":
        url = _text(source.get("url"), f"{where}.source.url")
        if not url.startswith(("https://", "http://")):
            raise _invalid(f"{where}.source.url: must be an http(s) URL.", f"{where}.source.url")
    else:
        raise _invalid(f"{where}.source.type: must be 'base64' or 'url'.", f"{where}.source.type")
    return {"type": "image_url", "image_url": {"url": url}}


def _tool_call(block: dict[str, Any], where: str) -> dict[str, Any]:
    call_id = _text(block.get("id"), f"{where}.id")
    name = _text(block.get("name"), f"{where}.name")
    arguments = block.get("input", {})
    if not isinstance(arguments, dict):
        raise _invalid(f"{where}.input: must be an object.", f"{where}.input")
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": orjson.dumps(arguments).decode()},
    }


def _tool_message(block: dict[str, Any], where: str) -> dict[str, Any]:
    call_id = _text(block.get("tool_use_id"), f"{where}.tool_use_id")
    content = _text_blocks(block.get("content", ""), f"{where}.content")
    if block.get("is_error") is True:
        # Chat tool messages have no error flag: the model reads it in the text instead.
        content = f"Error: {content}"
    return {"role": "tool", "tool_call_id": call_id, "content": content}


def _blocks(role: str, content: Any, where: str) -> list[dict[str, Any]]:
    """One Anthropic message as the chat messages it means: a user turn's tool results first
    (each a ``tool`` message), then its text and images; an assistant turn's text and tool
    calls as one message."""
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        raise _invalid(
            f"{where}.content: must be a string or a list of content blocks.", f"{where}.content"
        )
    tool_messages: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for index, block in enumerate(content):
        at = f"{where}.content.{index}"
        kind = block.get("type") if isinstance(block, dict) else None
        if not isinstance(block, dict) or not isinstance(kind, str):
            raise _invalid(f"{at}: a content block needs a 'type'.", at)
        if kind == "text":
            parts.append({"type": "text", "text": _text(block.get("text"), f"{at}.text")})
        elif kind == "image" and role == "user":
            parts.append(_image_part(block, at))
        elif kind == "tool_use" and role == "assistant":
            calls.append(_tool_call(block, at))
        elif kind == "tool_result" and role == "user":
            tool_messages.append(_tool_message(block, at))
        elif kind in ("image", "tool_use", "tool_result"):
            raise _invalid(f"{at}: a '{kind}' block cannot be in a {role} message.", at)
        else:
            raise _invalid(
                f"{at}: '{kind}' blocks are not supported by this gateway (text, image, tool_use "
                "and tool_result are).",
                f"{at}.type",
            )
    messages = tool_messages
    if role == "assistant":
        text = "".join(p["text"] for p in parts)
        if calls:
            messages.append({"role": "assistant", "content": text or None, "tool_calls": calls})
        elif parts:
            messages.append({"role": "assistant", "content": text})
    elif parts:
        media = any(p["type"] != "text" for p in parts)
        text = "".join(p["text"] for p in parts if p["type"] == "text")
        messages.append({"role": "user", "content": parts if media else text})
    if not messages:
        raise _invalid(f"{where}.content: a message needs at least one content block.", where)
    return messages


def _tools(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise _invalid("tools: must be a list.", "tools")
    tools = []
    for index, tool in enumerate(value):
        where = f"tools.{index}"
        if not isinstance(tool, dict):
            raise _invalid(f"{where}: must be an object.", where)
        kind = tool.get("type", "custom")
        if kind not in (None, "custom"):
            raise _invalid(
                f"{where}: server tools ('{kind}') are not supported by this gateway; declare "
                "client tools with a name and an input_schema.",
                f"{where}.type",
            )
        schema = tool.get("input_schema")
        if not isinstance(schema, dict):
            raise _invalid(f"{where}.input_schema: Field required.", f"{where}.input_schema")
        function: dict[str, Any] = {
            "name": _text(tool.get("name"), f"{where}.name"),
            "parameters": schema,
        }
        if tool.get("description") is not None:
            function["description"] = _text(tool.get("description"), f"{where}.description")
        tools.append({"type": "function", "function": function})
    return tools


def _tool_choice(value: Any) -> tuple[Any, bool]:
    """OpenAI's ``tool_choice`` for Anthropic's, and whether parallel calls are off."""
    if not isinstance(value, dict):
        raise _invalid("tool_choice: must be an object with a 'type'.", "tool_choice")
    kind = value.get("type")
    choice: Any
    if kind == "auto":
        choice = "auto"
    elif kind == "any":
        choice = "required"
    elif kind == "none":
        choice = "none"
    elif kind == "tool":
        name = _text(value.get("name"), "tool_choice.name")
        choice = {"type": "function", "function": {"name": name}}
    else:
        raise _invalid(
            "tool_choice.type: must be one of auto, any, tool, none.", "tool_choice.type"
        )
    return choice, value.get("disable_parallel_tool_use") is True


def _number(data: dict[str, Any], name: str, low: float, high: float) -> float | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise _invalid(f"{name}: must be a number from {low:g} to {high:g}.", name)
    return float(value)


def _user_id(metadata: Any) -> str | None:
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise _invalid("metadata: must be an object.", "metadata")
    for key in metadata:
        if key != "user_id":
            raise _invalid(f"metadata.{key}: Extra inputs are not permitted.", f"metadata.{key}")
    user = metadata.get("user_id")
    if user is None:
        return None
    user = _text(user, "metadata.user_id")
    if len(user) > 256:
        raise _invalid("metadata.user_id: at most 256 characters.", "metadata.user_id")
    return user


def refuse_unsupported(data: dict[str, Any]) -> None:
    for name in sorted(data):
        if name not in FIELDS:
            raise _invalid(f"{name}: Extra inputs are not permitted.", name)
    if data.get("top_k") is not None:
        raise InvalidRequest(UNSUPPORTED["top_k"], param="top_k", code="unsupported_parameter")
    thinking = data.get("thinking")
    if thinking is not None and not (
        isinstance(thinking, dict) and thinking.get("type") == "disabled"
    ):
        raise InvalidRequest(
            UNSUPPORTED["thinking"], param="thinking", code="unsupported_parameter"
        )


def _response_format(config: Any) -> dict[str, Any] | None:
    """``output_config.format`` (a JSON schema the answer follows) as OpenAI's
    ``response_format``; ``effort`` is refused."""
    if not isinstance(config, dict):
        raise _invalid("output_config: must be an object.", "output_config")
    for key in config:
        if key not in ("format", "effort"):
            raise _invalid(
                f"output_config.{key}: Extra inputs are not permitted.", f"output_config.{key}"
            )
    if config.get("effort") is not None:
        raise InvalidRequest(
            UNSUPPORTED["output_config.effort"],
            param="output_config.effort",
            code="unsupported_parameter",
        )
    output_format = config.get("format")
    if output_format is None:
        return None
    if (
        not isinstance(output_format, dict)
        or output_format.get("type") != "json_schema"
        or not isinstance(output_format.get("schema"), dict)
    ):
        raise _invalid(
            'output_config.format: must be {"type": "json_schema", "schema": {...}}.',
            "output_config.format",
        )
    return {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": output_format["schema"], "strict": True},
    }


def chat_body(data: dict[str, Any], *, require_max_tokens: bool = True) -> dict[str, Any]:
    """The OpenAI chat request an Anthropic Messages request means."""
    refuse_unsupported(data)
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise _invalid("model: Field required (a model name).", "model")
    raw_messages = data.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise _invalid("messages: must be a non-empty list of messages.", "messages")
    messages: list[dict[str, Any]] = []
    system = data.get("system")
    if system is not None:
        text = _text_blocks(system, "system")
        if text:
            messages.append({"role": "system", "content": text})
    for index, message in enumerate(raw_messages):
        where = f"messages.{index}"
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("user", "assistant"):
            raise _invalid(f"{where}.role: must be 'user' or 'assistant'.", f"{where}.role")
        assert isinstance(message, dict) and isinstance(role, str)
        if "content" not in message:
            raise _invalid(f"{where}.content: Field required.", f"{where}.content")
        messages.extend(_blocks(role, message["content"], where))
    body: dict[str, Any] = {"model": model, "messages": messages}
    max_tokens = data.get("max_tokens")
    if max_tokens is not None or require_max_tokens:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise _invalid("max_tokens: Field required (an integer of at least 1).", "max_tokens")
        body["max_tokens"] = max_tokens
    for name, high in (("temperature", 1.0), ("top_p", 1.0)):
        value = _number(data, name, 0.0, high)
        if value is not None:
            body[name] = value
    stops = data.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
            raise _invalid("stop_sequences: must be a list of non-empty strings.", "stop_sequences")
        if len(stops) > MAX_STOP_SEQUENCES:
            raise _invalid(
                f"stop_sequences: at most {MAX_STOP_SEQUENCES} (what every provider takes).",
                "stop_sequences",
            )
        if stops:
            body["stop"] = stops
    stream = data.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _invalid("stream: must be a boolean.", "stream")
    body["stream"] = bool(stream)
    user = _user_id(data.get("metadata"))
    if user:
        body["user"] = user
    if data.get("tools") is not None:
        tools = _tools(data["tools"])
        if tools:
            body["tools"] = tools
    if data.get("tool_choice") is not None:
        choice, serial = _tool_choice(data["tool_choice"])
        if "tools" in body:
            body["tool_choice"] = choice
            if serial:
                body["parallel_tool_calls"] = False
        elif choice not in ("auto", "none"):
            raise _invalid("tool_choice: needs 'tools'.", "tool_choice")
    if data.get("output_config") is not None:
        response_format = _response_format(data["output_config"])
        if response_format is not None:
            body["response_format"] = response_format
    return body


def parse_messages_request(data: dict[str, Any], *, count_only: bool = False) -> ParsedChat:
    """An Anthropic Messages request as the pipeline's ``ParsedChat`` (400 on what it cannot
    carry). ``count_only``: for ``count_tokens``, where ``max_tokens`` is not required."""
    return parse_chat_request(chat_body(data, require_max_tokens=not count_only))
