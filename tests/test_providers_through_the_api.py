"""Anthropic, Gemini and Vertex AI providers behind the API, failing: the client gets the
gateway's typed error (never a 500), and neither the provider's key, a service account's
private key nor an access token reaches the client or the logs."""

from __future__ import annotations

import json
import logging

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.resilience.breaker import breaker_store

from .conftest import route_alias
from .test_providers_google import service_account_json
from .upstreams_anthropic import AnthropicUpstream
from .upstreams_google import GeminiUpstream, GoogleTokenServer, VertexUpstream

pytestmark = pytest.mark.django_db

PROVIDER_KEY = "provider-key-NEVER-SHOW-THIS-4242"


@pytest.fixture
def service_account():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public.decode()


@pytest.fixture
def upstream(request, settings, monkeypatch, service_account):
    """A running server of the parametrized kind, routed to by the ``default`` alias."""
    kind = request.param
    monkeypatch.setenv("PROVIDER_API_TEST_KEY", PROVIDER_KEY)
    breaker_store().clear()
    if kind == "vertex":
        settings.LLMP_UPSTREAM_HOSTS = ["127.0.0.1"]
        with GoogleTokenServer(service_account[1]) as tokens, VertexUpstream(tokens) as server:
            monkeypatch.setenv(
                "PROVIDER_API_TEST_SA", service_account_json(service_account[0], tokens.token_uri)
            )
            route_alias(
                "default",
                server.base_url,
                kind="vertex",
                model="gemini-test",
                api_key_ref="env:PROVIDER_API_TEST_SA",
                region="us-central1",
                extra={"project": "llmp-api-test"},
            )
            yield server
    else:
        server_class = {"anthropic": AnthropicUpstream, "gemini": GeminiUpstream}[kind]
        with server_class() as server:
            server.required_key = PROVIDER_KEY
            route_alias(
                "default",
                server.base_url,
                kind=kind,
                model="the-model",
                api_key_ref="env:PROVIDER_API_TEST_KEY",
            )
            yield server
    breaker_store().clear()


def post(client, key, body):
    return client.post(
        "/v1/chat/completions",
        data=json.dumps({"model": "default", **body}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )


KINDS = ["anthropic", "gemini", "vertex"]


@pytest.mark.parametrize("upstream", KINDS, indirect=True)
def test_an_answer_streams_through_the_api(gateway_server, principals, key_a, upstream):
    upstream.reply = "one two three"
    response = httpx.post(
        f"{gateway_server}/v1/chat/completions",
        json={
            "model": "default",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        headers={"Authorization": f"Bearer {key_a}"},
        timeout=10,
    )
    assert response.status_code == 200
    blocks = response.text.strip().split("\n\n")
    assert blocks[-1] == "data: [DONE]"
    chunks = [json.loads(b.removeprefix("data: ")) for b in blocks[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "one two three"
    assert chunks[-1]["usage"]["completion_tokens"] > 0


@pytest.mark.parametrize("upstream", KINDS, indirect=True)
@pytest.mark.parametrize(
    ("behaviour", "status", "code"),
    [
        ("unauthorized", 502, "upstream_auth_failed"),
        ("error500", 502, "upstream_server_error"),
        ("rate_limited", 503, "upstream_unavailable"),
        ("malformed_json", 502, "upstream_bad_response"),
    ],
)
def test_provider_failures_are_typed_errors_that_leak_no_credential(
    client, principals, key_a, upstream, behaviour, status, code, caplog, service_account
):
    upstream.behaviour = behaviour
    # A wait longer than the deployment accepts: not retried, so the test does not wait.
    upstream.retry_after, upstream.retry_delay = "60", "60s"
    with caplog.at_level(logging.DEBUG):
        response = post(client, key_a, {"messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == status, response.content
    assert response.json()["error"]["code"] == code
    seen = response.content.decode() + caplog.text + json.dumps(dict(response.headers))
    assert PROVIDER_KEY not in seen
    assert "PRIVATE KEY" not in seen and service_account[0][40:80] not in seen
    assert "token-1" not in seen


@pytest.mark.parametrize("upstream", ["anthropic"], indirect=True)
@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "n": 2}, "n"),
        ("/v1/embeddings", {"input": "hi"}, "model"),
    ],
)
def test_what_a_kind_never_carries_is_refused_before_any_call(
    client, principals, key_a, upstream, path, body, param
):
    response = client.post(
        path,
        data=json.dumps({"model": "default", **body}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key_a}",
    )
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "unsupported_by_provider"
    assert response.json()["error"]["param"] == param
    assert upstream.requests == []
