"""The clients people bring, unchanged, through the gateway, against a real local upstream that
answers as OpenAI's models do (tests/upstreams.py): the ``openai`` Python SDK, LangChain's
``ChatOpenAI``, the LiteLLM SDK and the ``openai`` Node SDK, doing what agents do with them:
tool calls plain and streamed, tool results sent back, ``n`` choices, logprobs, refusals,
images and embeddings.

Each test asserts what the client's user would notice: the tool call arrives whole (id, name,
arguments that parse to what the model sent), the text and numbers are the model's.

LangChain is a dev dependency of the project. LiteLLM (in var/clients-venv) and the Node SDK
(in tests/clients/node/node_modules) live apart from it and run as subprocesses; ``make test``
installs them (``make clients``). A missing client fails its test, it is never skipped.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import struct
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import route_alias
from .upstreams import AzureUpstream, OpenAIUpstream

pytestmark = pytest.mark.django_db

CLIENTS = Path(__file__).parent / "clients"
REPO = Path(__file__).parent.parent
CLIENTS_PYTHON = REPO / "var" / "clients-venv" / "bin" / "python"
NODE_PACKAGE = CLIENTS / "node"

ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city's name."}},
            "required": ["city"],
        },
    },
}
PARIS = {"city": "Paris"}
# A 1x1 transparent PNG, as clients send a picture inline.
PIXEL = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhf"
    "DwAChwGA60e6kgAAAABJRU5ErkJggg=="
)


@dataclass(frozen=True)
class Gateway:
    url: str  # the server's root, e.g. http://127.0.0.1:PORT
    key: str
    upstream: OpenAIUpstream


@pytest.fixture
def upstream() -> Iterator[OpenAIUpstream]:
    with OpenAIUpstream() as server:
        yield server


@pytest.fixture
def gateway(gateway_server, principals, key_a, upstream) -> Gateway:
    route_alias("default", upstream.base_url)
    return Gateway(url=gateway_server, key=key_a, upstream=upstream)


@pytest.fixture
def sdk(gateway):
    from openai import OpenAI

    return OpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.key, max_retries=0, timeout=30)


def streamed_tool_calls(chunks) -> tuple[list[dict[str, Any]], str | None]:
    """Tool-call deltas put together by index as an agent loop does (the id and name come in a
    call's first fragment, its arguments in pieces); returns the calls and the finish reason."""
    calls: dict[int, dict[str, Any]] = {}
    finish_reason = None
    for chunk in chunks:
        for choice in chunk.choices:
            finish_reason = choice.finish_reason or finish_reason
            for fragment in choice.delta.tool_calls or []:
                call = calls.setdefault(fragment.index, {"id": None, "name": None, "pieces": []})
                call["id"] = call["id"] or fragment.id
                if fragment.function is not None:
                    call["name"] = call["name"] or fragment.function.name
                    call["pieces"].append(fragment.function.arguments or "")
    ordered = [calls[index] for index in sorted(calls)]
    return ordered, finish_reason


# --------------------------------------------------------------------------- openai (Python)


def test_the_openai_sdk_receives_a_tool_call_whole(sdk, upstream):
    upstream.tool_call = {"name": "get_weather", "arguments": PARIS}
    reply = sdk.chat.completions.create(model="default", messages=ASK, tools=[WEATHER_TOOL])

    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == PARIS
    assert upstream.requests[-1].json["tools"] == [WEATHER_TOOL]


def test_the_openai_sdk_reassembles_a_streamed_tool_call(sdk, upstream):
    upstream.tool_call = {"name": "get_weather", "arguments": PARIS}
    stream = sdk.chat.completions.create(
        model="default", messages=ASK, tools=[WEATHER_TOOL], stream=True
    )

    [call], finish_reason = streamed_tool_calls(stream)
    assert finish_reason == "tool_calls"
    assert call["id"].startswith("call_") and call["name"] == "get_weather"
    assert len(call["pieces"]) > 2  # the arguments really came in pieces
    assert json.loads("".join(call["pieces"])) == PARIS


def test_parallel_tool_calls_arrive_each_whole_plain_and_streamed(sdk, upstream):
    lyon = {"city": "Lyon", "units": "metric"}
    upstream.tool_call = [
        {"name": "get_weather", "arguments": PARIS},
        {"name": "get_weather", "arguments": lyon},
    ]
    reply = sdk.chat.completions.create(model="default", messages=ASK, tools=[WEATHER_TOOL])
    calls = reply.choices[0].message.tool_calls
    assert [json.loads(c.function.arguments) for c in calls] == [PARIS, lyon]
    assert len({c.id for c in calls}) == 2

    stream = sdk.chat.completions.create(
        model="default", messages=ASK, tools=[WEATHER_TOOL], stream=True
    )
    streamed, finish_reason = streamed_tool_calls(stream)
    assert [json.loads("".join(c["pieces"])) for c in streamed] == [PARIS, lyon]
    assert [c["name"] for c in streamed] == ["get_weather", "get_weather"]
    assert finish_reason == "tool_calls"


def test_a_tool_result_goes_back_unchanged_and_the_answer_uses_it(sdk, upstream):
    upstream.tool_call = {"name": "get_weather", "arguments": PARIS}
    first = sdk.chat.completions.create(model="default", messages=ASK, tools=[WEATHER_TOOL])
    [call] = first.choices[0].message.tool_calls
    assistant_turn = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.function.name, "arguments": call.function.arguments},
            }
        ],
    }
    result = json.dumps({"temperature_c": 18, "sky": "sunny"})
    tool_turn = {"role": "tool", "tool_call_id": call.id, "content": result}

    second = sdk.chat.completions.create(
        model="default", messages=[*ASK, assistant_turn, tool_turn], tools=[WEATHER_TOOL]
    )

    assert second.choices[0].message.content == f"The tool said: {result}"
    assert second.choices[0].finish_reason == "stop"
    received = upstream.requests[-1].json["messages"]
    assert received[1]["role"] == "assistant"
    assert received[1]["tool_calls"] == assistant_turn["tool_calls"]
    assert received[1].get("content") in (None, "")
    assert received[2] == tool_turn


def test_the_raw_response_carries_the_gateways_headers_and_parses(sdk, upstream):
    upstream.reply = "Raw but fine"
    raw = sdk.chat.completions.with_raw_response.create(
        model="default", messages=[{"role": "user", "content": "hello"}]
    )

    assert raw.http_response.status_code == 200
    assert raw.headers.get("x-request-id")
    completion = raw.parse()
    assert completion.choices[0].message.content == "Raw but fine"
    assert completion.usage.completion_tokens == 3


def test_n_choices_come_back_distinct_plain_and_streamed(sdk, upstream):
    ask = [{"role": "user", "content": "Name a colour"}]
    reply = sdk.chat.completions.create(model="default", messages=ask, n=2)
    assert [c.index for c in reply.choices] == [0, 1]
    assert [c.message.content for c in reply.choices] == [
        "Name a colour",
        "Name a colour (choice 1)",
    ]
    assert upstream.requests[-1].json["n"] == 2

    texts: dict[int, str] = {}
    finishes: dict[int, str] = {}
    for chunk in sdk.chat.completions.create(model="default", messages=ask, n=2, stream=True):
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
    assert texts == {0: "Name a colour", 1: "Name a colour (choice 1)"}
    assert finishes == {0: "stop", 1: "stop"}


def test_logprobs_come_back_per_token_plain_and_streamed(sdk, upstream):
    upstream.reply = "Sunny in Paris"
    reply = sdk.chat.completions.create(
        model="default", messages=ASK, logprobs=True, top_logprobs=1
    )
    entries = reply.choices[0].logprobs.content
    assert "".join(e.token for e in entries) == "Sunny in Paris"
    assert all(e.logprob <= 0 and len(e.top_logprobs) == 1 for e in entries)
    assert entries[0].bytes == list(entries[0].token.encode())

    streamed = []
    for chunk in sdk.chat.completions.create(
        model="default", messages=ASK, logprobs=True, top_logprobs=1, stream=True
    ):
        for choice in chunk.choices:
            if choice.logprobs and choice.logprobs.content:
                streamed += choice.logprobs.content
    assert [e.token for e in streamed] == [e.token for e in entries]


def test_a_refusal_reaches_the_client_as_a_refusal(sdk, upstream):
    upstream.refusal = "I can't help with that."
    reply = sdk.chat.completions.create(model="default", messages=ASK)
    message = reply.choices[0].message
    assert (message.content, message.refusal) == (None, "I can't help with that.")

    refusal = ""
    for chunk in sdk.chat.completions.create(model="default", messages=ASK, stream=True):
        for choice in chunk.choices:
            refusal += getattr(choice.delta, "refusal", None) or ""
            assert not choice.delta.content
    assert refusal == "I can't help with that."


def test_an_image_part_reaches_the_model(sdk, upstream):
    image_part = {"type": "image_url", "image_url": {"url": PIXEL, "detail": "low"}}
    reply = sdk.chat.completions.create(
        model="default",
        messages=[
            {
                "role": "user",
                "content": [{"type": "text", "text": "What is in this picture?"}, image_part],
            }
        ],
    )

    assert reply.choices[0].message.content == "What is in this picture? [saw 1 images]"
    assert upstream.requests[-1].json["messages"][0]["content"][1] == image_part


def test_embeddings_come_back_as_the_model_made_them(sdk, upstream):
    texts = ["The cat sat on the mat", "Bonjour"]
    direct = httpx.post(
        f"{upstream.base_url}/embeddings",
        json={"model": "upstream-model", "input": texts, "dimensions": 8},
        timeout=10,
    ).json()
    expected = [item["embedding"] for item in direct["data"]]

    as_floats = sdk.embeddings.create(
        model="default", input=texts, dimensions=8, encoding_format="float"
    )
    assert [item.index for item in as_floats.data] == [0, 1]
    assert [item.embedding for item in as_floats.data] == expected
    assert (as_floats.usage.prompt_tokens, as_floats.usage.total_tokens) == (7, 7)
    assert upstream.requests[-1].json["dimensions"] == 8

    # Without encoding_format the SDK asks for base64 and decodes it itself.
    by_default = sdk.embeddings.create(model="default", input=texts, dimensions=8)
    assert len(by_default.data) == 2
    for item, vector in zip(by_default.data, expected, strict=True):
        assert item.embedding == pytest.approx(vector, rel=1e-6)


def test_base64_embeddings_are_little_endian_float32(gateway):
    response = httpx.post(
        f"{gateway.url}/v1/embeddings",
        json={"model": "default", "input": "Bonjour", "dimensions": 4, "encoding_format": "base64"},
        headers={"Authorization": f"Bearer {gateway.key}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    encoded = response.json()["data"][0]["embedding"]
    vector = struct.unpack("<4f", base64.b64decode(encoded))
    assert sum(v * v for v in vector) == pytest.approx(1.0, abs=1e-5)


# --------------------------------------------------------------------------- Azure OpenAI


@pytest.fixture
def azure(gateway_server, principals, key_a):
    """An alias routed to an Azure OpenAI deployment; yields (openai SDK client, upstream)."""
    from openai import OpenAI

    with AzureUpstream() as upstream:
        route_alias(
            "azure-gpt",
            upstream.base_url,
            kind="azure",
            model="gpt-4o-eu",
            api_version=upstream.api_version,
        )
        sdk = OpenAI(base_url=f"{gateway_server}/v1", api_key=key_a, max_retries=0, timeout=30)
        yield sdk, upstream


def test_an_azure_deployments_tool_call_reaches_the_client_whole(azure):
    sdk, upstream = azure
    upstream.tool_call = {"name": "get_weather", "arguments": PARIS}

    reply = sdk.chat.completions.create(model="azure-gpt", messages=ASK, tools=[WEATHER_TOOL])
    [call] = reply.choices[0].message.tool_calls
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", PARIS)
    assert reply.choices[0].finish_reason == "tool_calls"

    stream = sdk.chat.completions.create(
        model="azure-gpt", messages=ASK, tools=[WEATHER_TOOL], stream=True
    )
    [streamed], finish_reason = streamed_tool_calls(stream)
    assert (streamed["name"], json.loads("".join(streamed["pieces"]))) == ("get_weather", PARIS)
    assert finish_reason == "tool_calls"
    assert upstream.requests[-1].path == "/openai/deployments/gpt-4o-eu/chat/completions"


def test_an_azure_deployments_embeddings_reach_the_client(azure):
    sdk, upstream = azure
    result = sdk.embeddings.create(model="azure-gpt", input="Bonjour tout le monde")

    assert len(result.data) == 1 and len(result.data[0].embedding) == 8
    assert result.usage.prompt_tokens == 4
    assert upstream.requests[-1].path == "/openai/deployments/gpt-4o-eu/embeddings"


# --------------------------------------------------------------------------- LangChain


def langchain_chat(gateway: Gateway):
    try:
        from langchain_openai import ChatOpenAI
    except ImportError as error:
        pytest.fail(
            f"langchain-openai is not installed ({error}); `make test` installs it (a dev "
            "dependency in pyproject.toml)",
            pytrace=False,
        )
    return ChatOpenAI(
        model="default",
        base_url=f"{gateway.url}/v1",
        api_key=gateway.key,
        max_retries=0,
        timeout=30,
    )


def get_weather(city: str) -> str:
    """Current weather for a city."""
    return f"18 C in {city}"


def test_langchain_bound_tools_return_the_call_with_its_arguments(gateway, upstream):
    upstream.tool_call = {"name": "get_weather", "arguments": PARIS}
    message = (
        langchain_chat(gateway).bind_tools([get_weather]).invoke("What is the weather in Paris?")
    )

    [call] = message.tool_calls
    assert (call["name"], call["args"]) == ("get_weather", PARIS)
    assert call["id"].startswith("call_")
    sent = upstream.requests[-1].json["tools"]
    assert [t["function"]["name"] for t in sent] == ["get_weather"]


def test_langchain_structured_output_by_function_calling_gives_the_model(gateway, upstream):
    from pydantic import BaseModel

    class Weather(BaseModel):
        """The weather in a city."""

        city: str
        temperature_c: int

    upstream.tool_call = {"name": "Weather", "arguments": {"city": "Paris", "temperature_c": 18}}
    structured = langchain_chat(gateway).with_structured_output(Weather, method="function_calling")

    result = structured.invoke("What is the weather in Paris?")

    assert result == Weather(city="Paris", temperature_c=18)
    assert upstream.requests[-1].json["tool_choice"] == {
        "type": "function",
        "function": {"name": "Weather"},
    }


def test_langchain_streams_a_tool_call_in_chunks_that_add_up(gateway, upstream):
    upstream.tool_call = {"name": "get_weather", "arguments": PARIS}
    chunks = list(
        langchain_chat(gateway).bind_tools([get_weather]).stream("What is the weather in Paris?")
    )

    pieces = [c for chunk in chunks for c in chunk.tool_call_chunks]
    assert len(pieces) > 2
    assert pieces[0]["name"] == "get_weather" and pieces[0]["id"].startswith("call_")
    assert json.loads("".join(p["args"] or "" for p in pieces)) == PARIS
    gathered = chunks[0]
    for chunk in chunks[1:]:
        gathered += chunk
    assert [(c["name"], c["args"]) for c in gathered.tool_calls] == [("get_weather", PARIS)]
    assert gathered.response_metadata.get("finish_reason") == "tool_calls"


# --------------------------------------------------------------------------- subprocess clients


def run_client(command: list[str], gateway: Gateway, *, base_url: str) -> dict[str, Any]:
    spec = {
        "base_url": base_url,
        "api_key": gateway.key,
        "model": "default",
        "messages": ASK,
        "tools": [WEATHER_TOOL],
    }
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "NO_PROXY": "127.0.0.1,localhost",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }
    done = subprocess.run(
        command,
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        cwd=REPO,
    )
    assert done.returncode == 0, f"{command[-1]} failed:\n{done.stderr[-4000:]}"
    return json.loads(done.stdout)


def the_weather_call(part: dict[str, Any]) -> tuple[str, str, Any]:
    """What a user of the client sees of its one tool call: finish reason, name, arguments."""
    assert "error" not in part, part["error"]
    [call] = part["tool_calls"]
    assert call["id"].startswith("call_"), call
    return part["finish_reason"], call["name"], json.loads(call["arguments"])


@pytest.mark.slow
def test_the_litellm_sdk_receives_tool_calls_plain_and_streamed(gateway, upstream):
    if not CLIENTS_PYTHON.exists():
        pytest.fail(
            f"LiteLLM's venv is missing ({CLIENTS_PYTHON}); `make test` installs it "
            "(`make clients`)",
            pytrace=False,
        )
    upstream.tool_call = {"name": "get_weather", "arguments": PARIS}
    result = run_client(
        [str(CLIENTS_PYTHON), str(CLIENTS / "litellm_tool_call.py")],
        gateway,
        base_url=f"{gateway.url}/v1",
    )

    expected = ("tool_calls", "get_weather", PARIS)
    assert the_weather_call(result["plain"]) == expected
    assert the_weather_call(result["streamed"]) == expected


@pytest.mark.slow
def test_the_openai_node_sdk_receives_tool_calls_plain_and_streamed(gateway, upstream):
    node = shutil.which("node")
    if node is None or not (NODE_PACKAGE / "node_modules" / "openai" / "package.json").exists():
        pytest.fail(
            "Node.js or the openai Node SDK is missing (tests/clients/node/node_modules); "
            "`make test` installs it (`make clients`)",
            pytrace=False,
        )
    upstream.tool_call = {"name": "get_weather", "arguments": PARIS}
    result = run_client(
        [node, str(NODE_PACKAGE / "tool_call.mjs")], gateway, base_url=f"{gateway.url}/v1"
    )

    expected = ("tool_calls", "get_weather", PARIS)
    assert the_weather_call(result["plain"]) == expected
    assert the_weather_call(result["streamed"]) == expected
    assert the_weather_call(result["stream_helper"]) == expected
