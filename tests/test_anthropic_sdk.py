"""The ``anthropic`` SDK, unchanged, against the gateway's ``/v1/messages`` door under uvicorn,
with real local upstreams behind it: an OpenAI-compatible server and Bedrock's Converse /
ConverseStream wire (``tests/upstreams.py``). What its user would notice: the text and numbers
are the model's, a tool call arrives as a ``tool_use`` block whose ``input`` is what the model
sent (whole, and streamed as ``input_json_delta`` pieces), and the tool's result goes back and
is answered, whichever provider kind serves the alias."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx
import pytest

from gateway.models import UsageRecord

from .conftest import route_alias
from .upstreams import BedrockUpstream, OpenAIUpstream

pytestmark = pytest.mark.django_db

ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather for a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string", "description": "The city's name."}},
        "required": ["city"],
    },
}
OPENAI_WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": WEATHER_TOOL["input_schema"],
    },
}
PARIS = {"city": "Paris"}
# A 1x1 transparent PNG.
PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5E"
    "rkJggg=="
)


@dataclass
class Door:
    url: str
    key: str
    kind: str
    upstream: Any  # OpenAIUpstream | BedrockUpstream

    def client(self, **options: Any) -> anthropic.Anthropic:
        return anthropic.Anthropic(
            base_url=self.url, api_key=self.key, max_retries=0, timeout=30, **options
        )

    def will_call(self, name: str, arguments: dict[str, Any]) -> None:
        """The upstream's next answers call a tool (each kind says it its own way)."""
        if self.kind == "bedrock":
            self.upstream.tool_use = {"name": name, "input": arguments}
        else:
            self.upstream.tool_call = {"name": name, "arguments": arguments}

    def will_answer(self, text: str | None) -> None:
        self.upstream.tool_use = None
        self.upstream.tool_call = None
        self.upstream.reply = text


@pytest.fixture
def aws_environment(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDMESSAGESDOOR")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "messages-door-secret")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(params=["openai", "bedrock"])
def door(request, gateway_server, principals, key_a, aws_environment) -> Iterator[Door]:
    kind = request.param
    server = OpenAIUpstream() if kind == "openai" else BedrockUpstream()
    with server:
        fields = {"region": "eu-west-1"} if kind == "bedrock" else {}
        route_alias("claude-house", server.base_url, kind=kind, model="the-model", **fields)
        yield Door(gateway_server, key_a, kind, server)


def raw_events(door: Door, body: dict[str, Any]) -> tuple[httpx.Response, list[tuple[str, dict]]]:
    """The stream as it is on the wire: (event name, data) in order."""
    response = httpx.post(
        f"{door.url}/v1/messages",
        json={**body, "stream": True},
        headers={"x-api-key": door.key, "anthropic-version": "2023-06-01"},
        timeout=30,
    )
    events = []
    for block in response.text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return response, events


# --------------------------------------------------------------------------- plain


def test_a_plain_message_comes_back_in_anthropics_shape(door):
    door.will_answer("Bonjour from the gateway.")
    message = door.client().messages.create(
        model="claude-house",
        max_tokens=64,
        system="You are terse.",
        messages=[{"role": "user", "content": "Say hello in French."}],
        metadata={"user_id": "end-user-7"},
    )

    assert message.type == "message" and message.role == "assistant"
    assert message.id.startswith("msg_") and message.model == "claude-house"
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == "Bonjour from the gateway."
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert message.usage.input_tokens > 0 and message.usage.output_tokens == 4
    assert message._request_id and message._request_id.startswith("req_")
    sent = door.upstream.requests[-1].json
    if door.kind == "openai":
        # The system prompt, with the leak guard's canary after it.
        assert sent["messages"][0]["role"] == "system"
        assert sent["messages"][0]["content"].startswith("You are terse.\n")
        assert sent["max_tokens"] == 64 and sent["user"] == "end-user-7"
    else:
        assert sent["system"][0]["text"].startswith("You are terse.\n")
        assert sent["inferenceConfig"]["maxTokens"] == 64
    record = UsageRecord.objects.get()
    assert (record.route, record.status_code, record.alias) == ("messages", 200, "claude-house")
    assert record.completion_tokens == 4 and record.prompt_tokens == message.usage.input_tokens


def test_max_tokens_reached_is_the_max_tokens_stop_reason(door):
    door.will_answer("A long answer cut short")
    if door.kind == "bedrock":
        door.upstream.stop_reason = "max_tokens"
    else:
        door.upstream.finish_reason = "length"
    message = door.client().messages.create(model="claude-house", max_tokens=5, messages=ASK)
    assert message.stop_reason == "max_tokens"


# --------------------------------------------------------------------------- streamed


def test_a_streamed_message_reassembles_in_the_sdk(door):
    door.will_answer("Streaming works through every provider.")
    with door.client().messages.stream(model="claude-house", max_tokens=64, messages=ASK) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()

    assert len(pieces) > 2  # it really came in pieces
    assert "".join(pieces) == "Streaming works through every provider."
    assert final.content[0].text == "Streaming works through every provider."
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 5 and final.usage.input_tokens > 0
    record = UsageRecord.objects.get()
    assert record.route == "messages" and record.streamed


def test_the_raw_stream_sends_anthropics_events_in_order(door):
    door.will_answer("One two three")
    response, events = raw_events(
        door, {"model": "claude-house", "max_tokens": 32, "messages": ASK}
    )

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    names = [name for name, _ in events]
    assert names[:2] == ["message_start", "content_block_start"]
    assert set(names[2:-3]) == {"content_block_delta"}
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert all(data["type"] == name for name, data in events)
    start = events[0][1]["message"]
    assert start["role"] == "assistant" and start["content"] == [] and start["stop_reason"] is None
    assert events[1][1] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    text = "".join(data["delta"]["text"] for name, data in events if name == "content_block_delta")
    assert text == "One two three"
    delta = events[-2][1]
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert delta["usage"]["output_tokens"] == 3 and delta["usage"]["input_tokens"] > 0


# --------------------------------------------------------------------------- tools


def test_a_tool_call_arrives_as_a_tool_use_block(door):
    door.will_call("get_weather", PARIS)
    message = door.client().messages.create(
        model="claude-house",
        max_tokens=128,
        messages=ASK,
        tools=[WEATHER_TOOL],
        tool_choice={"type": "any"},
    )

    assert message.stop_reason == "tool_use"
    [call] = [block for block in message.content if block.type == "tool_use"]
    assert call.name == "get_weather" and call.input == PARIS and call.id
    sent = door.upstream.requests[-1].json
    if door.kind == "openai":
        assert sent["tools"] == [OPENAI_WEATHER_TOOL] and sent["tool_choice"] == "required"
    else:
        assert sent["toolConfig"]["toolChoice"] == {"any": {}}
        assert sent["toolConfig"]["tools"][0]["toolSpec"]["name"] == "get_weather"


def test_a_streamed_tool_call_arrives_in_input_json_delta_pieces(door):
    door.will_call("get_weather", {"city": "Paris", "units": "metric"})
    body = {"model": "claude-house", "max_tokens": 128, "messages": ASK, "tools": [WEATHER_TOOL]}
    _, events = raw_events(door, body)
    starts = [data for name, data in events if name == "content_block_start"]
    tool_start = next(s for s in starts if s["content_block"]["type"] == "tool_use")
    assert tool_start["content_block"]["name"] == "get_weather"
    assert tool_start["content_block"]["input"] == {}
    pieces = [
        data["delta"]["partial_json"]
        for name, data in events
        if name == "content_block_delta" and data["index"] == tool_start["index"]
    ]
    assert len(pieces) > 1 and all(
        data["delta"]["type"] == "input_json_delta"
        for name, data in events
        if name == "content_block_delta" and data["index"] == tool_start["index"]
    )
    assert json.loads("".join(pieces)) == {"city": "Paris", "units": "metric"}
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"

    with door.client().messages.stream(**body) as stream:
        final = stream.get_final_message()
    [call] = [block for block in final.content if block.type == "tool_use"]
    assert call.input == {"city": "Paris", "units": "metric"} and call.name == "get_weather"
    assert final.stop_reason == "tool_use"


def test_the_tool_result_goes_back_and_is_answered(door):
    client = door.client()
    door.will_call("get_weather", PARIS)
    first = client.messages.create(
        model="claude-house", max_tokens=128, messages=ASK, tools=[WEATHER_TOOL]
    )
    [call] = [block for block in first.content if block.type == "tool_use"]

    door.will_answer(None if door.kind == "openai" else "It is 18 C and sunny in Paris.")
    result = json.dumps({"temperature_c": 18, "sky": "sunny"})
    second = client.messages.create(
        model="claude-house",
        max_tokens=128,
        tools=[WEATHER_TOOL],
        messages=[
            *ASK,
            {"role": "assistant", "content": first.content},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": call.id, "content": result}],
            },
        ],
    )

    assert second.stop_reason == "end_turn"
    sent = door.upstream.requests[-1].json
    if door.kind == "openai":
        assert second.content[0].text == f"The tool said: {result}"
        assert sent["messages"][1]["tool_calls"] == [
            {
                "id": call.id,
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "arguments": json.dumps(PARIS, separators=(",", ":")),
                },
            }
        ]
        assert sent["messages"][2] == {"role": "tool", "tool_call_id": call.id, "content": result}
    else:
        assert second.content[0].text == "It is 18 C and sunny in Paris."
        assistant, user = sent["messages"][1], sent["messages"][2]
        assert assistant["content"][0]["toolUse"] == {
            "toolUseId": call.id,
            "name": "get_weather",
            "input": PARIS,
        }
        assert user["content"][0]["toolResult"]["toolUseId"] == call.id
        assert user["content"][0]["toolResult"]["content"] == [{"text": result}]


def test_an_image_block_reaches_the_model(door):
    door.will_answer(None if door.kind == "openai" else "A tiny picture.")
    message = door.client().messages.create(
        model="claude-house",
        max_tokens=64,
        messages=[
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                    },
                    {"type": "text", "text": "What is in this picture?"},
                ],
            }
        ],
    )
    sent = door.upstream.requests[-1].json
    if door.kind == "openai":
        assert message.content[0].text.endswith("[saw 1 images]")
        part = sent["messages"][0]["content"][0]
        assert part == {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}
    else:
        image = sent["messages"][0]["content"][0]["image"]
        assert image["format"] == "png" and base64.b64decode(image["source"]["bytes"])


def test_count_tokens_estimates_without_calling_a_model(door):
    counted = door.client().messages.count_tokens(
        model="claude-house", messages=ASK, system="You are terse.", tools=[WEATHER_TOOL]
    )
    bare = door.client().messages.count_tokens(model="claude-house", messages=ASK)
    assert counted.input_tokens > bare.input_tokens > 0
    assert door.upstream.requests == []


# --------------------------------------------------------------------------- block order


def test_text_then_a_tool_call_stream_as_two_blocks_one_after_the_other(
    gateway_server, principals, key_a, aws_environment
):
    with BedrockUpstream(reply="Let me look that up.") as server:
        route_alias("claude-house", server.base_url, kind="bedrock", region="eu-west-1")
        server.tool_use = {"name": "get_weather", "input": PARIS}
        door = Door(gateway_server, key_a, "bedrock", server)
        body = {"model": "claude-house", "max_tokens": 64, "messages": ASK, "tools": [WEATHER_TOOL]}
        _, events = raw_events(door, body)

        shape = [
            (
                name,
                data.get("index"),
                (data.get("content_block") or data.get("delta") or {}).get("type"),
            )
            for name, data in events
            if name.startswith("content_block")
        ]
        # Each block opens, takes its deltas and closes before the next one opens.
        text = [s for s in shape if s[1] == 0]
        tool = [s for s in shape if s[1] == 1]
        assert shape == text + tool
        assert text[0] == ("content_block_start", 0, "text") and text[-1][0] == "content_block_stop"
        assert tool[0] == ("content_block_start", 1, "tool_use")
        assert {s[2] for s in tool[1:-1]} == {"input_json_delta"}

        with door.client().messages.stream(**body) as stream:
            final = stream.get_final_message()
        assert [block.type for block in final.content] == ["text", "tool_use"]
        assert final.content[0].text == "Let me look that up."
        assert final.content[1].input == PARIS and final.stop_reason == "tool_use"


def test_parallel_tool_calls_are_separate_tool_use_blocks(gateway_server, principals, key_a):
    lyon = {"city": "Lyon"}
    with OpenAIUpstream() as server:
        route_alias("claude-house", server.base_url)
        server.tool_call = [
            {"name": "get_weather", "arguments": PARIS},
            {"name": "get_weather", "arguments": lyon},
        ]
        client = Door(gateway_server, key_a, "openai", server).client()
        body = {"model": "claude-house", "max_tokens": 64, "messages": ASK, "tools": [WEATHER_TOOL]}

        plain = client.messages.create(**body)
        with client.messages.stream(**body) as stream:
            streamed = stream.get_final_message()
        for message in (plain, streamed):
            calls = [block for block in message.content if block.type == "tool_use"]
            assert [call.input for call in calls] == [PARIS, lyon]
            assert len({call.id for call in calls}) == 2
