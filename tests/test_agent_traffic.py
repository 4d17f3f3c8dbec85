"""Agent traffic through the governed path: tool calls, choices, logprobs, content parts and
embeddings, with every stage on (limits, PII, leak guard, cache, metering). The real clients'
view of the same is in test_real_clients.py; these tests look at what the gateway does to it."""

from __future__ import annotations

import base64
import json
import re
import struct

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway import services as gateway_services
from gateway.models import ModelVersion, Provider, SecurityEvent, UsageRecord
from gateway.pipeline import guard, output, pii
from gateway.providers.base import ChatDelta, ChatResult, Choice, Usage
from llmplatform.actors import Actor
from privacy.models import PrivacyPolicy
from privacy.pii import Pseudonymizer

from .conftest import route_alias, set_tier
from .upstreams import OpenAIUpstream

pytestmark = pytest.mark.django_db

EMAIL = "jane.doe@example.com"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
SEND = {
    "type": "function",
    "function": {
        "name": "send_mail",
        "description": "Send an email.",
        "parameters": {"type": "object", "properties": {"to": {"type": "string"}}},
    },
}
PIXEL = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
    "+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


@pytest.fixture
def upstream():
    with OpenAIUpstream() as server:
        yield server


def post(client, key, body, path="/v1/chat/completions", **headers):
    return client.post(
        path,
        data=json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
        **headers,
    )


def stream(base_url, key, body) -> tuple[httpx.Response, list[dict]]:
    response = httpx.post(
        f"{base_url}/v1/chat/completions",
        json={**body, "stream": True},
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )
    blocks = [b.removeprefix("data: ") for b in response.text.strip().split("\n\n")]
    assert blocks[-1] == "[DONE]", response.text
    return response, [json.loads(b) for b in blocks[:-1]]


def assembled_calls(chunks: list[dict], index: int = 0) -> list[dict]:
    """Tool calls put together from stream fragments, the way an agent loop does."""
    calls: dict[int, dict] = {}
    for chunk in chunks:
        for choice in chunk["choices"]:
            if choice["index"] != index:
                continue
            for fragment in choice["delta"].get("tool_calls") or []:
                call = calls.setdefault(
                    fragment["index"], {"id": None, "name": "", "arguments": ""}
                )
                call["id"] = fragment.get("id") or call["id"]
                function = fragment.get("function") or {}
                call["name"] += function.get("name") or ""
                call["arguments"] += function.get("arguments") or ""
    return [calls[k] for k in sorted(calls)]


def finishes(chunks: list[dict]) -> dict[int, str]:
    return {
        c["index"]: c["finish_reason"]
        for chunk in chunks
        for c in chunk["choices"]
        if c["finish_reason"]
    }


def policy(principals, **fields) -> None:
    PrivacyPolicy.objects.update_or_create(tenant=principals.tenant_a, defaults=fields)


# --------------------------------------------------------------------------- tool calls


def test_a_tool_call_reaches_the_client_whole_and_is_metered(client, principals, key_a, upstream):
    route_alias("default", upstream.base_url)
    upstream.tool_call = {"name": "get_weather", "arguments": {"city": "Paris"}}
    response = post(
        client,
        key_a,
        {
            "model": "default",
            "tools": [WEATHER],
            "messages": [{"role": "user", "content": "Weather?"}],
        },
    )
    assert response.status_code == 200, response.content
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    [call] = choice["message"]["tool_calls"]
    assert call["id"].startswith("call_") and call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}
    record = UsageRecord.objects.get()
    assert record.tool_calls == 1
    assert record.content_kinds == "text"
    # The tools reached the upstream as sent.
    assert upstream.requests[-1].json["tools"] == [WEATHER]


def test_a_streamed_tool_call_arrives_as_openai_fragments(
    gateway_server, principals, key_a, upstream
):
    route_alias("default", upstream.base_url)
    upstream.tool_call = {"name": "get_weather", "arguments": {"city": "Buenos Aires"}}
    response, chunks = stream(
        gateway_server,
        key_a,
        {
            "model": "default",
            "tools": [WEATHER],
            "messages": [{"role": "user", "content": "Weather?"}],
        },
    )
    assert response.status_code == 200
    fragments = [
        f for c in chunks for ch in c["choices"] for f in ch["delta"].get("tool_calls") or []
    ]
    assert len(fragments) > 2  # the arguments come in pieces, as OpenAI sends them
    assert fragments[0]["id"].startswith("call_")
    assert fragments[0]["function"]["name"] == "get_weather"
    [call] = assembled_calls(chunks)
    assert json.loads(call["arguments"]) == {"city": "Buenos Aires"}
    assert finishes(chunks) == {0: "tool_calls"}


def test_tool_results_and_assistant_tool_calls_go_upstream_unchanged(
    client, principals, key_a, upstream
):
    route_alias("default", upstream.base_url)
    messages = [
        {"role": "developer", "content": "Use the tools."},
        {"role": "user", "content": "Weather in Paris?", "name": "alice"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18 C and sunny"},
    ]
    response = post(client, key_a, {"model": "default", "tools": [WEATHER], "messages": messages})
    assert response.status_code == 200, response.content
    assert "18 C and sunny" in response.json()["choices"][0]["message"]["content"]
    sent = upstream.requests[-1].json["messages"]
    assert sent[1:] == messages[1:]
    # The developer message keeps its role; the leak guard's canary is added to it.
    assert sent[0]["role"] == "developer" and sent[0]["content"].startswith("Use the tools.")
    assert set(UsageRecord.objects.get().content_kinds.split(",")) == {
        "text",
        "tool_calls",
        "tool_results",
    }


def test_pseudonymised_values_come_back_in_tool_call_arguments(
    client, gateway_server, principals, key_a, upstream
):
    """The provider only ever sees a placeholder; the agent gets the address it asked about,
    in plain and in streamed tool calls (the placeholder split across fragments)."""
    route_alias("default", upstream.base_url)
    policy(principals, upstream_pii="pseudonymize")

    def call_with_the_placeholder(request):
        text = request.json["messages"][-1]["content"]
        placeholder = re.search(r"<EMAIL_\d+>", text).group()
        upstream.tool_call = {"name": "send_mail", "arguments": {"to": placeholder}}

    upstream.on_request = call_with_the_placeholder
    body = {
        "model": "default",
        "tools": [SEND],
        "messages": [{"role": "user", "content": f"Mail {EMAIL} the report."}],
    }
    plain = post(client, key_a, body).json()["choices"][0]["message"]["tool_calls"][0]
    assert json.loads(plain["function"]["arguments"]) == {"to": EMAIL}
    _, chunks = stream(gateway_server, key_a, body)
    [call] = assembled_calls(chunks)
    assert json.loads(call["arguments"]) == {"to": EMAIL}
    assert all(EMAIL not in json.dumps(r.json) for r in upstream.requests)


def test_the_leak_guard_watches_tool_call_arguments(client, principals, key_a, upstream):
    alias = route_alias("default", upstream.base_url)
    ModelVersion.objects.filter(alias=alias).update(system_prompt="You are Acme's helper.")

    def leak(request):
        upstream.tool_call = {
            "name": "send_mail",
            "arguments": {"to": request.json["messages"][0]["content"]},
        }

    upstream.on_request = leak
    response = post(
        client,
        key_a,
        {"model": "default", "tools": [SEND], "messages": [{"role": "user", "content": "hi"}]},
    )
    assert response.status_code == 200
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "content_filter"
    assert "llmp-canary-" not in response.content.decode()
    event = SecurityEvent.objects.get()
    assert (event.kind, event.action) == ("system_prompt_leak", "blocked")


def test_cached_tool_calls_are_replayed_exactly_plain_and_streamed(
    client, gateway_server, principals, key_a, upstream
):
    route_alias("default", upstream.base_url)
    upstream.tool_call = {"name": "get_weather", "arguments": {"city": "Oslo"}}
    body = {
        "model": "default",
        "tools": [WEATHER],
        "temperature": 0,
        "messages": [{"role": "user", "content": "Weather?"}],
    }
    first = post(client, key_a, body)
    second = post(client, key_a, body)
    assert (first["X-Cache"], second["X-Cache"]) == ("MISS", "HIT")
    assert second.json()["choices"] == first.json()["choices"]
    response, chunks = stream(gateway_server, key_a, body)
    assert response.headers["X-Cache"] == "HIT"
    [call] = assembled_calls(chunks)
    assert call["id"] == first.json()["choices"][0]["message"]["tool_calls"][0]["id"]
    assert json.loads(call["arguments"]) == {"city": "Oslo"}
    assert finishes(chunks) == {0: "tool_calls"}
    assert len(upstream.requests) == 1
    # Other tools are another request: not the cached answer.
    post(client, key_a, {**body, "tools": [WEATHER, SEND]})
    assert len(upstream.requests) == 2


# --------------------------------------------------------------------------- n and logprobs


def test_n_choices_are_answered_reserved_and_capped(
    client, gateway_server, principals, key_a, upstream
):
    route_alias("default", upstream.base_url)
    body = {"model": "default", "n": 2, "messages": [{"role": "user", "content": "Say hi"}]}
    choices = post(client, key_a, body).json()["choices"]
    assert [c["index"] for c in choices] == [0, 1]
    assert choices[0]["message"]["content"] != choices[1]["message"]["content"]
    _, chunks = stream(gateway_server, key_a, body)
    assert finishes(chunks) == {0: "stop", 1: "stop"}
    set_tier(principals, max_choices=1)
    refused = post(client, key_a, body)
    assert refused.status_code == 400
    assert (refused.json()["error"]["code"], refused.json()["error"]["param"]) == (
        "too_many_choices",
        "n",
    )


def test_token_reservations_count_every_choice(principals, key_a, upstream):
    from asgiref.sync import async_to_sync

    from gateway.pipeline import admit
    from gateway.pipeline.authenticate import authenticate
    from gateway.providers.base import ChatMessage, ChatRequest

    principal = async_to_sync(authenticate)(f"Bearer {key_a}")
    one = ChatRequest("m", [ChatMessage("user", "hi")], max_tokens=100)
    three = ChatRequest("m", [ChatMessage("user", "hi")], max_tokens=100, extra={"n": 3})
    assert admit.estimate(three, principal)[1] == 3 * admit.estimate(one, principal)[1] == 300


def test_logprobs_pass_through(client, principals, key_a, upstream):
    route_alias("default", upstream.base_url)
    response = post(
        client,
        key_a,
        {
            "model": "default",
            "logprobs": True,
            "top_logprobs": 1,
            "messages": [{"role": "user", "content": "Say hi"}],
        },
    )
    logprobs = response.json()["choices"][0]["logprobs"]
    assert logprobs["content"] and "logprob" in logprobs["content"][0]
    assert len(logprobs["content"][0]["top_logprobs"]) == 1


# --------------------------------------------------------------------------- content parts


def image_message(*parts) -> dict:
    return {"role": "user", "content": [{"type": "text", "text": "What is this?"}, *parts]}


def test_image_parts_reach_the_provider_and_are_recorded_by_kind(
    client, principals, key_a, upstream
):
    route_alias("default", upstream.base_url)
    part = {"type": "image_url", "image_url": {"url": PIXEL, "detail": "low"}}
    response = post(client, key_a, {"model": "default", "messages": [image_message(part)]})
    assert response.status_code == 200, response.content
    assert "[saw 1 images]" in response.json()["choices"][0]["message"]["content"]
    assert upstream.requests[-1].json["messages"][0]["content"][1] == part
    assert UsageRecord.objects.get().content_kinds == "image_url,text"
    assert PIXEL not in json.dumps(list(UsageRecord.objects.values()), default=str)


def test_pii_in_text_parts_beside_an_image_is_masked(client, principals, key_a, upstream):
    route_alias("default", upstream.base_url)
    policy(principals, upstream_pii="mask")
    message = {
        "role": "user",
        "content": [
            {"type": "text", "text": f"Who is {EMAIL}?"},
            {"type": "image_url", "image_url": {"url": PIXEL}},
        ],
    }
    assert post(client, key_a, {"model": "default", "messages": [message]}).status_code == 200
    sent = upstream.requests[-1].json["messages"][0]["content"]
    assert sent[0]["text"] == "Who is <EMAIL>?" and sent[1]["image_url"]["url"] == PIXEL


@pytest.mark.parametrize(
    ("fields", "message", "code", "param"),
    [
        (
            {"max_media_parts": 0},
            image_message({"type": "image_url", "image_url": {"url": PIXEL}}),
            "too_many_media_parts",
            "messages[0].content[1]",
        ),
        (
            {"max_media_part_chars": 50},
            image_message({"type": "image_url", "image_url": {"url": PIXEL}}),
            "media_part_too_large",
            "messages[0].content[1]",
        ),
    ],
)
def test_the_tier_bounds_media_parts(
    client, principals, key_a, upstream, fields, message, code, param
):
    route_alias("default", upstream.base_url)
    set_tier(principals, **fields)
    response = post(client, key_a, {"model": "default", "messages": [message]})
    assert response.status_code == 400
    assert (response.json()["error"]["code"], response.json()["error"]["param"]) == (code, param)
    assert upstream.requests == []


@pytest.mark.parametrize(
    "message",
    [
        {"role": "system", "content": [{"type": "image_url", "image_url": {"url": PIXEL}}]},
        image_message({"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}),
        image_message({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "ogg"}}),
        image_message({"type": "video", "video": {}}),
    ],
)
def test_malformed_parts_are_a_400(client, principals, key_a, upstream, message):
    route_alias("default", upstream.base_url)
    response = post(client, key_a, {"model": "default", "messages": [message]})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_value"
    assert upstream.requests == []


@pytest.mark.parametrize(
    ("extra", "message", "param"),
    [
        ({"tools": [WEATHER]}, {"role": "user", "content": "hi"}, "tools"),
        ({"n": 2}, {"role": "user", "content": "hi"}, "n"),
        (
            {},
            image_message({"type": "image_url", "image_url": {"url": PIXEL}}),
            "messages[0].content[1]",
        ),
    ],
)
def test_what_the_provider_does_not_take_is_a_clear_400(
    client, principals, key_a, upstream, extra, message, param
):
    """The embedded model's provider declares what it cannot do: never a silent drop."""
    route_alias(
        "default",
        upstream.base_url,
        extra={"unsupported": ["tools", "image_url", "n", "embeddings"]},
    )
    response = post(client, key_a, {"model": "default", "messages": [message], **extra})
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("unsupported_by_provider", param)
    assert upstream.requests == []


@pytest.mark.parametrize(
    ("extra", "valid"),
    [
        ('{"unsupported": ["tools", "embeddings"]}', True),
        ('{"unsupported": ["tools", "telepathy"]}', False),
        ('{"unsupported": "tools"}', False),
        ('["tools"]', False),
    ],
)
def test_the_admin_validates_what_a_provider_declares_unsupported(extra, valid, settings):
    from gateway.admin.providers import ProviderForm

    settings.LLMP_UPSTREAM_HOSTS = ("api.openai.com",)
    form = ProviderForm(
        data={
            "name": "p",
            "kind": "openai",
            "base_url": "https://api.openai.com/v1",
            "api_key_ref": "",
            "api_version": "",
            "region": "",
            "extra": extra,
            "enabled": "on",
        }
    )
    assert form.is_valid() is valid, form.errors


# --------------------------------------------------------------------------- embeddings


def embed(client, key, body, **headers):
    return post(client, key, body, path="/v1/embeddings", **headers)


def test_embeddings_are_served_metered_and_cached_per_tenant(
    client, principals, key_a, key_b, upstream
):
    route_alias("embed", upstream.base_url, model="text-embedding-3-small")
    body = {"model": "embed", "input": ["first text", "second text"], "dimensions": 8}
    first = embed(client, key_a, body)
    assert first.status_code == 200, first.content
    data = first.json()
    assert data["object"] == "list" and [d["index"] for d in data["data"]] == [0, 1]
    assert all(len(d["embedding"]) == 8 for d in data["data"])
    assert data["usage"]["prompt_tokens"] > 0
    assert upstream.requests[-1].json["input"] == ["first text", "second text"]
    second = embed(client, key_a, body)
    assert (first["X-Cache"], second["X-Cache"]) == ("MISS", "HIT")
    assert second.json()["data"] == data["data"]
    assert len(upstream.requests) == 1
    # Another tenant never gets tenant A's entry.
    other = embed(client, key_b, body)
    assert other["X-Cache"] == "MISS" and len(upstream.requests) == 2
    records = UsageRecord.objects.filter(tenant=principals.tenant_a).order_by("id")
    assert [r.route for r in records] == ["embeddings", "embeddings"]
    assert records[0].prompt_tokens == data["usage"]["prompt_tokens"]
    assert records[0].cost > 0 and records[1].cost == 0  # the hit costs nothing
    assert records[0].content_kinds == "embeddings"


def test_embeddings_asked_with_no_cache_leave_their_answer_for_the_next_request(
    client, principals, key_a, upstream
):
    # no-cache: not answered from the cache, but the fresh answer is kept under the tenant's
    # namespace, so the next request without the header is a hit.
    route_alias("embed", upstream.base_url)
    body = {"model": "embed", "input": "kept for later"}
    fresh = embed(client, key_a, body, HTTP_CACHE_CONTROL="no-cache")
    assert fresh.status_code == 200 and fresh["X-Cache"] == "BYPASS"
    again = embed(client, key_a, body)
    assert again["X-Cache"] == "HIT"
    assert again.json()["data"] == fresh.json()["data"]
    assert len(upstream.requests) == 1


def test_base64_embeddings_decode_to_the_float_vectors(client, principals, key_a, upstream):
    route_alias("embed", upstream.base_url)
    floats = embed(
        client, key_a, {"model": "embed", "input": "hello"}, HTTP_CACHE_CONTROL="no-cache"
    ).json()["data"][0]["embedding"]
    encoded = embed(
        client, key_a, {"model": "embed", "input": "hello", "encoding_format": "base64"}
    ).json()["data"][0]["embedding"]
    raw = base64.b64decode(encoded)
    decoded = struct.unpack(f"<{len(raw) // 4}f", raw)
    assert decoded == pytest.approx(floats, rel=1e-6)


def test_embeddings_apply_the_pii_policy_and_the_scope(client, principals, key_a, upstream):
    route_alias("embed", upstream.base_url)
    policy(principals, upstream_pii="mask")
    assert embed(client, key_a, {"model": "embed", "input": f"Mail {EMAIL}"}).status_code == 200
    assert upstream.requests[-1].json["input"] == ["Mail <EMAIL>"]
    policy(principals, block_pii_types=["EMAIL"])
    refused = embed(client, key_a, {"model": "embed", "input": ["ok", f"Mail {EMAIL}"]})
    assert refused.status_code == 400
    assert (refused.json()["error"]["code"], refused.json()["error"]["param"]) == (
        "pii_detected",
        "input[1]",
    )
    _, chat_only = gateway_services.api_key_create(
        actor=Actor.for_user(principals.alice),
        tenant=principals.tenant_a,
        name="chat-only",
        scopes=["chat"],
    )
    forbidden = embed(client, chat_only, {"model": "embed", "input": "hello"})
    assert forbidden.status_code == 403
    assert len(upstream.requests) == 1


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({"model": "embed", "input": [[1, 2, 3]]}, "unsupported_input", "input[0]"),
        ({"model": "embed", "input": []}, "invalid_value", "input"),
        (
            {"model": "embed", "input": "x", "encoding_format": "int8"},
            "invalid_value",
            "encoding_format",
        ),
        ({"model": "embed", "input": "x", "dimensions": 0}, "invalid_value", "dimensions"),
        ({"model": "embed", "input": "x", "shape": 1}, "unknown_parameter", "shape"),
    ],
)
def test_bad_embedding_requests_are_typed_400s(
    client, principals, key_a, upstream, body, code, param
):
    route_alias("embed", upstream.base_url)
    response = embed(client, key_a, body)
    assert response.status_code == 400
    assert (response.json()["error"]["code"], response.json()["error"]["param"]) == (code, param)
    assert upstream.requests == []


def test_a_provider_without_embeddings_is_a_400_and_limits_count_inputs(
    client, principals, key_a, upstream
):
    route_alias("embed", upstream.base_url, extra={"unsupported": ["embeddings"]})
    response = embed(client, key_a, {"model": "embed", "input": "hello"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "unsupported_by_provider"
    Provider.objects.update(extra={})
    set_tier(principals, max_prompt_chars=10)
    too_big = embed(client, key_a, {"model": "embed", "input": ["short", "x" * 20]})
    assert too_big.status_code == 400
    assert (too_big.json()["error"]["code"], too_big.json()["error"]["param"]) == (
        "prompt_too_large",
        "input[1]",
    )
    assert upstream.requests == []


# --------------------------------------------------------------------------- the output stage


def test_a_plain_answer_and_the_same_answer_streamed_come_out_alike():
    """Stage boundary: the output stage gives the client the same reply whether it arrives
    whole or in fragments (placeholders split anywhere, in text and in tool arguments)."""
    pseudonymizer = Pseudonymizer()
    masked = pseudonymizer.pseudonymize(f"Write to {EMAIL}")
    placeholder = masked.removeprefix("Write to ")
    arguments = json.dumps({"to": placeholder, "cc": placeholder})
    result = ChatResult(
        [
            Choice(
                0,
                f"Sending to {placeholder}.",
                "tool_calls",
                [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "send_mail", "arguments": arguments},
                    }
                ],
            )
        ],
        Usage(3, 4),
    )

    whole = output.Output(None, pii.Restorer(pseudonymizer), whole=True)
    for delta in output.as_deltas(result):
        whole.feed(delta)
    whole.finish()
    plain = whole.result(raw=False, usage=Usage())

    pieces = output.Output(None, pii.Restorer(pseudonymizer))
    sent: list[ChatDelta] = []
    text = f"Sending to {placeholder}."
    for i in range(0, len(text), 3):
        sent += pieces.feed(ChatDelta(content=text[i : i + 3]))
    sent += pieces.feed(
        ChatDelta(
            tool_calls=[
                {
                    "index": 0,
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "send_mail", "arguments": ""},
                }
            ]
        )
    )
    for i in range(0, len(arguments), 4):
        sent += pieces.feed(
            ChatDelta(tool_calls=[{"index": 0, "function": {"arguments": arguments[i : i + 4]}}])
        )
    sent += pieces.feed(ChatDelta(finish_reason="tool_calls"))
    sent += pieces.finish()
    streamed = pieces.result(raw=False, usage=Usage())

    assert plain.choices == streamed.choices
    assert json.loads(plain.choices[0].tool_calls[0]["function"]["arguments"]) == {
        "to": EMAIL,
        "cc": EMAIL,
    }
    assert "".join(d.content for d in sent) == f"Sending to {EMAIL}."
    shown_arguments = "".join(
        f["function"].get("arguments", "") for d in sent for f in d.tool_calls or []
    )
    assert json.loads(shown_arguments) == {"to": EMAIL, "cc": EMAIL}
    assert [d.finish_reason for d in sent if d.finish_reason] == ["tool_calls"]
    # What the provider wrote (for the cache) keeps the placeholders.
    raw = pieces.result(raw=True, usage=Usage())
    assert EMAIL not in json.dumps(raw.choices[0].tool_calls)


def test_a_blocked_leak_holds_back_logprobs():
    canary = "llmp-canary-0123456789abcdef"
    out = output.Output(lambda: guard.LeakGuard(canary, "block"), None)
    events = out.feed(
        ChatDelta(
            content=f"The secret is {canary}",
            logprobs={"content": [{"token": canary, "logprob": 0.0}]},
        )
    )
    events += out.finish()
    assert canary not in json.dumps([e.logprobs for e in events])
    assert [e.finish_reason for e in events if e.finish_reason] == ["content_filter"]


# --------------------------------------------------------------------------- every provider kind


@pytest.fixture
def aws_environment(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDAGENTTRAFFIC")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "agent-traffic-secret")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def google_token_endpoint(settings, monkeypatch):
    """A local OAuth token endpoint and a service account whose JSON key names it, in a
    secret reference Vertex providers can use (``env:PROVIDER_AGENT_SA``)."""
    from .test_providers_google import service_account_json
    from .upstreams_google import GoogleTokenServer

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with GoogleTokenServer(public.decode()) as server:
        settings.LLMP_UPSTREAM_HOSTS = ["127.0.0.1"]  # the token endpoint must be allowed
        monkeypatch.setenv("PROVIDER_AGENT_SA", service_account_json(private, server.token_uri))
        yield server


@pytest.mark.parametrize("kind", ["openai", "azure", "bedrock", "anthropic", "gemini", "vertex"])
def test_the_openai_sdk_gets_tool_calls_whole_through_every_provider_kind(
    gateway_server, principals, key_a, aws_environment, kind, request, monkeypatch
):
    """The same client code, whichever provider the alias routes to: a tool call plain and
    streamed, then the tool's result answered."""
    from openai import OpenAI

    from .upstreams import AzureUpstream, BedrockUpstream
    from .upstreams_anthropic import AnthropicUpstream
    from .upstreams_google import GeminiUpstream, VertexUpstream

    monkeypatch.setenv("PROVIDER_AGENT_KEY", "agent-provider-key")
    if kind == "vertex":
        tokens = request.getfixturevalue("google_token_endpoint")
        server = VertexUpstream(tokens)
    else:
        server = {
            "openai": OpenAIUpstream,
            "azure": AzureUpstream,
            "bedrock": BedrockUpstream,
            "anthropic": AnthropicUpstream,
            "gemini": GeminiUpstream,
        }[kind]()
    with server:
        fields = {
            "azure": {"api_version": "2024-10-21"},
            "bedrock": {"region": "eu-west-1"},
            "openai": {},
            "anthropic": {"api_key_ref": "env:PROVIDER_AGENT_KEY"},
            "gemini": {"api_key_ref": "env:PROVIDER_AGENT_KEY"},
            "vertex": {
                "api_key_ref": "env:PROVIDER_AGENT_SA",
                "region": "europe-west4",
                "extra": {"project": "llmp-agent-test"},
            },
        }[kind]
        route_alias("agent", server.base_url, kind=kind, model="the-model", **fields)
        server.tool_call = {"name": "get_weather", "arguments": {"city": "Paris"}}
        if kind in ("bedrock", "anthropic"):
            server.tool_use = {"name": "get_weather", "input": {"city": "Paris"}}
        if kind in ("gemini", "vertex"):
            server.function_call = {"name": "get_weather", "args": {"city": "Paris"}}
        client = OpenAI(base_url=f"{gateway_server}/v1", api_key=key_a, max_retries=0)
        messages = [{"role": "user", "content": "What is the weather in Paris?"}]

        reply = client.chat.completions.create(model="agent", messages=messages, tools=[WEATHER])
        choice = reply.choices[0]
        assert choice.finish_reason == "tool_calls"
        [call] = choice.message.tool_calls
        assert call.function.name == "get_weather" and call.id
        assert json.loads(call.function.arguments) == {"city": "Paris"}

        calls: dict[int, dict] = {}
        finish = None
        for chunk in client.chat.completions.create(
            model="agent", messages=messages, tools=[WEATHER], stream=True
        ):
            for streamed in chunk.choices:
                finish = streamed.finish_reason or finish
                for fragment in streamed.delta.tool_calls or []:
                    entry = calls.setdefault(fragment.index, {"id": "", "name": "", "args": ""})
                    entry["id"] = fragment.id or entry["id"]
                    if fragment.function:
                        entry["name"] += fragment.function.name or ""
                        entry["args"] += fragment.function.arguments or ""
        assert finish == "tool_calls"
        assert [(c["name"], json.loads(c["args"])) for c in calls.values()] == [
            ("get_weather", {"city": "Paris"})
        ]
        assert calls[0]["id"]

        server.tool_call = None
        if kind == "bedrock":
            server.tool_use = None
            server.reply = "It is 18 C in Paris."
        if kind == "anthropic":
            server.tool_use = None
        if kind in ("gemini", "vertex"):
            server.function_call = None
        follow_up = [
            *messages,
            choice.message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "18 C"},
        ]
        answer = client.chat.completions.create(model="agent", messages=follow_up, tools=[WEATHER])
        assert answer.choices[0].finish_reason == "stop"
        assert "18 C" in answer.choices[0].message.content


def test_embeddings_fail_over_like_chat_and_open_the_breaker(client, principals, key_a):
    from gateway.models import AliasFallback, ProviderDeployment
    from gateway.resilience.breaker import breaker_store

    breaker_store().clear()
    with OpenAIUpstream() as primary, OpenAIUpstream() as secondary:
        primary.behaviour = "error500"
        alias = route_alias("embed", primary.base_url)
        ProviderDeployment.objects.filter(name="embed-deployment").update(
            max_attempts=1, breaker_failure_threshold=2
        )
        backup = route_alias("backup", secondary.base_url)
        AliasFallback.objects.create(
            alias=alias, deployment=backup.versions.get().deployment, position=1
        )
        answers = [
            embed(
                client,
                key_a,
                {"model": "embed", "input": f"text {i}"},
                HTTP_CACHE_CONTROL="no-store",
            )
            for i in range(4)
        ]
        assert [a.status_code for a in answers] == [200] * 4
        assert {a["x-llmp-deployment"] for a in answers} == {"backup-deployment"}
        # The primary's breaker opened after two failures: it was not called again.
        assert len(primary.requests) == 2 and len(secondary.requests) == 4
        records = UsageRecord.objects.filter(route="embeddings")
        assert {r.fallback_reason for r in records} == {"upstream_server_error", "breaker_open"}
    breaker_store().clear()
