"""The OpenAI-compatible and Azure OpenAI adapters against real local servers speaking each
protocol (tests/upstreams.py): wire format, streaming, and every error mapping."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import pytest

from gateway.providers import openai_compatible
from gateway.providers.azure import AzureOpenAIAdapter
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
from gateway.providers.openai_compatible import OpenAICompatibleAdapter, parse_retry_after
from tests.upstreams import AzureUpstream, OpenAIUpstream, http_date

SECRET = "sk-test-NEVER-SHOW-THIS-1234567890"
KEY_ENV = "PROVIDER_TEST_OPENAI_KEY"


def chat(*messages: ChatMessage, **fields) -> ChatRequest:
    return ChatRequest(
        model=fields.pop("model", "gpt-test"),
        messages=list(messages) or [ChatMessage("user", "hello upstream")],
        **fields,
    )


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def collect(adapter, request: ChatRequest) -> list[ChatDelta]:
    return [delta async for delta in adapter.stream(request)]


@pytest.fixture(autouse=True)
def _api_key(monkeypatch) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET)


@pytest.fixture
def upstream() -> Iterator[OpenAIUpstream]:
    with OpenAIUpstream() as server:
        server.hang_seconds = 2.0
        yield server


@pytest.fixture
def azure_upstream() -> Iterator[AzureUpstream]:
    with AzureUpstream() as server:
        yield server


def openai_config(base_url: str, **fields) -> ProviderConfig:
    defaults = {
        "name": "openai-test",
        "kind": "openai",
        "api_key_ref": f"env:{KEY_ENV}",
        "connect_timeout": 1.0,
        "read_timeout": 2.0,
    }
    return ProviderConfig(base_url=base_url, **{**defaults, **fields})


@pytest.fixture
async def make_adapter():
    """Builds adapters (default: OpenAI at the given URL) and closes them after the test."""
    adapters = []

    def make(base_url: str, cls=OpenAICompatibleAdapter, **fields):
        adapter = cls(openai_config(base_url, **fields))
        adapters.append(adapter)
        return adapter

    yield make
    for adapter in adapters:
        await adapter.aclose()


# --------------------------------------------------------------------------- completions


async def test_it_completes_a_chat(upstream, make_adapter):
    adapter = make_adapter(upstream.base_url)

    result = await adapter.complete(
        chat(ChatMessage("system", "Be brief."), ChatMessage("user", "what is the time"))
    )

    assert result.content == "what is the time"
    assert result.finish_reason == "stop"
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (6, 4)
    assert result.upstream_model == "gpt-test"


async def test_it_sends_the_request_in_openai_format(upstream, make_adapter):
    adapter = make_adapter(upstream.base_url)
    tool_call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "clock", "arguments": "{}"},
    }

    await adapter.complete(
        chat(
            ChatMessage("system", "Be brief."),
            ChatMessage("user", "time?", name="alice"),
            ChatMessage("assistant", "", tool_calls=[tool_call]),
            ChatMessage("tool", "12:00", tool_call_id="call_1"),
            temperature=0.2,
            top_p=0.9,
            max_tokens=50,
            stop=["\n\n"],
            user="u-1",
            extra={"seed": 7, "response_format": {"type": "text"}},
        )
    )

    received = upstream.requests[-1]
    assert (received.method, received.path) == ("POST", "/v1/chat/completions")
    assert received.headers["authorization"] == f"Bearer {SECRET}"
    assert received.headers["content-type"] == "application/json"
    assert received.json == {
        "model": "gpt-test",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "time?", "name": "alice"},
            {"role": "assistant", "content": None, "tool_calls": [tool_call]},
            {"role": "tool", "content": "12:00", "tool_call_id": "call_1"},
        ],
        "temperature": 0.2,
        "top_p": 0.9,
        "max_tokens": 50,
        "stop": ["\n\n"],
        "user": "u-1",
        "seed": 7,
        "response_format": {"type": "text"},
    }


async def test_pass_through_parameters_cannot_replace_the_gateways(upstream, make_adapter):
    adapter = make_adapter(upstream.base_url)

    await adapter.complete(chat(extra={"model": "other", "stream": True}))

    assert upstream.requests[-1].json["model"] == "gpt-test"
    assert "stream" not in upstream.requests[-1].json


async def test_it_sends_no_authorization_without_a_key(upstream, make_adapter):
    adapter = make_adapter(upstream.base_url, api_key_ref="")

    await adapter.complete(chat())

    assert "authorization" not in upstream.requests[-1].headers


async def test_it_reports_the_finish_reason(upstream, make_adapter):
    upstream.finish_reason = "length"
    adapter = make_adapter(upstream.base_url)

    assert (await adapter.complete(chat())).finish_reason == "length"


async def test_it_reuses_one_pooled_connection(upstream, make_adapter):
    adapter = make_adapter(upstream.base_url)

    for _ in range(3):
        await adapter.complete(chat())
    await collect(adapter, chat())

    assert len({request.client_port for request in upstream.requests}) == 1


def test_it_survives_a_change_of_event_loop(upstream):
    # Sync callers bridge through fresh event loops; a pooled connection from a finished loop
    # must not be reused in the next one.
    adapter = OpenAICompatibleAdapter(openai_config(upstream.base_url))

    for _ in range(2):
        assert asyncio.run(adapter.complete(chat())).content == "hello upstream"


# --------------------------------------------------------------------------- streaming


async def test_it_streams_the_answer_with_usage(upstream, make_adapter):
    upstream.reply = "the answer comes in several pieces"
    adapter = make_adapter(upstream.base_url)

    deltas = await collect(adapter, chat(ChatMessage("user", "one two three")))

    assert "".join(d.content for d in deltas) == "the answer comes in several pieces"
    assert len([d for d in deltas if d.content]) == 6
    assert all(d.finish_reason is None for d in deltas[:-1])
    last = deltas[-1]
    assert last.finish_reason == "stop"
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (3, 6)


async def test_it_asks_for_usage_in_the_stream(upstream, make_adapter):
    adapter = make_adapter(upstream.base_url)

    await collect(adapter, chat(extra={"stream_options": {"other": 1}}))

    body = upstream.requests[-1].json
    assert body["stream"] is True
    assert body["stream_options"] == {"other": 1, "include_usage": True}
    assert upstream.requests[-1].headers["authorization"] == f"Bearer {SECRET}"


async def test_a_stream_reports_length_as_the_finish_reason(upstream, make_adapter):
    upstream.finish_reason = "length"
    adapter = make_adapter(upstream.base_url)

    assert (await collect(adapter, chat()))[-1].finish_reason == "length"


async def test_a_consumer_can_stop_a_stream_early(upstream, make_adapter):
    upstream.reply = "many words in this reply"
    adapter = make_adapter(upstream.base_url)

    stream = adapter.stream(chat())
    first = await anext(stream)
    await stream.aclose()

    assert first.content == "many "
    # The connection is not left half-read: the adapter keeps working.
    assert (await adapter.complete(chat())).content == "many words in this reply"


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
@pytest.mark.parametrize("piece", [None, 1, 7])
async def test_a_stream_is_read_whatever_its_line_endings_and_read_sizes(
    upstream, make_adapter, newline, piece
):
    # The SSE spec allows LF, CRLF and CR; a server may flush mid-line or between CR and LF.
    upstream.reply = "line endings do not matter"
    upstream.sse_newline, upstream.sse_piece = newline, piece
    adapter = make_adapter(upstream.base_url)

    deltas = await collect(adapter, chat())

    assert "".join(d.content for d in deltas) == "line endings do not matter"
    assert deltas[-1].finish_reason == "stop"
    assert deltas[-1].usage is not None


async def test_a_stream_event_may_be_larger_than_any_read_buffer(upstream, make_adapter):
    # One event carrying a whole answer of several hundred kilobytes (some servers send the
    # answer in one chunk) is read whole.
    upstream.reply = "x" * 600_000
    upstream.sse_newline = "\r\n"
    adapter = make_adapter(upstream.base_url)

    deltas = await collect(adapter, chat())

    assert "".join(d.content for d in deltas) == "x" * 600_000


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("behaviour", "error", "status"),
    [
        ("error500", UpstreamServerError, 500),
        ("bad_request", UpstreamBadResponse, 400),
        ("rate_limited", UpstreamUnavailable, 429),
        ("malformed_json", UpstreamBadResponse, 200),
        ("wrong_content_type", UpstreamBadResponse, 200),
        ("missing_choices", UpstreamBadResponse, 200),
        ("stream_break", UpstreamBadResponse, 200),
        ("reset", UpstreamUnavailable, None),
        ("hang", UpstreamTimeout, None),
    ],
)
async def test_it_maps_upstream_failures(upstream, make_adapter, behaviour, error, status):
    upstream.behaviour = behaviour
    adapter = make_adapter(upstream.base_url, read_timeout=0.3)

    with pytest.raises(error) as caught:
        await adapter.complete(chat())

    assert type(caught.value) is error
    assert caught.value.upstream_status == status
    assert "openai-test" in caught.value.message
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(
    ("behaviour", "error"),
    [
        ("error500", UpstreamServerError),
        ("rate_limited", UpstreamUnavailable),
        ("wrong_content_type", UpstreamBadResponse),
        ("reset", UpstreamUnavailable),
        ("hang", UpstreamTimeout),
    ],
)
async def test_it_maps_failures_before_a_stream_starts(upstream, make_adapter, behaviour, error):
    upstream.behaviour = behaviour
    adapter = make_adapter(upstream.base_url, read_timeout=0.3)

    with pytest.raises(error) as caught:
        await collect(adapter, chat())

    assert type(caught.value) is error
    assert SECRET not in str(caught.value)


async def test_a_stream_that_breaks_midway_is_a_bad_response(upstream, make_adapter):
    upstream.behaviour = "stream_break"
    upstream.reply = "first second third"
    adapter = make_adapter(upstream.base_url)
    received = []

    with pytest.raises(UpstreamBadResponse) as caught:
        async for delta in adapter.stream(chat()):
            received.append(delta.content)

    assert type(caught.value) is UpstreamBadResponse
    assert received == ["first "]


async def test_a_stream_that_stalls_midway_times_out(upstream, make_adapter):
    upstream.behaviour = "stream_stall"
    adapter = make_adapter(upstream.base_url, read_timeout=0.3)
    received = []
    started = time.monotonic()

    with pytest.raises(UpstreamTimeout):
        async for delta in adapter.stream(chat()):
            received.append(delta.content)

    assert received == ["hello "]
    assert time.monotonic() - started < 1.5


async def test_a_rate_limit_carries_retry_after_in_seconds(upstream, make_adapter):
    upstream.behaviour = "rate_limited"
    upstream.retry_after = "7"
    adapter = make_adapter(upstream.base_url)

    with pytest.raises(UpstreamUnavailable) as caught:
        await adapter.complete(chat())

    assert caught.value.retry_after == 7.0


async def test_a_rate_limit_carries_retry_after_as_an_http_date(upstream, make_adapter):
    upstream.behaviour = "rate_limited"
    upstream.retry_after = http_date(30)
    adapter = make_adapter(upstream.base_url)

    with pytest.raises(UpstreamUnavailable) as caught:
        await adapter.complete(chat())

    assert 27 <= caught.value.retry_after <= 30


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("3", 3.0),
        ("0.5", 0.5),
        ("-4", 0.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
        ("", None),
        ("soon", None),
        ("nan", None),
    ],
)
def test_retry_after_values_are_parsed(value, seconds):
    assert parse_retry_after(value) == seconds


async def test_a_client_error_names_the_upstream_code_but_not_its_message(upstream, make_adapter):
    upstream.behaviour = "bad_request"
    adapter = make_adapter(upstream.base_url)

    with pytest.raises(UpstreamBadResponse) as caught:
        await adapter.complete(chat())

    assert "HTTP 400" in caught.value.message
    assert "context_length_exceeded" in caught.value.message
    # Upstream free text may quote the conversation back.
    assert "maximum context length" not in caught.value.message


async def test_an_unreachable_upstream_is_unavailable(make_adapter):
    adapter = make_adapter(f"http://127.0.0.1:{closed_port()}/v1")

    with pytest.raises(UpstreamUnavailable) as caught:
        await adapter.complete(chat())
    assert type(caught.value) is UpstreamUnavailable
    with pytest.raises(UpstreamUnavailable):
        await collect(adapter, chat())


async def test_an_unresolvable_key_reference_is_an_auth_error(upstream, make_adapter, monkeypatch):
    monkeypatch.delenv(KEY_ENV)
    adapter = make_adapter(upstream.base_url)

    with pytest.raises(UpstreamAuthError) as caught:
        await adapter.complete(chat())

    assert KEY_ENV in caught.value.message
    assert upstream.requests == []


# --------------------------------------------------------------------------- credentials


async def test_a_rejected_key_is_refetched_and_retried_once(upstream, make_adapter, monkeypatch):
    invalidated = []
    real_invalidate = openai_compatible.invalidate_secret
    monkeypatch.setattr(
        openai_compatible,
        "invalidate_secret",
        lambda ref: (invalidated.append(ref), real_invalidate(ref)),
    )
    upstream.behaviour = "unauthorized"
    adapter = make_adapter(upstream.base_url)

    with pytest.raises(UpstreamAuthError) as caught:
        await adapter.complete(chat())

    assert len(upstream.requests) == 2
    assert invalidated == [f"env:{KEY_ENV}"]
    assert caught.value.upstream_status == 401
    assert SECRET not in str(caught.value)


async def test_the_retry_uses_the_rotated_key(upstream, make_adapter, monkeypatch):
    # The key is rotated while the first attempt is under way; the retry picks up the new one.
    upstream.required_key = "sk-rotated"
    upstream.on_request = lambda request: monkeypatch.setenv(KEY_ENV, "sk-rotated")
    adapter = make_adapter(upstream.base_url)

    result = await adapter.complete(chat())

    assert result.content == "hello upstream"
    assert [r.headers["authorization"] for r in upstream.requests] == [
        f"Bearer {SECRET}",
        "Bearer sk-rotated",
    ]


async def test_a_stream_also_retries_with_the_rotated_key(upstream, make_adapter, monkeypatch):
    upstream.required_key = "sk-rotated"
    upstream.on_request = lambda request: monkeypatch.setenv(KEY_ENV, "sk-rotated")
    adapter = make_adapter(upstream.base_url)

    deltas = await collect(adapter, chat())

    assert "".join(d.content for d in deltas) == "hello upstream"
    assert len(upstream.requests) == 2


# --------------------------------------------------------------------------- readiness


async def test_check_lists_the_models(upstream, make_adapter):
    adapter = make_adapter(upstream.base_url)

    assert await adapter.check() is True
    assert (upstream.requests[-1].method, upstream.requests[-1].path) == ("GET", "/v1/models")
    assert upstream.requests[-1].headers["authorization"] == f"Bearer {SECRET}"


@pytest.mark.parametrize("behaviour", ["error500", "unauthorized", "hang", "reset"])
async def test_check_fails_when_the_upstream_misbehaves(upstream, make_adapter, behaviour):
    upstream.behaviour = behaviour
    adapter = make_adapter(upstream.base_url, read_timeout=0.3)
    started = time.monotonic()

    assert await adapter.check() is False
    assert time.monotonic() - started < 1.5


async def test_check_fails_when_the_upstream_is_down(make_adapter):
    assert await make_adapter(f"http://127.0.0.1:{closed_port()}/v1").check() is False


# --------------------------------------------------------------------------- Azure


def azure_fields(**fields) -> dict:
    return {"name": "azure-test", "kind": "azure", "api_version": "2024-10-21", **fields}


async def test_azure_addresses_the_deployment_with_an_api_key(azure_upstream, make_adapter):
    adapter = make_adapter(azure_upstream.base_url, AzureOpenAIAdapter, **azure_fields())

    result = await adapter.complete(chat(model="my-gpt4o"))

    received = azure_upstream.requests[-1]
    assert received.path == "/openai/deployments/my-gpt4o/chat/completions"
    assert received.query == {"api-version": "2024-10-21"}
    assert received.headers["api-key"] == SECRET
    assert "authorization" not in received.headers
    assert received.json["messages"] == [{"role": "user", "content": "hello upstream"}]
    assert (result.content, result.upstream_model) == ("hello upstream", "my-gpt4o")


async def test_azure_streams(azure_upstream, make_adapter):
    azure_upstream.reply = "streamed from azure"
    adapter = make_adapter(azure_upstream.base_url, AzureOpenAIAdapter, **azure_fields())

    deltas = await collect(adapter, chat(model="my-gpt4o"))

    assert "".join(d.content for d in deltas) == "streamed from azure"
    assert deltas[-1].finish_reason == "stop"
    assert deltas[-1].usage.completion_tokens == 3
    received = azure_upstream.requests[-1]
    assert received.path == "/openai/deployments/my-gpt4o/chat/completions"
    assert received.json["stream_options"] == {"include_usage": True}


async def test_azure_refuses_an_unknown_api_version(azure_upstream, make_adapter):
    adapter = make_adapter(
        azure_upstream.base_url, AzureOpenAIAdapter, **azure_fields(api_version="1999-01-01")
    )

    with pytest.raises(UpstreamBadResponse) as caught:
        await adapter.complete(chat(model="my-gpt4o"))

    assert caught.value.upstream_status == 404
    assert azure_upstream.requests[-1].query == {"api-version": "1999-01-01"}


async def test_azure_without_an_api_version_sends_nothing(azure_upstream, make_adapter):
    adapter = make_adapter(
        azure_upstream.base_url, AzureOpenAIAdapter, **azure_fields(api_version="")
    )

    with pytest.raises(UpstreamBadResponse, match="api_version"):
        await adapter.complete(chat(model="my-gpt4o"))
    assert azure_upstream.requests == []
    assert await adapter.check() is False


async def test_azure_retries_with_the_rotated_key(azure_upstream, make_adapter, monkeypatch):
    azure_upstream.required_key = "azure-rotated"
    azure_upstream.on_request = lambda request: monkeypatch.setenv(KEY_ENV, "azure-rotated")
    adapter = make_adapter(azure_upstream.base_url, AzureOpenAIAdapter, **azure_fields())

    await adapter.complete(chat(model="my-gpt4o"))

    assert [r.headers["api-key"] for r in azure_upstream.requests] == [SECRET, "azure-rotated"]


async def test_azure_rejects_a_wrong_key_after_one_retry(azure_upstream, make_adapter):
    azure_upstream.required_key = "something-else"
    adapter = make_adapter(azure_upstream.base_url, AzureOpenAIAdapter, **azure_fields())

    with pytest.raises(UpstreamAuthError):
        await adapter.complete(chat(model="my-gpt4o"))
    assert len(azure_upstream.requests) == 2


@pytest.mark.parametrize(
    ("behaviour", "error"),
    [
        ("error500", UpstreamServerError),
        ("rate_limited", UpstreamUnavailable),
        ("hang", UpstreamTimeout),
        ("malformed_json", UpstreamBadResponse),
    ],
)
async def test_azure_maps_errors_like_openai(azure_upstream, make_adapter, behaviour, error):
    azure_upstream.behaviour = behaviour
    azure_upstream.hang_seconds = 2.0
    adapter = make_adapter(
        azure_upstream.base_url, AzureOpenAIAdapter, **azure_fields(read_timeout=0.3)
    )

    with pytest.raises(UpstreamError) as caught:
        await adapter.complete(chat(model="my-gpt4o"))
    assert type(caught.value) is error


async def test_azure_check_lists_models_for_the_api_version(azure_upstream, make_adapter):
    adapter = make_adapter(azure_upstream.base_url, AzureOpenAIAdapter, **azure_fields())

    assert await adapter.check() is True
    received = azure_upstream.requests[-1]
    assert (received.method, received.path, received.query) == (
        "GET",
        "/openai/models",
        {"api-version": "2024-10-21"},
    )
    assert received.headers["api-key"] == SECRET
