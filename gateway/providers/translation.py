"""What the Anthropic and Google adapters both read out of OpenAI's request shape: function
tools, an assistant's tool calls, data URLs. Each raises ``UnsupportedByProvider`` naming the
part the client sent, never echoing its value (a URL may carry a token or personal data)."""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

from gateway.providers.base import UnsupportedByProvider

_DATA_URL = re.compile(r"data:(?P<type>[^;,]+)(?:;[^;,]*)*;base64,(?P<data>.*)", re.DOTALL)


@dataclass(frozen=True, slots=True)
class FunctionTool:
    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ToolCallInput:
    """One tool call of an assistant turn, its arguments parsed."""

    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class InlineData:
    """The media type and base64 payload of a data URL (payload checked, not decoded)."""

    media_type: str
    data: str


def function_tools(extra: dict[str, Any], provider: str) -> list[FunctionTool]:
    """OpenAI's ``tools``: function tools only, each with a name and an object schema."""
    tools = extra.get("tools") or []
    if not isinstance(tools, list):
        raise UnsupportedByProvider("'tools' must be a list of function tools", param="tools")
    found = []
    for k, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if (
            not isinstance(function, dict)
            or tool.get("type", "function") != "function"
            or not isinstance(function.get("name"), str)
            or not function["name"]
        ):
            raise UnsupportedByProvider(
                f"{provider} accepts function tools only, each with a name", param=f"tools[{k}]"
            )
        parameters = function.get("parameters")
        if parameters is None:
            parameters = {"type": "object", "properties": {}}  # OpenAI allows none: no arguments
        if not isinstance(parameters, dict):
            raise UnsupportedByProvider(
                "a tool's parameters must be a JSON Schema object",
                param=f"tools[{k}].function.parameters",
            )
        description = function.get("description")
        found.append(
            FunctionTool(
                function["name"],
                description if isinstance(description, str) else "",
                parameters,
            )
        )
    return found


def named_tool_choice(choice: Any, provider: str) -> str | None:
    """The function a ``tool_choice`` names (``{"type": "function", "function": {"name"}}``),
    None for the string choices; anything else is refused."""
    if choice is None or choice in ("auto", "none", "required"):
        return None
    function = choice.get("function") if isinstance(choice, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(choice, dict) or choice.get("type") != "function" or not name:
        raise UnsupportedByProvider(
            f"{provider}'s tool_choice is 'auto', 'none', 'required' or one named function",
            param="tool_choice",
        )
    return str(name)


def tool_call_input(i: int, j: int, call: Any, provider: str) -> ToolCallInput:
    """Tool call ``j`` of message ``i``: its id, name and arguments as a JSON object."""
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise UnsupportedByProvider(
            "a tool call needs a function name", param=f"messages[{i}].tool_calls[{j}].function"
        )
    call_id = call.get("id") if isinstance(call, dict) else None
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        try:
            # Blank arguments are how some clients write a call without any.
            arguments = json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            arguments = None
    if not isinstance(arguments, dict):
        raise UnsupportedByProvider(
            f"{provider} needs a tool call's arguments to be a JSON object",
            param=f"messages[{i}].tool_calls[{j}].function.arguments",
        )
    return ToolCallInput(call_id if isinstance(call_id, str) else "", function["name"], arguments)


def data_url(url: Any) -> InlineData | None:
    """A base64 data URL's parts; None when ``url`` is not one (or its payload is not base64)."""
    match = _DATA_URL.fullmatch(url) if isinstance(url, str) else None
    if match is None:
        return None
    payload = "".join(match["data"].split())
    try:
        if not base64.b64decode(payload, validate=True):
            return None
    except binascii.Error:
        return None
    return InlineData(match["type"].lower(), payload)


def image_url(part: dict[str, Any]) -> str | None:
    value = part.get("image_url")
    url = value.get("url") if isinstance(value, dict) else value
    return url if isinstance(url, str) else None


def compact_json(value: Any) -> str:
    """Arguments as OpenAI writes them: compact and not ASCII-escaped."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def openai_tool_call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def refuse_single_text_answer_extras(extra: dict[str, Any], provider: str, text_only: str) -> None:
    """Refuse what a provider that answers with one text choice cannot honour, rather than drop
    it: n above 1, log probabilities, JSON mode or structured outputs, logit_bias (token ids are
    OpenAI's tokenizer's), audio output. ``provider`` names it in the messages; ``text_only``
    is the message for audio or modalities."""
    if extra.get("n") not in (None, 1):
        raise UnsupportedByProvider(
            f"{provider} returns one choice per request: n must be 1", param="n"
        )
    for name in ("logprobs", "top_logprobs"):  # top_logprobs 0 asks for nothing
        if extra.get(name):
            raise UnsupportedByProvider(f"{provider} does not return log probabilities", param=name)
    response_format = extra.get("response_format")
    if response_format is not None and not (
        isinstance(response_format, dict) and response_format.get("type") == "text"
    ):
        raise UnsupportedByProvider(
            f"{provider} does not support JSON mode or structured outputs (response_format of "
            "type json_object or json_schema); describe the format in the prompt, or use a tool "
            "whose parameters are the schema",
            param="response_format",
        )
    if extra.get("logit_bias"):
        raise UnsupportedByProvider(f"{provider} does not support logit_bias", param="logit_bias")
    modalities = extra.get("modalities")
    if extra.get("audio") is not None or (modalities and modalities != ["text"]):
        raise UnsupportedByProvider(
            text_only, param="audio" if extra.get("audio") is not None else "modalities"
        )
