"""The Responses API door's request: a Responses body as the chat request it runs as
(``parse_responses_request``), and a chat request's param path as the client wrote it
(``client_param``)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import ApiError, InvalidRequest
from gateway.pipeline.validate import ParsedChat, parse_chat_request

# Fields the door maps onto the chat request.
_SUPPORTED = frozenset(
    {
        "model",
        "input",
        "instructions",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "text",
        "max_output_tokens",
        "temperature",
        "top_p",
        "metadata",
        "user",
        "safety_identifier",
        "service_tier",
        "stream",
        "stream_options",
        "store",
        "include",
        "truncation",
    }
)
# Fields of OpenAI's Responses API the gateway does not serve, and why: a 400 naming the field
# whenever one is set (null or false counts as not set).
_REFUSED = {
    "previous_response_id": "the gateway keeps no responses; send the whole conversation as "
    "'input' items (the earlier output items and your function_call_output items)",
    "conversation": "the gateway keeps no conversations; send the whole conversation as 'input'",
    "background": "background responses need stored responses, which the gateway does not keep",
    "reasoning": "reasoning settings are not supported through this gateway",
    "prompt": "stored prompt templates are not supported; send 'instructions' and 'input'",
    "prompt_cache_key": "the upstream's prompt cache cannot be keyed through this gateway",
    "prompt_cache_retention": "the upstream's prompt cache cannot be set through this gateway",
    "max_tool_calls": "'max_tool_calls' is not supported; limit the calls in your agent loop",
    "top_logprobs": "log probabilities are not returned by the Responses door",
    "context_management": "server-side context management is not supported",
}
# A function tool's fields (the only tool type served: the others run on OpenAI's side).
_FUNCTION_TOOL_FIELDS = frozenset({"type", "name", "description", "parameters", "strict"})
# What output items sent back as input may carry besides their content: identifiers and states
# of the earlier response, which the model never reads.
_ECHO_FIELDS = frozenset({"id", "status", "phase"})
_FILE_FIELDS = frozenset({"type", "file_data", "file_id", "filename", "file_url"})
_FUNCTION_FIELDS = ("name", "description", "parameters", "strict")


def _refuse(message: str, param: str, code: str = "invalid_value") -> InvalidRequest:
    return InvalidRequest(message, param=param, code=code)


def _unsupported(field_name: str, why: str) -> InvalidRequest:
    return _refuse(
        f"'{field_name}' is not supported by this gateway: {why}.",
        field_name,
        code="unsupported_parameter",
    )


def _check_keys(item: dict[str, Any], allowed: frozenset[str], param: str) -> None:
    unknown = sorted(set(item) - allowed)
    if unknown:
        raise _refuse(
            f"Unknown field '{unknown[0]}' in '{param}'.",
            f"{param}.{unknown[0]}",
            code="unknown_parameter",
        )


# --- the request ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Conversation:
    """The chat messages an ``input`` becomes, and where each came from in the request (so an
    error about ``messages[3]`` names ``input[2]``)."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    # chat message index -> (the item's path, its content's path) in the request
    origins: list[tuple[str, str]] = field(default_factory=list)
    call_origins: dict[tuple[int, int], str] = field(default_factory=dict)

    def add(self, message: dict[str, Any], origin: str, content: str = ".content") -> None:
        """``content``: the item's field that becomes the message's content."""
        self.messages.append(message)
        self.origins.append((origin, origin + content if origin.startswith("input[") else origin))

    def add_call(self, call: dict[str, Any], origin: str) -> None:
        """A function call: joins the assistant turn just before it (its text, or the calls
        made in the same turn), as a chat request carries them."""
        last = self.messages[-1] if self.messages else None
        if last is None or last["role"] != "assistant":
            self.add({"role": "assistant", "content": None, "tool_calls": []}, origin)
            last = self.messages[-1]
        calls = last.setdefault("tool_calls", [])
        self.call_origins[(len(self.messages) - 1, len(calls))] = origin
        calls.append(call)


def _text_of(value: Any, param: str, kinds: tuple[str, ...]) -> str:
    """Content that may only be text: a string, or a list of text parts of ``kinds``."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise _refuse(f"'{param}' must be a string or a list of content parts.", param)
    texts = []
    for index, part in enumerate(value):
        where = f"{param}[{index}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in kinds:
            raise _refuse(f"'{where}.type' must be one of {', '.join(kinds)} here.", where)
        key = "refusal" if kind == "refusal" else "text"
        if not isinstance(part.get(key), str):
            raise _refuse(f"'{where}.{key}' must be a string.", f"{where}.{key}")
        _check_keys(part, frozenset({"type", key, "annotations", "logprobs"}), where)
        texts.append(part[key])
    return "".join(texts)


def _user_part(part: Any, param: str) -> dict[str, Any]:
    """One part of a user message, as the chat request's content part."""
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "input_text":
        _check_keys(part, frozenset({"type", "text"}), param)
        if not isinstance(part.get("text"), str):
            raise _refuse(f"'{param}.text' must be a string.", f"{param}.text")
        return {"type": "text", "text": part["text"]}
    if kind == "input_image":
        _check_keys(part, frozenset({"type", "image_url", "detail", "file_id"}), param)
        if part.get("file_id") is not None:
            raise _unsupported(f"{param}.file_id", "files uploaded to OpenAI cannot be read")
        url = part.get("image_url")
        if not isinstance(url, str):
            raise _refuse(f"'{param}.image_url' must be a URL or a data URL.", f"{param}.image_url")
        image: dict[str, Any] = {"url": url}
        if part.get("detail") is not None:
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_file":
        _check_keys(part, _FILE_FIELDS, param)
        if part.get("file_url") is not None:
            raise _unsupported(f"{param}.file_url", "send the file's content as 'file_data'")
        file = {k: part[k] for k in ("file_data", "file_id", "filename") if part.get(k) is not None}
        return {"type": "file", "file": file}
    if kind == "input_audio":
        _check_keys(part, frozenset({"type", "input_audio"}), param)
        return {"type": "input_audio", "input_audio": part.get("input_audio")}
    raise _refuse(
        f"'{param}.type' must be one of input_text, input_image, input_file, input_audio.", param
    )


def _message_item(item: dict[str, Any], param: str, conversation: _Conversation) -> None:
    _check_keys(item, frozenset({"type", "role", "content"}) | _ECHO_FIELDS, param)
    role, content = item.get("role"), item.get("content")
    if role == "user":
        if isinstance(content, str):
            conversation.add({"role": "user", "content": content}, param)
            return
        if not isinstance(content, list):
            raise _refuse(
                f"'{param}.content' must be a string or a list of content parts.",
                f"{param}.content",
            )
        parts = [_user_part(p, f"{param}.content[{i}]") for i, p in enumerate(content)]
        conversation.add({"role": "user", "content": parts}, param)
    elif role in ("system", "developer"):
        text = _text_of(content, f"{param}.content", ("input_text",))
        conversation.add({"role": role, "content": text}, param)
    elif role == "assistant":
        text = _text_of(content, f"{param}.content", ("output_text", "refusal", "input_text"))
        conversation.add({"role": "assistant", "content": text}, param)
    else:
        raise _refuse(
            f"'{param}.role' must be one of user, assistant, system, developer.", f"{param}.role"
        )


def _function_call_item(item: dict[str, Any], param: str, conversation: _Conversation) -> None:
    _check_keys(item, frozenset({"type", "call_id", "name", "arguments"}) | _ECHO_FIELDS, param)
    for name in ("call_id", "name", "arguments"):
        if not isinstance(item.get(name), str) or (name != "arguments" and not item[name]):
            raise _refuse(f"'{param}.{name}' must be a non-empty string.", f"{param}.{name}")
    conversation.add_call(
        {
            "id": item["call_id"],
            "type": "function",
            "function": {"name": item["name"], "arguments": item["arguments"]},
        },
        param,
    )


def _function_output_item(item: dict[str, Any], param: str, conversation: _Conversation) -> None:
    _check_keys(item, frozenset({"type", "call_id", "output"}) | _ECHO_FIELDS, param)
    if not isinstance(item.get("call_id"), str) or not item["call_id"]:
        raise _refuse(f"'{param}.call_id' must be a non-empty string.", f"{param}.call_id")
    output = _text_of(item.get("output"), f"{param}.output", ("input_text", "output_text"))
    message = {"role": "tool", "tool_call_id": item["call_id"], "content": output}
    conversation.add(message, param, ".output")


def _conversation(data: dict[str, Any]) -> _Conversation:
    conversation = _Conversation()
    instructions = data.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise _refuse("'instructions' must be a string.", "instructions")
        conversation.add({"role": "system", "content": instructions}, "instructions")
    raw = data.get("input")
    if isinstance(raw, str):
        conversation.add({"role": "user", "content": raw}, "input")
        return conversation
    if not isinstance(raw, list) or not raw:
        raise _refuse("'input' must be a string or a non-empty list of items.", "input")
    for index, item in enumerate(raw):
        param = f"input[{index}]"
        if not isinstance(item, dict):
            raise _refuse(f"'{param}' must be an object.", param)
        kind = item.get("type", "message")  # OpenAI's easy form: a message without a type
        if kind == "message":
            _message_item(item, param, conversation)
        elif kind == "function_call":
            _function_call_item(item, param, conversation)
        elif kind == "function_call_output":
            _function_output_item(item, param, conversation)
        elif kind == "item_reference":
            raise _unsupported(f"{param}", "the gateway keeps no items to refer to")
        else:
            raise _refuse(  # the message never repeats what was sent (it may be anything)
                "This input item type is not supported; use message, function_call and "
                "function_call_output items.",
                f"{param}.type",
                code="unsupported_value",
            )
    return conversation


def _tools(raw: Any) -> list[dict[str, Any]]:
    if not isinstance(raw, list):
        raise _refuse("'tools' must be a list.", "tools")
    tools = []
    for index, tool in enumerate(raw):
        param = f"tools[{index}]"
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind != "function":
            raise _refuse(
                "Only function tools are available through this gateway (built-in tools run on "
                "OpenAI's side); declare function tools and run them in your app.",
                f"{param}.type",
                code="unsupported_value",
            )
        _check_keys(tool, _FUNCTION_TOOL_FIELDS, param)
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise _refuse(f"'{param}.name' must be a non-empty string.", f"{param}.name")
        function = {k: tool[k] for k in _FUNCTION_FIELDS if k in tool}
        if function.get("strict") is None:
            function.pop("strict", None)
        tools.append({"type": "function", "function": function})
    return tools


def _tool_choice(raw: Any) -> Any:
    if raw in ("auto", "none", "required"):
        return raw
    if isinstance(raw, dict) and raw.get("type") == "function":
        _check_keys(raw, frozenset({"type", "name"}), "tool_choice")
        if isinstance(raw.get("name"), str) and raw["name"]:
            return {"type": "function", "function": {"name": raw["name"]}}
    raise _refuse(
        "'tool_choice' must be 'auto', 'none', 'required' or {\"type\": \"function\", "
        '"name": ...}.',
        "tool_choice",
        code="unsupported_value",
    )


def _response_format(text: Any) -> dict[str, Any] | None:
    """``text.format`` as the chat request's ``response_format`` (None: plain text)."""
    if not isinstance(text, dict):
        raise _refuse("'text' must be an object.", "text")
    _check_keys(text, frozenset({"format", "verbosity"}), "text")
    if text.get("verbosity") is not None:
        raise _unsupported("text.verbosity", "the answer's length follows 'max_output_tokens'")
    fmt = text.get("format")
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        _check_keys(fmt, frozenset({"type"}), "text.format")
        return {"type": "json_object"}
    if kind == "json_schema":
        _check_keys(
            fmt, frozenset({"type", "name", "schema", "description", "strict"}), "text.format"
        )
        if not isinstance(fmt.get("name"), str) or not isinstance(fmt.get("schema"), dict):
            raise _refuse(
                "'text.format' of type json_schema needs a 'name' and a 'schema' object.",
                "text.format",
            )
        schema = {k: fmt[k] for k in ("name", "schema", "description", "strict") if k in fmt}
        return {"type": "json_schema", "json_schema": schema}
    raise _refuse(
        "'text.format.type' must be text, json_object or json_schema.", "text.format.type"
    )


@dataclass(slots=True)
class ResponsesRequest:
    """A Responses API request: the chat request it runs as, what its Response object echoes,
    and where each chat message came from."""

    parsed: ParsedChat
    echo: dict[str, Any]
    origins: list[tuple[str, str]]
    call_origins: dict[tuple[int, int], str]

    def client_param(self, param: str | None) -> str | None:
        return client_param(param, self.origins, self.call_origins)


_MESSAGE_PARAM = re.compile(r"messages\[(\d+)\](.*)")
_CALL_PARAM = re.compile(r"\.tool_calls\[(\d+)\](?:\.function)?(.*)")
_FIELD_PARAMS = {
    "max_tokens": "max_output_tokens",
    "max_completion_tokens": "max_output_tokens",
    "response_format": "text.format",
}


def client_param(
    param: str | None,
    origins: list[tuple[str, str]],
    call_origins: dict[tuple[int, int], str],
) -> str | None:
    """A chat request's param path as the Responses request's."""
    if not param:
        return param
    for chat_name, name in _FIELD_PARAMS.items():
        if param == chat_name or param.startswith(f"{chat_name}."):
            return name + param[len(chat_name) :]
    match = _MESSAGE_PARAM.fullmatch(param)
    if match is None or int(match[1]) >= len(origins):
        return param
    index, rest = int(match[1]), match[2]
    call = _CALL_PARAM.fullmatch(rest)
    if call is not None and (index, int(call[1])) in call_origins:
        return call_origins[(index, int(call[1]))] + call[2]
    item, content = origins[index]
    if rest.startswith(".content"):
        return content + rest[len(".content") :]
    if rest == ".tool_call_id":
        return f"{item}.call_id"
    if rest.startswith(".tool_calls") or not item.startswith("input["):
        return item
    return item + rest


def with_client_param(exc: ApiError, request: ResponsesRequest | _Conversation) -> ApiError:
    origins = request.origins
    call_origins = request.call_origins
    param = client_param(exc.param, origins, call_origins)
    if param != exc.param and exc.param:
        exc.message = exc.message.replace(exc.param, param or "")
        exc.param = param
    return exc


def parse_responses_request(data: dict[str, Any]) -> ResponsesRequest:
    """A Responses API body as the chat request it runs as. Raises ``InvalidRequest`` naming
    the field as the client wrote it."""
    for name, why in _REFUSED.items():
        if data.get(name) not in (None, False):  # unset, or set to what it would be unset
            raise _unsupported(name, why)
    unknown = sorted(set(data) - _SUPPORTED - set(_REFUSED))
    if unknown:
        raise _refuse(
            f"Unrecognized request argument supplied: {unknown[0]}",
            unknown[0],
            code="unknown_parameter",
        )
    if data.get("store") not in (None, False):
        raise _unsupported(
            "store",
            "the gateway keeps no responses to read back (conversations are kept only under "
            "the tenant's consent policy); omit 'store' or set it to false",
        )
    if data.get("truncation") not in (None, "disabled"):
        raise _unsupported("truncation", "only 'disabled' is supported")
    include = data.get("include")
    # Codex-style clients ask for encrypted reasoning to carry it across stateless turns; the
    # gateway's answers have no reasoning items, so there is nothing to include.
    if include is not None and (
        not isinstance(include, list)
        or any(value != "reasoning.encrypted_content" for value in include)
    ):
        raise _unsupported("include", "no extra output data is available")
    options = data.get("stream_options")
    if options is not None and (
        not isinstance(options, dict) or set(options) - {"include_obfuscation"}
    ):
        raise _refuse("'stream_options' may only carry 'include_obfuscation'.", "stream_options")

    conversation = _conversation(data)
    body: dict[str, Any] = {
        "model": data.get("model"),
        "messages": conversation.messages,
        "stream": data.get("stream", False),
    }
    for name in ("temperature", "top_p", "service_tier", "parallel_tool_calls", "metadata"):
        if data.get(name) is not None:
            body[name] = data[name]
    if data.get("max_output_tokens") is not None:
        body["max_tokens"] = data["max_output_tokens"]
    user = data.get("user") if data.get("user") is not None else data.get("safety_identifier")
    if user is not None:
        body["user"] = user
    if data.get("tools") is not None:
        tools = _tools(data["tools"])
        if tools:
            body["tools"] = tools
    if data.get("tool_choice") is not None:
        body["tool_choice"] = _tool_choice(data["tool_choice"])
    if data.get("text") is not None:
        response_format = _response_format(data["text"])
        if response_format is not None:
            body["response_format"] = response_format
    try:
        parsed = parse_chat_request(body)
    except ApiError as exc:
        raise with_client_param(exc, conversation) from exc
    text = data.get("text") if isinstance(data.get("text"), dict) else {}
    echo = {
        "instructions": data.get("instructions"),
        "max_output_tokens": data.get("max_output_tokens"),
        "metadata": data.get("metadata") or {},
        "parallel_tool_calls": data.get("parallel_tool_calls", True),
        "temperature": data.get("temperature"),
        "top_p": data.get("top_p"),
        "text": {"format": (text or {}).get("format") or {"type": "text"}},
        "tool_choice": data.get("tool_choice") or "auto",
        "tools": data.get("tools") or [],
        "user": data.get("user"),
    }
    return ResponsesRequest(parsed, echo, conversation.origins, conversation.call_origins)
