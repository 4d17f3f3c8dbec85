"""The Bedrock adapter against a real local server speaking the Converse API, including the
binary AWS event-stream framing that botocore itself decodes."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import boto3
import pytest
from botocore.config import Config

from gateway.providers.base import (
    ChatDelta,
    ChatMessage,
    ChatRequest,
    ProviderConfig,
    UpstreamAuthError,
    UpstreamBadResponse,
    UpstreamError,
    UpstreamServerError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.providers.bedrock import BedrockAdapter
from tests.upstreams import BedrockUpstream

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
SECRET_ACCESS_KEY = "aws-secret-NEVER-SHOW-THIS-1234567890"


def chat(*messages: ChatMessage, **fields) -> ChatRequest:
    return ChatRequest(
        model=MODEL, messages=list(messages) or [ChatMessage("user", "hello bedrock")], **fields
    )


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def collect(adapter: BedrockAdapter, request: ChatRequest) -> list[ChatDelta]:
    return [delta async for delta in adapter.stream(request)]


def reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "bedrock-stream-bedrock-test"]


@pytest.fixture(autouse=True)
def _aws_environment(monkeypatch, tmp_path) -> None:
    """Fake credentials for boto3's default chain, and nothing from the host's AWS setup."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDDEFAULTCHAIN")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def upstream() -> Iterator[BedrockUpstream]:
    with BedrockUpstream() as server:
        server.hang_seconds = 2.0
        yield server


@pytest.fixture
async def make_adapter():
    adapters = []

    def make(base_url: str, **fields) -> BedrockAdapter:
        defaults = {
            "name": "bedrock-test",
            "kind": "bedrock",
            "region": "eu-west-1",
            "connect_timeout": 1.0,
            "read_timeout": 2.0,
        }
        adapter = BedrockAdapter(ProviderConfig(base_url=base_url, **{**defaults, **fields}))
        adapters.append(adapter)
        return adapter

    yield make
    for adapter in adapters:
        await adapter.aclose()


# --------------------------------------------------------------------------- the fake itself


def test_the_fake_event_stream_is_decoded_by_botocore(upstream):
    client = boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=upstream.base_url,
        config=Config(retries={"total_max_attempts": 1}),
    )
    upstream.reply = "framed by hand"

    response = client.converse_stream(
        modelId=MODEL, messages=[{"role": "user", "content": [{"text": "hi"}]}]
    )
    events = list(response["stream"])

    assert response["ResponseMetadata"]["HTTPHeaders"]["content-type"] == (
        "application/vnd.amazon.eventstream"
    )
    assert events == [
        {"messageStart": {"role": "assistant"}},
        {"contentBlockDelta": {"delta": {"text": "framed "}, "contentBlockIndex": 0}},
        {"contentBlockDelta": {"delta": {"text": "by "}, "contentBlockIndex": 0}},
        {"contentBlockDelta": {"delta": {"text": "hand"}, "contentBlockIndex": 0}},
        {"contentBlockStop": {"contentBlockIndex": 0}},
        {"messageStop": {"stopReason": "end_turn"}},
        {
            "metadata": {
                "usage": {"inputTokens": 1, "outputTokens": 3, "totalTokens": 4},
                "metrics": {"latencyMs": 1},
            }
        },
    ]


# --------------------------------------------------------------------------- converse


async def test_it_completes_a_chat(upstream, make_adapter):
    adapter = make_adapter(upstream.base_url)

    result = await adapter.complete(
        chat(ChatMessage("system", "Be brief."), ChatMessage("user", "what is the time"))
    )

    assert result.content == "what is the time"
    assert result.finish_reason == "stop"
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (6, 4)
    assert result.upstream_model == MODEL


async def test_it_sends_a_converse_request(upstream, make_adapter):
    adapter = make_adapter(upstream.base_url)

    await adapter.complete(
        chat(
            ChatMessage("system", "Be brief."),
            ChatMessage("user", "first"),
            ChatMessage("user", "second"),
            ChatMessage(
                "assistant",
                "",
                tool_calls=[
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "clock", "arguments": '{"tz": "UTC"}'},
                    }
                ],
            ),
            ChatMessage("tool", "12:00", tool_call_id="c1"),
            ChatMessage("assistant", "It is noon."),
            ChatMessage("system", "Answer in English."),
            ChatMessage("user", "thanks"),
            temperature=0.2,
            top_p=0.9,
            max_tokens=50,
            stop=["\n\n"],
            user="u-1",
            extra={"seed": 7},
        )
    )

    received = upstream.requests[-1]
    assert (received.method, received.path) == ("POST", f"/model/{MODEL}/converse")
    assert received.json == {
        "system": [{"text": "Be brief."}, {"text": "Answer in English."}],
        # Consecutive turns of one role are merged: Bedrock requires alternation. Without tools
        # in the request, Bedrock refuses toolUse/toolResult blocks: earlier calls go as text.
        "messages": [
            {"role": "user", "content": [{"text": "first\n\nsecond"}]},
            {"role": "assistant", "content": [{"text": 'Tool call clock: {"tz": "UTC"}'}]},
            {"role": "user", "content": [{"text": "Tool result: 12:00"}]},
            {"role": "assistant", "content": [{"text": "It is noon."}]},
            {"role": "user", "content": [{"text": "thanks"}]},
        ],
        "inferenceConfig": {
            "maxTokens": 50,
            "temperature": 0.2,
            "topP": 0.9,
            "stopSequences": ["\n\n"],
        },
    }


async def test_it_signs_with_the_default_credential_chain_and_region(upstream, make_adapter):
    adapter = make_adapter(upstream.base_url)

    await adapter.complete(chat())

    authorization = upstream.requests[-1].headers["authorization"]
    assert "Credential=AKIDDEFAULTCHAIN/" in authorization
    assert "/eu-west-1/bedrock/aws4_request" in authorization


async def test_the_region_defaults_to_the_setting(upstream, make_adapter, settings):
    settings.AWS_REGION = "ap-southeast-2"
    adapter = make_adapter(upstream.base_url, region="")

    await adapter.complete(chat())

    assert "/ap-southeast-2/bedrock/" in upstream.requests[-1].headers["authorization"]


async def test_it_sends_only_the_inference_settings_given(upstream, make_adapter):
    adapter = make_adapter(upstream.base_url)

    await adapter.complete(chat(max_tokens=10))

    assert upstream.requests[-1].json["inferenceConfig"] == {"maxTokens": 10}
    assert "system" not in upstream.requests[-1].json


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("content_filtered", "content_filter"),
        ("guardrail_intervened", "content_filter"),
    ],
)
async def test_it_maps_stop_reasons(upstream, make_adapter, stop_reason, finish_reason):
    upstream.stop_reason = stop_reason
    adapter = make_adapter(upstream.base_url)

    assert (await adapter.complete(chat())).finish_reason == finish_reason
    assert (await collect(adapter, chat()))[-1].finish_reason == finish_reason


# --------------------------------------------------------------------------- streaming


async def test_it_streams_the_answer_with_usage(upstream, make_adapter):
    upstream.reply = "the answer comes in several pieces"
    adapter = make_adapter(upstream.base_url)

    deltas = await collect(
        adapter, chat(ChatMessage("system", "Be brief."), ChatMessage("user", "one two three"))
    )

    assert "".join(d.content for d in deltas) == "the answer comes in several pieces"
    assert len([d for d in deltas if d.content]) == 6
    assert all(d.finish_reason is None for d in deltas[:-1])
    assert deltas[-1].finish_reason == "stop"
    assert (deltas[-1].usage.prompt_tokens, deltas[-1].usage.completion_tokens) == (5, 6)
    received = upstream.requests[-1]
    assert received.path == f"/model/{MODEL}/converse-stream"
    assert received.json["system"] == [{"text": "Be brief."}]


async def test_a_stream_does_not_block_the_event_loop(upstream, make_adapter):
    upstream.behaviour = "stream_stall"
    upstream.hang_seconds = 0.5
    adapter = make_adapter(upstream.base_url)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    with pytest.raises(UpstreamBadResponse):  # the stall ends with the connection closing
        await collect(adapter, chat())
    ticker.cancel()

    assert ticks >= 20


async def test_a_consumer_that_stops_early_stops_the_reader_thread(upstream, make_adapter):
    upstream.behaviour = "stream_stall"
    upstream.hang_seconds = 10.0
    adapter = make_adapter(upstream.base_url, read_timeout=10.0)

    stream = adapter.stream(chat())
    first = await anext(stream)
    assert first.content == "hello "
    assert reader_threads()
    started = time.monotonic()
    await stream.aclose()

    while reader_threads() and time.monotonic() - started < 2:
        await asyncio.sleep(0.01)
    assert not reader_threads()
    # The adapter keeps working afterwards.
    upstream.behaviour = "ok"
    assert (await adapter.complete(chat())).content == "hello bedrock"


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("behaviour", "error"),
    [
        ("rate_limited", UpstreamUnavailable),
        ("unauthorized", UpstreamAuthError),
        ("access_denied", UpstreamAuthError),
        ("validation_error", UpstreamBadResponse),
        ("error500", UpstreamServerError),
        ("model_timeout", UpstreamTimeout),
        ("malformed_json", UpstreamBadResponse),
        ("hang", UpstreamTimeout),
        ("reset", UpstreamUnavailable),
    ],
)
async def test_it_maps_upstream_failures(upstream, make_adapter, behaviour, error):
    upstream.behaviour = behaviour
    adapter = make_adapter(upstream.base_url, read_timeout=0.3)

    with pytest.raises(UpstreamError) as caught:
        await adapter.complete(chat())

    assert type(caught.value) is error
    assert "bedrock-test" in caught.value.message
    assert SECRET_ACCESS_KEY not in str(caught.value)
    # botocore does not retry: the gateway decides about retries.
    assert len(upstream.requests) == 1


async def test_an_error_names_the_aws_error_code(upstream, make_adapter):
    upstream.behaviour = "rate_limited"
    adapter = make_adapter(upstream.base_url)

    with pytest.raises(UpstreamUnavailable) as caught:
        await adapter.complete(chat())

    assert "ThrottlingException" in caught.value.message
    assert caught.value.upstream_status == 429


@pytest.mark.parametrize(
    ("behaviour", "error"),
    [
        ("rate_limited", UpstreamUnavailable),
        ("error500", UpstreamServerError),
        ("hang", UpstreamTimeout),
        ("reset", UpstreamUnavailable),
    ],
)
async def test_it_maps_failures_before_a_stream_starts(upstream, make_adapter, behaviour, error):
    upstream.behaviour = behaviour
    adapter = make_adapter(upstream.base_url, read_timeout=0.3)

    with pytest.raises(UpstreamError) as caught:
        await collect(adapter, chat())

    assert type(caught.value) is error


@pytest.mark.parametrize(
    ("behaviour", "error"),
    [
        ("stream_break", UpstreamBadResponse),
        ("stream_stall", UpstreamTimeout),
        ("stream_exception", UpstreamUnavailable),  # a throttlingException event
    ],
)
async def test_it_maps_failures_in_the_middle_of_a_stream(upstream, make_adapter, behaviour, error):
    upstream.behaviour = behaviour
    upstream.reply = "first second third"
    adapter = make_adapter(upstream.base_url, read_timeout=0.3)
    received = []

    with pytest.raises(UpstreamError) as caught:
        async for delta in adapter.stream(chat()):
            received.append(delta.content)

    assert type(caught.value) is error
    assert received == ["first "]


async def test_an_unreachable_endpoint_is_unavailable(make_adapter):
    adapter = make_adapter(f"http://127.0.0.1:{closed_port()}")

    with pytest.raises(UpstreamError) as caught:
        await adapter.complete(chat())
    assert type(caught.value) is UpstreamUnavailable


# --------------------------------------------------------------------------- credentials


async def test_it_uses_credentials_from_secret_references(upstream, make_adapter, monkeypatch):
    monkeypatch.setenv("PROVIDER_TEST_AWS_KEY_ID", "AKIDFROMREF")
    monkeypatch.setenv("PROVIDER_TEST_AWS_SECRET", "secret-from-ref")
    adapter = make_adapter(
        upstream.base_url,
        extra={
            "access_key_id_ref": "env:PROVIDER_TEST_AWS_KEY_ID",
            "secret_access_key_ref": "env:PROVIDER_TEST_AWS_SECRET",
        },
    )

    await adapter.complete(chat())

    assert "Credential=AKIDFROMREF/" in upstream.requests[-1].headers["authorization"]


async def test_rotated_credentials_are_refetched_once(upstream, make_adapter, monkeypatch):
    monkeypatch.setenv("PROVIDER_TEST_AWS_KEY_ID", "AKIDOLD")
    monkeypatch.setenv("PROVIDER_TEST_AWS_SECRET", "old-secret")
    adapter = make_adapter(
        upstream.base_url,
        extra={
            "access_key_id_ref": "env:PROVIDER_TEST_AWS_KEY_ID",
            "secret_access_key_ref": "env:PROVIDER_TEST_AWS_SECRET",
        },
    )
    await adapter.complete(chat())
    upstream.required_key = "AKIDNEW"
    monkeypatch.setenv("PROVIDER_TEST_AWS_KEY_ID", "AKIDNEW")
    monkeypatch.setenv("PROVIDER_TEST_AWS_SECRET", "new-secret")

    # The cached client still signs with the old key; the 403 makes it fetch the new one.
    result = await adapter.complete(chat())

    assert result.content == "hello bedrock"
    credentials = [
        r.headers["authorization"].split("Credential=")[1].split("/")[0] for r in upstream.requests
    ]
    assert credentials == ["AKIDOLD", "AKIDOLD", "AKIDNEW"]


async def test_wrong_credentials_fail_after_one_refetch(upstream, make_adapter, monkeypatch):
    monkeypatch.setenv("PROVIDER_TEST_AWS_KEY_ID", "AKIDWRONG")
    monkeypatch.setenv("PROVIDER_TEST_AWS_SECRET", "wrong-secret")
    upstream.required_key = "AKIDRIGHT"
    adapter = make_adapter(
        upstream.base_url,
        extra={
            "access_key_id_ref": "env:PROVIDER_TEST_AWS_KEY_ID",
            "secret_access_key_ref": "env:PROVIDER_TEST_AWS_SECRET",
        },
    )

    with pytest.raises(UpstreamAuthError) as caught:
        await adapter.complete(chat())

    assert len(upstream.requests) == 2
    assert "wrong-secret" not in str(caught.value)


async def test_half_configured_credentials_are_an_auth_error(upstream, make_adapter):
    adapter = make_adapter(
        upstream.base_url, extra={"access_key_id_ref": "env:PROVIDER_TEST_AWS_KEY_ID"}
    )

    with pytest.raises(UpstreamAuthError):
        await adapter.complete(chat())
    assert upstream.requests == []
    assert await adapter.check() is False


# --------------------------------------------------------------------------- readiness


async def test_check_connects_to_a_configured_endpoint(upstream, make_adapter):
    assert await make_adapter(upstream.base_url).check() is True
    assert upstream.requests == []  # a TCP connection only: no tokens spent


async def test_check_fails_when_the_endpoint_is_down(make_adapter):
    assert await make_adapter(f"http://127.0.0.1:{closed_port()}").check() is False


async def test_check_passes_for_aws_itself_without_a_call(make_adapter):
    assert await make_adapter("").check() is True
