"""The Anthropic adapter against a real local server speaking the Messages API
(``tests/upstreams_anthropic.py``, which refuses what Anthropic refuses): requests, answers,
streams, tools, images, and every failure mapped, retried or counted as the gateway's other
providers are."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Iterator
from decimal import Decimal

import pytest

from gateway.pipeline import dispatch
from gateway.pipeline.dispatch import DispatchPlan
from gateway.pipeline.route import Target
from gateway.providers import registry
from gateway.providers.anthropic import AnthropicAdapter
from gateway.providers.base import (
    ChatDelta,
    ChatMessage,
    ChatRequest,
    EmbeddingRequest,
    ProviderConfig,
    UnsupportedByProvider,
    UpstreamAuthError,
    UpstreamBadResponse,
    UpstreamServerError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.resilience.breaker import InProcessBreaker
from gateway.resilience.policy import ResiliencePolicy
from tests.upstreams_anthropic import AnthropicUpstream

KEY_ENV = "ANTHROPIC_TEST_KEY"
SECRET = "sk-ant-NEVER-SHOW-THIS-0123456789"
MODEL = "claude-test"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
PNG = base64.b64encode(
    base64.b64decode(
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
    )
).decode()


def chat(*messages: ChatMessage, **fields) -> ChatRequest:
    return ChatRequest(
        model=MODEL, messages=list(messages) or [ChatMessage("user", "hello claude")], **fields
    )


async def collect(adapter, request: ChatRequest) -> list[ChatDelta]:
    return [delta async for delta in adapter.stream(request)]


def config(base_url: str, **fields) -> ProviderConfig:
    defaults = {
        "name": f"anthropic-{uuid.uuid4().hex[:6]}",
        "kind": "anthropic",
        "api_key_ref": f"env:{KEY_ENV}",
        "connect_timeout": 1.0,
        "read_timeout": 1.0,
    }
    return ProviderConfig(base_url=base_url, **{**defaults, **fields})


@pytest.fixture(autouse=True)
def _api_key(monkeypatch) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET)


@pytest.fixture
def upstream() -> Iterator[AnthropicUpstream]:
    with AnthropicUpstream() as server:
        server.hang_seconds = 3.0  # longer than the read timeout
        server.required_key = SECRET
        yield server


@pytest.fixture
async def make_adapter():
    adapters = []

    def make(base_url: str, **fields) -> AnthropicAdapter:
        adapter = AnthropicAdapter(config(base_url, **fields))
        adapters.append(adapter)
        return adapter

    yield make
    for adapter in adapters:
        await adapter.aclose()


# --------------------------------------------------------------------------- plain answers


async def test_it_answers_with_the_key_and_version_in_headers(upstream, make_adapter):
    adapter = make_adapter(upstream.base_url)

    result = await adapter.complete(
        chat(ChatMessage("system", "Be brief."), ChatMessage("user", "what is the time"))
    )

    assert result.content == "what is the time"
    assert result.finish_reason == "stop"
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (6, 4)
    sent = upstream.requests[-1]
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == SECRET
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in sent.headers
    assert sent.json["system"] == "Be brief."
    assert sent.json["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "what is the time"}]}
    ]


async def test_max_tokens_comes_from_the_request_or_the_providers_default(upstream, make_adapter):
    await make_adapter(upstream.base_url).complete(chat(max_tokens=77))
    assert upstream.requests[-1].json["max_tokens"] == 77

    await make_adapter(upstream.base_url, extra={"default_max_tokens": 321}).complete(chat())
    assert upstream.requests[-1].json["max_tokens"] == 321

    await make_adapter(upstream.base_url).complete(chat())
    assert upstream.requests[-1].json["max_tokens"] == 4096


async def test_sampling_and_stop_sequences_are_sent_as_anthropic_names(upstream, make_adapter):
    await make_adapter(upstream.base_url, api_version="2024-01-01").complete(
        chat(temperature=0.2, top_p=0.9, stop=["END"], user="jane.doe@example.com")
    )
    sent = upstream.requests[-1]
    assert sent.headers["anthropic-version"] == "2024-01-01"
    body = sent.json
    assert (body["temperature"], body["top_p"], body["stop_sequences"]) == (0.2, 0.9, ["END"])
    # An opaque id, as Anthropic asks: the client's user may be an email address.
    user_id = body["metadata"]["user_id"]
    assert "jane" not in user_id and len(user_id) == 64
    assert user_id == hashlib.sha256(b"jane.doe@example.com").hexdigest()


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [("max_tokens", "length"), ("stop_sequence", "stop"), ("refusal", "content_filter")],
)
async def test_stop_reasons_become_finish_reasons(upstream, make_adapter, stop_reason, finish):
    upstream.stop_reason = stop_reason
    adapter = make_adapter(upstream.base_url)
    assert (await adapter.complete(chat())).finish_reason == finish
    deltas = await collect(adapter, chat())
    assert deltas[-1].finish_reason == finish


async def test_an_image_data_url_goes_as_a_base64_block(upstream, make_adapter):
    parts = (
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
    )
    result = await make_adapter(upstream.base_url).complete(
        chat(ChatMessage("user", "what is this", parts=parts))
    )
    assert result.content == "what is this [saw 1 images]"
    assert upstream.requests[-1].json["messages"][0]["content"][1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
    }


@pytest.mark.parametrize(
    "url",
    ["http://example.com/cat.png", "data:image/bmp;base64,Qk0=", "file:///etc/passwd"],
)
async def test_images_anthropic_cannot_take_are_refused_before_any_call(
    upstream, make_adapter, url
):
    parts = ({"type": "image_url", "image_url": {"url": url}},)
    with pytest.raises(UnsupportedByProvider) as caught:
        await make_adapter(upstream.base_url).complete(chat(ChatMessage("user", "", parts=parts)))
    assert caught.value.param == "messages[0].content[0]"
    assert url not in caught.value.message
    assert upstream.requests == []


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"tools": [{"type": "code_interpreter"}]}, "tools[0]"),
    ],
)
async def test_what_the_messages_api_cannot_honour_is_refused(upstream, make_adapter, extra, param):
    with pytest.raises(UnsupportedByProvider) as caught:
        await make_adapter(upstream.base_url).complete(chat(extra=extra))
    assert caught.value.param == param
    assert upstream.requests == []


async def test_embeddings_are_refused_clearly(upstream, make_adapter):
    with pytest.raises(UnsupportedByProvider):
        await make_adapter(upstream.base_url).embed(EmbeddingRequest(model=MODEL, inputs=["x"]))


# --------------------------------------------------------------------------- tools


async def test_tools_and_tool_choice_are_translated(upstream, make_adapter):
    adapter = make_adapter(upstream.base_url)
    await adapter.complete(
        chat(
            extra={
                "tools": [WEATHER],
                "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
                "parallel_tool_calls": False,
            }
        )
    )
    body = upstream.requests[-1].json
    assert body["tools"] == [
        {
            "name": "get_weather",
            "description": "The weather in a city.",
            "input_schema": WEATHER["function"]["parameters"],
        }
    ]
    assert body["tool_choice"] == {
        "type": "tool",
        "name": "get_weather",
        "disable_parallel_tool_use": True,
    }
    await adapter.complete(chat(extra={"tools": [WEATHER], "tool_choice": "required"}))
    assert upstream.requests[-1].json["tool_choice"] == {"type": "any"}
    await adapter.complete(chat(extra={"tools": [WEATHER], "tool_choice": "none"}))
    assert upstream.requests[-1].json["tool_choice"] == {"type": "none"}


async def test_an_agent_loop_runs_on_anthropic(upstream, make_adapter):
    """A tool call, its result sent back as a tool_result block, and the final answer."""
    adapter = make_adapter(upstream.base_url)
    question = ChatMessage("user", "Weather in Paris?")
    upstream.tool_use = {"id": "toolu_01A", "name": "get_weather", "input": {"city": "Paris"}}

    first = await adapter.complete(chat(question, extra={"tools": [WEATHER]}))
    assert first.finish_reason == "tool_calls"
    calls = first.choices[0].tool_calls
    assert calls == [
        {
            "id": "toolu_01A",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
        }
    ]

    upstream.tool_use = None
    final = await adapter.complete(
        chat(
            question,
            ChatMessage("assistant", "", tool_calls=calls),
            ChatMessage("tool", "sunny, 24 °C", tool_call_id="toolu_01A"),
            extra={"tools": [WEATHER]},
        )
    )
    assert final.content == "sunny, 24 °C"
    assert final.finish_reason == "stop"
    assert upstream.requests[-1].json["messages"][1:] == [
        {
            "role": "assistant",
            "content": [
                {
                    "type": "tool_use",
                    "id": "toolu_01A",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                }
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "sunny, 24 °C"}
            ],
        },
    ]


async def test_tool_history_goes_as_text_when_no_tools_are_declared(upstream, make_adapter):
    call = {"id": "toolu_1", "type": "function", "function": {"name": "clock", "arguments": ""}}
    result = await make_adapter(upstream.base_url).complete(
        chat(
            ChatMessage("user", "time?"),
            ChatMessage("assistant", "", tool_calls=[call]),
            ChatMessage("tool", "noon", tool_call_id="toolu_1"),
        )
    )
    assert result.content == "Tool result: noon"
    assert upstream.requests[-1].json["messages"][1]["content"] == [
        {"type": "text", "text": "Tool call clock: {}"}
    ]


async def test_a_streamed_tool_call_arrives_as_openai_fragments(upstream, make_adapter):
    upstream.reply = "Let me look."
    arguments = {"city": "Zürich", "days": 2}
    upstream.tool_use = [
        {"name": "get_weather", "input": arguments},
        {"name": "clock", "input": {}},
    ]

    deltas = await collect(make_adapter(upstream.base_url), chat(extra={"tools": [WEATHER]}))

    assert "".join(d.content for d in deltas) == "Let me look."
    fragments = [f for d in deltas for f in d.tool_calls or ()]
    assert fragments[0] == {
        "index": 0,
        "id": "toolu_00",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    pieces = [f["function"]["arguments"] for f in fragments if f["index"] == 0][1:]
    assert len(pieces) > 1 and json.loads("".join(pieces)) == arguments
    # A call without input still ends with arguments a client can parse.
    assert "".join(f["function"]["arguments"] for f in fragments if f["index"] == 1) == "{}"
    assert deltas[-1].finish_reason == "tool_calls"
    assert deltas[-1].usage is not None and deltas[-1].usage.completion_tokens > 0


# --------------------------------------------------------------------------- streams


async def test_it_streams_text_and_usage(upstream, make_adapter):
    upstream.reply = "one two three"
    deltas = await collect(make_adapter(upstream.base_url), chat())
    assert [d.content for d in deltas if d.content] == ["one ", "two ", "three"]
    assert deltas[-1].finish_reason == "stop"
    assert (deltas[-1].usage.prompt_tokens, deltas[-1].usage.completion_tokens) == (2, 3)
    assert upstream.requests[-1].json["stream"] is True


@pytest.mark.parametrize(
    ("behaviour", "error"),
    [("stream_break", UpstreamBadResponse), ("stream_error", UpstreamServerError)],
)
async def test_a_stream_that_breaks_midway_is_an_error_not_a_short_answer(
    upstream, make_adapter, behaviour, error
):
    upstream.behaviour, upstream.reply = behaviour, "one two three four five"
    with pytest.raises(error) as caught:
        await collect(make_adapter(upstream.base_url), chat())
    assert SECRET not in caught.value.message


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("behaviour", "error", "retry_after"),
    [
        ("rate_limited", UpstreamUnavailable, 1.0),
        ("overloaded", UpstreamUnavailable, 1.0),
        ("error500", UpstreamServerError, None),
        ("unauthorized", UpstreamAuthError, None),
        ("malformed_json", UpstreamBadResponse, None),
        ("reset", UpstreamUnavailable, None),
        ("hang", UpstreamTimeout, None),
    ],
)
async def test_failures_are_mapped(upstream, make_adapter, behaviour, error, retry_after):
    upstream.behaviour = behaviour
    with pytest.raises(error) as caught:
        await make_adapter(upstream.base_url).complete(chat())
    assert type(caught.value) is error
    assert caught.value.retry_after == retry_after
    assert SECRET not in str(caught.value)


async def test_a_400_names_anthropics_error_type(upstream, make_adapter):
    # The server refuses a tool_result that answers no tool_use, as Anthropic does.
    with pytest.raises(UpstreamBadResponse) as caught:
        await make_adapter(upstream.base_url).complete(
            chat(
                ChatMessage("user", "hi"),
                ChatMessage("tool", "stray", tool_call_id="toolu_x"),
                extra={"tools": [WEATHER]},
            )
        )
    assert caught.value.upstream_status == 400
    assert caught.value.upstream_code == "invalid_request_error"


async def test_a_rotated_key_is_fetched_again_once(upstream, make_adapter, monkeypatch):
    adapter = make_adapter(upstream.base_url)
    await adapter.complete(chat())
    monkeypatch.setenv(KEY_ENV, "sk-ant-rotated")
    upstream.required_key = "sk-ant-rotated"
    assert (await adapter.complete(chat())).content == "hello claude"
    assert [r.headers["x-api-key"] for r in upstream.requests[-2:]] == [SECRET, "sk-ant-rotated"]


async def test_a_disallowed_host_gets_no_key(upstream, make_adapter, settings):
    settings.LLMP_UPSTREAM_HOSTS = ["api.anthropic.com"]
    with pytest.raises(UpstreamUnavailable):
        await make_adapter(upstream.base_url).complete(chat())
    assert upstream.requests == []


# --------------------------------------------------------------------------- through dispatch


def target(upstream: AnthropicUpstream, **policy) -> Target:
    provider = config(upstream.base_url)
    numbers = {"backoff_base": 0.05, "backoff_max": 0.2, "total_timeout": 5.0, **policy}
    return Target(
        alias="default",
        version="v1",
        deployment=f"{provider.name}-deployment",
        model=MODEL,
        provider=provider,
        weight=100,
        system_prompt="",
        params={},
        input_price_per_1k=Decimal(0),
        output_price_per_1k=Decimal(0),
        policy=ResiliencePolicy(**numbers),
    )


def plan(*targets: Target, breaker) -> DispatchPlan:
    return DispatchPlan(
        "default", targets, lambda t: chat(ChatMessage("user", "hello there")), breaker=breaker
    )


@pytest.fixture(autouse=True)
async def _close_adapters():
    yield
    await registry.close_all()  # dispatch builds (and caches) its own adapters


@pytest.fixture
def waits(monkeypatch) -> list[float]:
    scheduled: list[float] = []
    original = dispatch._before_retry

    def record(state, deployment):
        scheduled.append(state.upcoming_sleep)
        original(state, deployment)

    monkeypatch.setattr(dispatch, "_before_retry", record)
    return scheduled


@pytest.mark.parametrize("behaviour", ["rate_limited", "overloaded"])
async def test_a_429_or_529_is_retried_after_the_hinted_delay(upstream, waits, behaviour):
    upstream.behaviour = behaviour

    def recover(_request) -> None:
        if len(upstream.requests) > 1:
            upstream.behaviour = "ok"

    upstream.on_request = recover
    served = await dispatch.complete(
        plan(target(upstream), breaker=InProcessBreaker(on_transition=None))
    )
    assert served.result.content == "hello there"
    assert len(upstream.requests) == 2
    assert waits == [1.0]  # the retry-after hint, not the shorter backoff


async def test_a_broken_stream_reaches_the_client_as_an_error_and_counts_for_the_breaker(
    upstream,
):
    upstream.behaviour, upstream.reply = "stream_break", "one two three four"
    breaker = InProcessBreaker(on_transition=None)
    first = target(upstream)
    served = await dispatch.open_stream(plan(first, breaker=breaker))
    with pytest.raises(UpstreamBadResponse):
        async for _delta in served.deltas:
            pass
    assert len(upstream.requests) == 1  # bytes had reached the client: not retried
    state = breaker.snapshot({first.deployment: first.policy})[first.deployment]
    assert state.consecutive_failures == 1


async def test_the_readiness_probe_lists_models(upstream, make_adapter, monkeypatch):
    assert await make_adapter(upstream.base_url).check()
    assert upstream.requests[-1].path == "/v1/models"
    monkeypatch.setenv(KEY_ENV, "sk-ant-wrong")
    assert await make_adapter(upstream.base_url).check() is False


async def test_a_stream_that_stalls_midway_ends_at_the_idle_timeout(upstream):
    upstream.behaviour, upstream.reply = "stream_stall", "one two three four"
    breaker = InProcessBreaker(on_transition=None)
    first = target(upstream, idle_timeout=0.3)
    served = await dispatch.open_stream(plan(first, breaker=breaker))
    assert served.first.content == "one "
    with pytest.raises(UpstreamTimeout):
        async for _delta in served.deltas:
            pass
    assert len(upstream.requests) == 1
    state = breaker.snapshot({first.deployment: first.policy})[first.deployment]
    assert state.consecutive_failures == 1
