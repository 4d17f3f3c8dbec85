"""The Gemini and Vertex AI adapters against real local servers speaking Google's wire
(``tests/upstreams_google.py``), Vertex's OAuth token fetched from a real local token endpoint
that checks the service account's signed JWT grant."""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from collections.abc import Iterator
from decimal import Decimal

import pytest
import time_machine
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.pipeline import dispatch
from gateway.pipeline.dispatch import DispatchPlan
from gateway.pipeline.route import Target
from gateway.providers import registry
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
    UpstreamUnavailable,
)
from gateway.providers.google import GeminiAdapter, VertexAdapter, token_uri_allowed
from gateway.resilience.breaker import InProcessBreaker
from gateway.resilience.policy import ResiliencePolicy
from tests.upstreams_google import GeminiUpstream, GoogleTokenServer, VertexUpstream

KEY_ENV = "GEMINI_TEST_KEY"
SA_ENV = "PROVIDER_VERTEX_SA"
SECRET = "AIza-NEVER-SHOW-THIS-0123456789"
MODEL = "gemini-test"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="


def chat(*messages: ChatMessage, **fields) -> ChatRequest:
    return ChatRequest(
        model=MODEL, messages=list(messages) or [ChatMessage("user", "hello gemini")], **fields
    )


async def collect(adapter, request: ChatRequest) -> list[ChatDelta]:
    return [delta async for delta in adapter.stream(request)]


@pytest.fixture(autouse=True)
def _api_key(monkeypatch) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET)


@pytest.fixture
def gemini() -> Iterator[GeminiUpstream]:
    with GeminiUpstream() as server:
        server.required_key = SECRET
        yield server


@pytest.fixture
async def make_adapter():
    adapters = []

    def make(base_url: str, cls=GeminiAdapter, **fields):
        defaults = {
            "name": f"google-{uuid.uuid4().hex[:6]}",
            "kind": "gemini",
            "api_key_ref": f"env:{KEY_ENV}",
            "connect_timeout": 1.0,
            "read_timeout": 2.0,
        }
        adapter = cls(ProviderConfig(base_url=base_url, **{**defaults, **fields}))
        adapters.append(adapter)
        return adapter

    yield make
    for adapter in adapters:
        await adapter.aclose()
    await registry.close_all()


# --------------------------------------------------------------------------- Gemini


async def test_gemini_answers_with_the_key_in_a_header_not_the_url(gemini, make_adapter):
    result = await make_adapter(gemini.base_url).complete(
        chat(ChatMessage("system", "Be brief."), ChatMessage("user", "what is the time"))
    )
    assert result.content == "what is the time"
    assert result.finish_reason == "stop"
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (4, 4)
    sent = gemini.requests[-1]
    assert sent.path == f"/v1beta/models/{MODEL}:generateContent"
    assert sent.headers["x-goog-api-key"] == SECRET
    assert SECRET not in json.dumps(sent.query)
    assert sent.json["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert sent.json["contents"] == [{"role": "user", "parts": [{"text": "what is the time"}]}]


async def test_generation_config_carries_the_sampling_and_json_output(gemini, make_adapter):
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    await make_adapter(gemini.base_url).complete(
        chat(
            temperature=0.3,
            top_p=0.8,
            max_tokens=50,
            stop=["END"],
            extra={
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": schema},
                }
            },
        )
    )
    assert gemini.requests[-1].json["generationConfig"] == {
        "temperature": 0.3,
        "topP": 0.8,
        "maxOutputTokens": 50,
        "stopSequences": ["END"],
        "responseMimeType": "application/json",
        "responseJsonSchema": schema,
    }


async def test_gemini_streams_text_and_usage(gemini, make_adapter):
    gemini.reply = "one two three"
    deltas = await collect(make_adapter(gemini.base_url), chat())
    assert [d.content for d in deltas[:-1]] == ["one ", "two ", "three"]  # no empty deltas
    assert deltas[-1].finish_reason == "stop"
    assert deltas[-1].usage.completion_tokens == 3
    assert gemini.requests[-1].path.endswith(":streamGenerateContent")
    assert gemini.requests[-1].query == {"alt": "sse"}


async def test_an_image_data_url_becomes_inline_data(gemini, make_adapter):
    parts = (
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
    )
    result = await make_adapter(gemini.base_url).complete(
        chat(ChatMessage("user", "what is this", parts=parts))
    )
    assert result.content == "what is this [saw 1 images]"
    assert gemini.requests[-1].json["contents"][0]["parts"][1] == {
        "inlineData": {"mimeType": "image/png", "data": PNG}
    }


async def test_an_image_url_is_refused_without_fetching_it(gemini, make_adapter):
    url = "https://example.com/cat.png?token=personal"
    parts = ({"type": "image_url", "image_url": {"url": url}},)
    with pytest.raises(UnsupportedByProvider) as caught:
        await make_adapter(gemini.base_url).complete(chat(ChatMessage("user", "", parts=parts)))
    assert caught.value.param == "messages[0].content[0]"
    assert "data URL" in caught.value.message and url not in caught.value.message
    assert gemini.requests == []


@pytest.mark.parametrize("behaviour", ["safety", "prompt_blocked"])
async def test_a_safety_block_is_a_content_filter_finish(gemini, make_adapter, behaviour):
    gemini.behaviour = behaviour
    adapter = make_adapter(gemini.base_url)
    result = await adapter.complete(chat())
    assert (result.content, result.finish_reason) == ("", "content_filter")
    deltas = await collect(adapter, chat())
    assert "".join(d.content for d in deltas) == ""
    assert deltas[-1].finish_reason == "content_filter"


async def test_an_agent_loop_runs_on_gemini(gemini, make_adapter):
    """Gemini's calls carry no id: the adapter makes stable ones and maps the result back to
    the function's name."""
    adapter = make_adapter(gemini.base_url)
    question = ChatMessage("user", "Weather in Paris?")
    gemini.function_call = {"name": "get_weather", "args": {"city": "Paris"}}

    first = await adapter.complete(chat(question, extra={"tools": [WEATHER]}))
    assert first.finish_reason == "tool_calls"
    [call] = first.choices[0].tool_calls
    assert call["function"] == {"name": "get_weather", "arguments": '{"city":"Paris"}'}
    assert call["id"].startswith("call_")
    streamed = await collect(adapter, chat(question, extra={"tools": [WEATHER]}))
    fragments = [f for d in streamed for f in d.tool_calls or ()]
    assert fragments == [{"index": 0, **call}]  # the same id, plain or streamed
    assert streamed[-1].finish_reason == "tool_calls"
    declared = gemini.requests[-1].json["tools"]
    assert declared == [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "parametersJsonSchema": WEATHER["function"]["parameters"],
                    "description": "The weather in a city.",
                }
            ]
        }
    ]

    gemini.function_call = None
    final = await adapter.complete(
        chat(
            question,
            ChatMessage("assistant", "", tool_calls=[call]),
            ChatMessage("tool", "sunny, 24 C", tool_call_id=call["id"]),
            extra={"tools": [WEATHER]},
        )
    )
    assert final.content == '{"result": "sunny, 24 C"}'
    assert final.finish_reason == "stop"
    assert gemini.requests[-1].json["contents"][1:] == [
        {
            "role": "model",
            "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"result": "sunny, 24 C"}}}
            ],
        },
    ]


async def test_tool_choice_becomes_the_function_calling_mode(gemini, make_adapter):
    adapter = make_adapter(gemini.base_url)
    named = {"type": "function", "function": {"name": "get_weather"}}
    for choice, expected in [
        ("required", {"mode": "ANY"}),
        ("none", {"mode": "NONE"}),
        (named, {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}),
    ]:
        await adapter.complete(chat(extra={"tools": [WEATHER], "tool_choice": choice}))
        assert gemini.requests[-1].json["toolConfig"] == {"functionCallingConfig": expected}


async def test_a_429_carries_gemini_s_retry_delay(gemini, make_adapter):
    gemini.behaviour, gemini.retry_delay = "rate_limited", "3s"
    with pytest.raises(UpstreamUnavailable) as caught:
        await make_adapter(gemini.base_url).complete(chat())
    assert caught.value.retry_after == 3.0
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(
    ("behaviour", "error"),
    [
        ("error500", UpstreamServerError),
        ("unauthorized", UpstreamAuthError),
        ("malformed_json", UpstreamBadResponse),
        ("reset", UpstreamUnavailable),
    ],
)
async def test_gemini_failures_are_mapped(gemini, make_adapter, behaviour, error):
    gemini.behaviour = behaviour
    with pytest.raises(error) as caught:
        await make_adapter(gemini.base_url).complete(chat())
    assert type(caught.value) is error


async def test_a_broken_gemini_stream_is_an_error(gemini, make_adapter):
    gemini.behaviour, gemini.reply = "stream_break", "one two three four"
    with pytest.raises(UpstreamBadResponse):
        await collect(make_adapter(gemini.base_url), chat())


async def test_gemini_embeds_a_batch(gemini, make_adapter):
    result = await make_adapter(gemini.base_url).embed(
        EmbeddingRequest(model="text-embedding-004", inputs=["a", "bb"], dimensions=4)
    )
    assert [len(v) for v in result.vectors] == [4, 4]
    sent = gemini.requests[-1].json
    assert sent["requests"][0] == {
        "model": "models/text-embedding-004",
        "content": {"parts": [{"text": "a"}]},
        "outputDimensionality": 4,
    }


# --------------------------------------------------------------------------- through dispatch


def gemini_target(server: GeminiUpstream) -> Target:
    provider = ProviderConfig(
        name=f"gemini-{uuid.uuid4().hex[:6]}",
        kind="gemini",
        base_url=server.base_url,
        api_key_ref=f"env:{KEY_ENV}",
        connect_timeout=1.0,
        read_timeout=2.0,
    )
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
        policy=ResiliencePolicy(backoff_base=0.05, backoff_max=0.2, total_timeout=5.0),
    )


async def test_a_gemini_429_is_retried_after_its_retry_delay(gemini, monkeypatch, make_adapter):
    waits: list[float] = []
    original = dispatch._before_retry

    def record(state, deployment):
        waits.append(state.upcoming_sleep)
        original(state, deployment)

    monkeypatch.setattr(dispatch, "_before_retry", record)
    gemini.behaviour = "rate_limited"

    def recover(_request) -> None:
        if len(gemini.requests) > 1:
            gemini.behaviour = "ok"

    gemini.on_request = recover
    target = gemini_target(gemini)
    served = await dispatch.complete(
        DispatchPlan(
            "default",
            (target,),
            lambda t: chat(ChatMessage("user", "hello there")),
            breaker=InProcessBreaker(on_transition=None),
        )
    )
    assert served.result.content == "hello there"
    assert waits == [1.0]


async def test_a_broken_gemini_stream_counts_for_the_breaker(gemini, make_adapter):
    gemini.behaviour, gemini.reply = "stream_break", "one two three four"
    breaker = InProcessBreaker(on_transition=None)
    target = gemini_target(gemini)
    served = await dispatch.open_stream(
        DispatchPlan("default", (target,), lambda t: chat(), breaker=breaker)
    )
    with pytest.raises(UpstreamBadResponse):
        async for _delta in served.deltas:
            pass
    state = breaker.snapshot({target.deployment: target.policy})[target.deployment]
    assert state.consecutive_failures == 1


# --------------------------------------------------------------------------- Vertex AI


@pytest.fixture(scope="module")
def service_account_key() -> tuple[str, str]:
    """A fresh RSA key: (private PEM, public PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


@pytest.fixture
def token_server(service_account_key) -> Iterator[GoogleTokenServer]:
    with GoogleTokenServer(service_account_key[1]) as server:
        yield server


@pytest.fixture
def vertex(token_server) -> Iterator[VertexUpstream]:
    with VertexUpstream(token_server) as server:
        yield server


def service_account_json(private_pem: str, token_uri: str) -> str:
    return json.dumps(
        {
            "type": "service_account",
            "project_id": "llmp-test-project",
            "private_key_id": "kid-1",
            "private_key": private_pem,
            "client_email": "gateway@llmp-test-project.iam.gserviceaccount.com",
            "client_id": "1",
            "token_uri": token_uri,
        }
    )


@pytest.fixture
def make_vertex(make_adapter, monkeypatch, settings, service_account_key, token_server, vertex):
    # The test token endpoint is on loopback: the operator's allow-list must name it.
    settings.LLMP_UPSTREAM_HOSTS = ["127.0.0.1"]
    monkeypatch.setenv(SA_ENV, service_account_json(service_account_key[0], token_server.token_uri))

    def make(**fields) -> VertexAdapter:
        defaults = {
            "kind": "vertex",
            "api_key_ref": f"env:{SA_ENV}",
            "region": "europe-west4",
            "extra": {"project": "llmp-test-project"},
        }
        return make_adapter(vertex.base_url, cls=VertexAdapter, **{**defaults, **fields})

    return make


async def test_vertex_fetches_a_token_and_calls_the_regional_path(
    make_vertex, vertex, token_server
):
    adapter = make_vertex()
    result = await adapter.complete(chat())
    assert result.content == "hello gemini"
    sent = vertex.requests[-1]
    assert sent.path == (
        "/v1/projects/llmp-test-project/locations/europe-west4/publishers/google/models/"
        f"{MODEL}:generateContent"
    )
    assert sent.headers["authorization"] == "Bearer token-1"
    # The grant was a JWT signed with the service account's key (the server checked it).
    assert token_server.grants == 1
    await adapter.complete(chat())
    assert token_server.grants == 1  # the token is reused while fresh


async def test_vertex_streams_and_calls_tools(make_vertex, vertex):
    adapter = make_vertex()
    vertex.function_call = {"name": "get_weather", "args": {"city": "Oslo"}}
    deltas = await collect(adapter, chat(extra={"tools": [WEATHER]}))
    [fragment] = [f for d in deltas for f in d.tool_calls or ()]
    assert fragment["function"] == {"name": "get_weather", "arguments": '{"city":"Oslo"}'}
    assert deltas[-1].finish_reason == "tool_calls"
    assert vertex.requests[-1].path.endswith(":streamGenerateContent")


async def test_an_expired_token_is_fetched_again_before_the_call(make_vertex, vertex, token_server):
    adapter = make_vertex()
    token_server.expires_in = 3600
    with time_machine.travel(dt.datetime.now(dt.UTC), tick=True) as clock:
        await adapter.complete(chat())
        clock.shift(dt.timedelta(seconds=3600 - 60))  # within the refresh margin
        await adapter.complete(chat())
        clock.shift(dt.timedelta(hours=2))  # long expired (the server would refuse it too)
        await adapter.complete(chat())
    assert token_server.grants == 3
    assert [r.headers["authorization"] for r in vertex.requests] == [
        "Bearer token-1",
        "Bearer token-2",
        "Bearer token-3",
    ]


async def test_a_token_the_upstream_no_longer_takes_is_replaced_once(
    make_vertex, vertex, token_server
):
    adapter = make_vertex()
    await adapter.complete(chat())
    token_server.issued.clear()  # revoked upstream: the next call gets a 401
    assert (await adapter.complete(chat())).content == "hello gemini"
    assert token_server.grants == 2


async def test_a_token_endpoint_that_is_down_is_a_clear_error(make_vertex, vertex, token_server):
    adapter = make_vertex()
    token_server.stop()
    with pytest.raises(UpstreamUnavailable) as caught:
        await adapter.complete(chat())
    assert "token endpoint cannot be reached" in caught.value.message
    assert vertex.requests == []


async def test_a_refused_grant_is_an_auth_error(make_vertex, vertex, token_server):
    token_server.behaviour = "refuse"
    with pytest.raises(UpstreamAuthError) as caught:
        await make_vertex().complete(chat())
    assert "refused" in caught.value.message
    assert "PRIVATE KEY" not in caught.value.message


async def test_a_token_uri_not_allowed_gets_no_grant(
    make_vertex, monkeypatch, settings, service_account_key, token_server
):
    settings.LLMP_UPSTREAM_HOSTS = []  # an empty list allows any provider, but no token_uri
    with pytest.raises(UpstreamAuthError) as caught:
        await make_vertex().complete(chat())
    assert "token_uri" in caught.value.message
    assert token_server.requests == []


def test_only_google_s_token_uri_is_trusted_by_default(settings):
    settings.LLMP_UPSTREAM_HOSTS = []
    assert token_uri_allowed("https://oauth2.googleapis.com/token")
    assert not token_uri_allowed("https://evil.example/token")
    settings.LLMP_UPSTREAM_HOSTS = ["tokens.internal"]
    assert token_uri_allowed("https://tokens.internal/token")
    assert not token_uri_allowed("https://user:pw@tokens.internal/token")
    assert not token_uri_allowed("https://evil.example/token")


async def test_a_secret_that_is_not_a_service_account_is_refused(make_vertex, monkeypatch):
    monkeypatch.setenv(SA_ENV, json.dumps({"type": "authorized_user", "refresh_token": "x"}))
    with pytest.raises(UpstreamAuthError) as caught:
        await make_vertex().complete(chat())
    assert "service account" in caught.value.message


async def test_vertex_embeds_through_predict(make_vertex, vertex):
    result = await make_vertex().embed(
        EmbeddingRequest(model="text-embedding-005", inputs=["one two", "three"])
    )
    assert len(result.vectors) == 2
    assert result.usage.prompt_tokens == 3
    assert vertex.requests[-1].path.endswith("/models/text-embedding-005:predict")


def test_the_default_vertex_host_is_built_from_a_checked_location():
    adapter = VertexAdapter(
        ProviderConfig(
            name="v", kind="vertex", region="europe-west4", extra={"project": "abc-123456"}
        )
    )
    assert adapter.base_url == "https://europe-west4-aiplatform.googleapis.com"
    hostile = VertexAdapter(
        ProviderConfig(
            name="v", kind="vertex", region="evil.com/x#", extra={"project": "abc-123456"}
        )
    )
    with pytest.raises(UpstreamBadResponse):
        hostile.chat_url(chat())


def test_inline_data_is_base64_checked():
    bad = ChatMessage(
        "user", "", parts=({"type": "image_url", "image_url": {"url": "data:image/png;base64,@@"}},)
    )
    with pytest.raises(UnsupportedByProvider):
        GeminiAdapter(ProviderConfig(name="g", kind="gemini")).build_body(chat(bad), stream=False)
    assert base64.b64decode(PNG)


@pytest.mark.parametrize(
    ("model", "signed"), [("gemini-3-pro-preview", True), ("gemini-2.5-flash", False)]
)
async def test_earlier_calls_carry_a_thought_signature_where_the_model_requires_one(
    gemini, make_adapter, model, signed
):
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": "{}"},
    }
    request = ChatRequest(
        model=model,
        messages=[
            ChatMessage("user", "weather?"),
            ChatMessage("assistant", "", tool_calls=[call]),
            ChatMessage("tool", "rain", tool_call_id="call_1"),
        ],
        extra={"tools": [WEATHER]},
    )
    await make_adapter(gemini.base_url).complete(request)
    [part] = gemini.requests[-1].json["contents"][1]["parts"]
    assert ("thoughtSignature" in part) is signed


async def test_readiness_probes_answer_without_spending_tokens(gemini, make_adapter, make_vertex):
    assert await make_adapter(gemini.base_url).check()
    assert gemini.requests[-1].method == "GET"
    assert await make_adapter(gemini.base_url, api_key_ref="env:GEMINI_UNSET_KEY").check() is False
    assert await make_vertex().check()


async def test_concurrent_calls_share_one_token_fetch(make_vertex, vertex, token_server):
    import asyncio

    adapter = make_vertex()
    answers = await asyncio.gather(*(adapter.complete(chat()) for _ in range(5)))
    assert [a.content for a in answers] == ["hello gemini"] * 5
    assert token_server.grants == 1


async def test_n_choices_are_gemini_candidates_plain_and_streamed(gemini, make_adapter):
    gemini.reply = "hi there"
    adapter = make_adapter(gemini.base_url)
    result = await adapter.complete(chat(extra={"n": 2}))
    assert gemini.requests[-1].json["generationConfig"]["candidateCount"] == 2
    assert [(c.index, c.content) for c in result.choices] == [
        (0, "hi there"),
        (1, "hi there (choice 1)"),
    ]
    deltas = await collect(adapter, chat(extra={"n": 2}))
    texts = {i: "".join(d.content for d in deltas if d.index == i) for i in (0, 1)}
    assert texts == {0: "hi there", 1: "hi there (choice 1)"}
    assert sorted((d.index, d.finish_reason) for d in deltas if d.finish_reason) == [
        (0, "stop"),
        (1, "stop"),
    ]


async def test_a_key_gemini_refuses_is_an_auth_error(gemini, make_adapter, monkeypatch):
    adapter = make_adapter(gemini.base_url)
    gemini.required_key = "AIza-rotated"
    with pytest.raises(UpstreamAuthError) as caught:  # Gemini's 400 API_KEY_INVALID
        await adapter.complete(chat())
    assert caught.value.upstream_status == 400
    monkeypatch.setenv(KEY_ENV, "AIza-rotated")
    assert (await adapter.complete(chat())).content == "hello gemini"
    assert gemini.requests[-1].headers["x-goog-api-key"] == "AIza-rotated"


async def test_a_token_endpoint_redirect_is_not_followed(make_vertex, vertex, token_server):
    token_server.behaviour = "redirect"
    with pytest.raises(UpstreamUnavailable):
        await make_vertex().complete(chat())
    assert [r.path for r in token_server.requests] == ["/token"]  # the grant went nowhere else
    assert vertex.requests == []
