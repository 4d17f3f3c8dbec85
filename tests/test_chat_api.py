"""The chat API end to end through the gateway, against a real local upstream."""

from __future__ import annotations

import json

import httpx
import pytest

from gateway.models import Provider, ProviderDeployment, UsageRecord
from gateway.pipeline import authenticate
from llmplatform.models import AuditEvent

from .conftest import route_alias
from .upstreams import OpenAIUpstream

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_auth_cache():
    authenticate.clear_cache()
    yield


@pytest.fixture
def upstream():
    with OpenAIUpstream() as server:
        yield server


def stream_post(base_url, body, key, path="/v1/chat/completions") -> httpx.Response:
    """Streams must be read from a real server: the test client consumes them in another event
    loop than the one the view ran in."""
    return httpx.post(
        f"{base_url}{path}", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=10
    )


def post(client, body, key, path="/v1/chat/completions"):
    return client.post(
        path,
        data=json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )


def sse_events(response) -> list[str]:
    raw = response.text
    assert raw.endswith("\n\n")
    return [block.removeprefix("data: ") for block in raw.strip().split("\n\n")]


def test_a_plain_call_returns_an_openai_completion_and_is_metered(
    client, principals, key_a, upstream
):
    upstream.reply = "Hello there friend"
    route_alias("default", upstream.base_url, model="gemma-up")
    response = post(
        client,
        {
            "model": "default",
            "messages": [{"role": "user", "content": "Say hi please"}],
            "temperature": 0.2,
            "max_tokens": 50,
            "user": "end-user-1",
        },
        key_a,
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert body["model"] == "default"
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": "Hello there friend",
        "refusal": None,
    }
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}
    assert response["x-llmp-deployment"] == "default-deployment"

    sent = upstream.requests[-1].json
    assert sent["model"] == "gemma-up"
    assert sent["temperature"] == 0.2 and sent["max_tokens"] == 50 and sent["user"] == "end-user-1"

    record = UsageRecord.objects.get()
    assert record.tenant == principals.tenant_a
    assert (record.status_code, record.prompt_tokens, record.completion_tokens) == (200, 3, 3)
    assert record.deployment == "default-deployment" and record.alias == "default"
    # prices: 0.001 / 0.002 USD per 1k tokens
    assert float(record.cost) == pytest.approx((3 * 0.001 + 3 * 0.002) / 1000)
    assert record.request_id == response["X-Request-ID"]
    values = " ".join(str(v) for v in UsageRecord.objects.values().first().values())
    assert "Say hi please" not in values and "Hello there" not in values


def test_a_stream_has_openai_chunks_usage_and_done(gateway_server, key_a, upstream):
    upstream.reply = "one two three"
    route_alias("default", upstream.base_url)
    response = stream_post(
        gateway_server,
        {
            "model": "default",
            "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "count"}],
        },
        key_a,
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/event-stream"
    events = sse_events(response)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text.split() == ["one", "two", "three"]
    finals = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert [c["choices"][0]["finish_reason"] for c in finals] == ["stop"]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 3
    record = UsageRecord.objects.get()
    assert record.streamed and record.status_code == 200 and record.completion_tokens == 3


def test_the_versions_system_prompt_goes_first_and_the_tier_caps_max_tokens(
    client, key_a, upstream, tier
):
    alias = route_alias("default", upstream.base_url)
    alias.versions.update(system_prompt="You are terse.")
    tier.max_output_tokens = 64
    tier.save()
    post(client, {"model": "default", "messages": [{"role": "user", "content": "hi"}]}, key_a)
    sent = upstream.requests[-1].json
    assert sent["messages"][0]["role"] == "system"
    # The version's system prompt, with the leak-detection canary added (see test_guard.py).
    assert sent["messages"][0]["content"].startswith("You are terse.\n")
    assert "llmp-canary-" in sent["messages"][0]["content"]
    assert sent["max_tokens"] == 64
    response = post(
        client,
        {"model": "default", "max_tokens": 65, "messages": [{"role": "user", "content": "hi"}]},
        key_a,
    )
    assert response.status_code == 400
    assert "64" in response.json()["error"]["message"]


def test_control_characters_are_removed_and_markup_is_not_escaped(client, key_a, upstream):
    route_alias("default", upstream.base_url)
    post(
        client,
        {
            "model": "default",
            "messages": [{"role": "user", "content": "is a < b && c > d?\x00\x07\n\tok\x1b[31m"}],
        },
        key_a,
    )
    assert upstream.requests[-1].json["messages"][0]["content"] == "is a < b && c > d?\n\tok[31m"


def test_content_parts_are_joined(client, key_a, upstream):
    route_alias("default", upstream.base_url)
    post(
        client,
        {
            "model": "default",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Hello, "},
                        {"type": "text", "text": "world"},
                    ],
                }
            ],
        },
        key_a,
    )
    assert upstream.requests[-1].json["messages"][0]["content"] == "Hello, world"


@pytest.mark.parametrize(
    ("behaviour", "status", "code"),
    [
        ("error500", 502, "upstream_server_error"),
        ("malformed_json", 502, "upstream_bad_response"),
        ("wrong_content_type", 502, "upstream_bad_response"),
        ("rate_limited", 503, "upstream_unavailable"),
        ("reset", 503, "upstream_unavailable"),
        ("hang", 504, "upstream_timeout"),
    ],
)
def test_upstream_failures_map_to_502_503_504(client, key_a, upstream, behaviour, status, code):
    upstream.behaviour = behaviour
    upstream.hang_seconds = 2
    route_alias("default", upstream.base_url, read_timeout=0.3)
    ProviderDeployment.objects.update(max_attempts=1)  # retries have their own tests
    response = post(
        client, {"model": "default", "messages": [{"role": "user", "content": "x"}]}, key_a
    )
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code and error["type"] == "api_error"
    if behaviour == "rate_limited":
        assert response["Retry-After"] == "2"
    record = UsageRecord.objects.get()
    assert (record.status_code, record.error_code) == (status, code)


def test_a_stream_that_fails_before_the_first_byte_gets_an_error_status(client, key_a, upstream):
    upstream.behaviour = "error500"
    route_alias("default", upstream.base_url)
    response = post(
        client,
        {"model": "default", "stream": True, "messages": [{"role": "user", "content": "x"}]},
        key_a,
    )
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_server_error"


def test_a_stream_that_breaks_midway_ends_with_an_error_event(gateway_server, key_a, upstream):
    upstream.behaviour = "stream_break"
    upstream.reply = "a b c d e f g h"
    route_alias("default", upstream.base_url)
    response = stream_post(
        gateway_server,
        {"model": "default", "stream": True, "messages": [{"role": "user", "content": "x"}]},
        key_a,
    )
    assert response.status_code == 200
    events = sse_events(response)
    assert "[DONE]" not in events
    assert json.loads(events[-1])["error"]["type"] == "api_error"
    assert UsageRecord.objects.get().status_code == 502


def test_the_simple_chat_aliases(client, gateway_server, key_a, upstream):
    upstream.reply = "pong pong"
    route_alias("default", upstream.base_url)
    response = post(client, {"prompt": "ping"}, key_a, path="/chat")
    assert response.status_code == 200
    assert response.json()["response"] == "pong pong"
    response = stream_post(gateway_server, {"prompt": "ping"}, key_a, path="/chat-stream")
    events = sse_events(response)
    assert events[-1] == "[DONE]"
    pieces = [json.loads(e)["delta"]["text"] for e in events[:-2]]
    assert "".join(pieces).split() == ["pong", "pong"]
    assert json.loads(events[-2])["finish_reason"] == "stop"


def test_the_openai_sdk_works_unchanged_plain_and_streamed(gateway_server, principals, key_a):
    from openai import OpenAI

    with OpenAIUpstream() as upstream:
        upstream.reply = "The answer is forty two"
        route_alias("default", upstream.base_url)
        client = OpenAI(base_url=f"{gateway_server}/v1", api_key=key_a, max_retries=0)
        models = client.models.list()
        assert [m.id for m in models.data] == ["default"]

        reply = client.chat.completions.create(
            model="default", messages=[{"role": "user", "content": "What is the answer?"}]
        )
        assert reply.choices[0].message.content == "The answer is forty two"
        assert reply.usage.total_tokens > 0

        stream = client.chat.completions.create(
            model="default",
            messages=[{"role": "user", "content": "What is the answer?"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text.split() == ["The", "answer", "is", "forty", "two"]
        assert chunks[-1].usage.completion_tokens == 5

        import openai

        bad = OpenAI(base_url=f"{gateway_server}/v1", api_key="llmp_wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.chat.completions.create(
                model="default", messages=[{"role": "user", "content": "x"}]
            )
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(
                model="nope", messages=[{"role": "user", "content": "x"}]
            )
    assert UsageRecord.objects.filter(status_code=200).count() == 2


def test_config_changes_in_the_admin_are_audited(admin_client, upstream):
    route_alias("default", upstream.base_url)
    provider = Provider.objects.get()
    response = admin_client.post(
        f"/admin/gateway/provider/{provider.pk}/change/",
        {
            "name": provider.name,
            "kind": "openai",
            "base_url": "http://127.0.0.1:1/v1",
            "api_key_ref": "env:PROVIDER_SOME_KEY",
            "api_version": "",
            "region": "",
            "extra": "{}",
            "enabled": "on",
        },
    )
    assert response.status_code == 302, response.content[:2000]
    event = AuditEvent.objects.get(action="admin.provider.change")
    assert event.before["base_url"] == upstream.base_url
    assert event.after["base_url"] == "http://127.0.0.1:1/v1"
    assert event.actor == "user:admin"

    bad = admin_client.post(
        f"/admin/gateway/provider/{provider.pk}/change/",
        {
            "name": provider.name,
            "kind": "openai",
            "base_url": "http://127.0.0.1:1/v1",
            "api_key_ref": "sk-live-plaintext-key",
            "extra": "{}",
            "enabled": "on",
        },
    )
    assert bad.status_code == 200  # the form is shown again with an error
    assert b"sk-live-plaintext-key" not in bad.content.split(b"errorlist")[-1][:200]
    assert Provider.objects.get().api_key_ref == "env:PROVIDER_SOME_KEY"


def test_health_and_readiness(client, upstream, db):
    assert client.get("/healthz").json() == {"status": "ok"}
    from gateway import readiness

    readiness._last = None
    route_alias("default", upstream.base_url)
    response = client.get("/readyz")
    assert response.status_code == 200, response.content
    assert response.json()["checks"]["providers"]["ok"] is True
    readiness._last = None
    upstream.stop()
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["providers"]["ok"] is False
