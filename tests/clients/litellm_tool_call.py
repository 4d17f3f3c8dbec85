"""The LiteLLM SDK as a client of the gateway: one plain and one streamed tool call.

tests/test_real_clients.py runs it with the python of var/clients-venv (``make clients``), kept
apart from the project's venv. It reads ``{"base_url", "api_key", "model", "messages",
"tools"}`` as JSON on stdin and writes ``{"plain": ..., "streamed": ...}`` as JSON on stdout,
each part ``{"content", "finish_reason", "tool_calls": [{"id", "name", "arguments"}]}`` as the
caller saw it, or ``{"error": ...}`` when LiteLLM raised.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

# LiteLLM fetches a price list from GitHub at import unless told to use its bundled copy.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm


def plain_call(spec: dict[str, Any]) -> dict[str, Any]:
    reply = litellm.completion(**request(spec))
    choice = reply.choices[0]
    return {
        "content": choice.message.content,
        "finish_reason": choice.finish_reason,
        "tool_calls": [
            {"id": call.id, "name": call.function.name, "arguments": call.function.arguments}
            for call in choice.message.tool_calls or []
        ],
    }


def streamed_call(spec: dict[str, Any]) -> dict[str, Any]:
    """Deltas put together by ``index`` as an agent loop does: the id and name come in a call's
    first fragment, its arguments in pieces to concatenate."""
    calls: dict[int, dict[str, Any]] = {}
    content, finish_reason = "", None
    for chunk in litellm.completion(**request(spec), stream=True):
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        content += choice.delta.content or ""
        finish_reason = choice.finish_reason or finish_reason
        for fragment in choice.delta.tool_calls or []:
            call = calls.setdefault(fragment.index, {"id": None, "name": None, "arguments": ""})
            call["id"] = call["id"] or fragment.id
            if fragment.function is not None:
                call["name"] = call["name"] or fragment.function.name
                call["arguments"] += fragment.function.arguments or ""
    return {
        "content": content or None,
        "finish_reason": finish_reason,
        "tool_calls": [calls[index] for index in sorted(calls)],
    }


def request(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": f"openai/{spec['model']}",
        "api_base": spec["base_url"],
        "api_key": spec["api_key"],
        "messages": spec["messages"],
        "tools": spec["tools"],
        "num_retries": 0,
        "timeout": 30,
    }


def main() -> None:
    spec = json.load(sys.stdin)
    result = {}
    for name, call in (("plain", plain_call), ("streamed", streamed_call)):
        try:
            result[name] = call(spec)
        except Exception as error:  # reported to the test, which shows it
            result[name] = {"error": f"{type(error).__name__}: {error}"}
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
