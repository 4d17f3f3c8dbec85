"""PII in the request path: blocking, masking and reversible pseudonymisation by tenant policy."""

from __future__ import annotations

import json

import httpx
import pytest

from privacy.models import PrivacyPolicy
from privacy.pii import DetectorError

from .conftest import route_alias
from .upstreams import OpenAIUpstream

pytestmark = pytest.mark.django_db

PROMPT = "Write to jane.doe@example.com and call +1 415 555 0132 about the invoice."


@pytest.fixture
def upstream():
    with OpenAIUpstream() as server:  # echoes the last user message
        yield server


def policy(principals, **fields) -> PrivacyPolicy:
    row, _ = PrivacyPolicy.objects.update_or_create(tenant=principals.tenant_a, defaults=fields)
    return row


def chat(client, key, content, **extra):
    body = {"model": "default", "messages": [{"role": "user", "content": content}], **extra}
    return client.post(
        "/v1/chat/completions",
        data=json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )


def test_by_default_prompts_go_upstream_unchanged(client, principals, key_a, upstream):
    route_alias("default", upstream.base_url)
    assert chat(client, key_a, PROMPT).status_code == 200
    assert upstream.requests[-1].json["messages"][-1]["content"] == PROMPT


def test_mask_mode_sends_types_instead_of_values(client, principals, key_a, upstream):
    route_alias("default", upstream.base_url)
    policy(principals, upstream_pii="mask")
    response = chat(client, key_a, PROMPT)
    assert response.status_code == 200
    sent = upstream.requests[-1].json["messages"][-1]["content"]
    assert "jane.doe@example.com" not in sent and "555" not in sent
    assert "<EMAIL>" in sent and "<PHONE>" in sent


def test_pseudonymisation_is_reversed_in_the_reply(client, principals, key_a, upstream):
    route_alias("default", upstream.base_url)
    policy(principals, upstream_pii="pseudonymize")
    response = chat(client, key_a, PROMPT)
    assert response.status_code == 200
    sent = upstream.requests[-1].json["messages"][-1]["content"]
    assert "jane.doe@example.com" not in sent
    assert "<EMAIL_1>" in sent and "<PHONE_1>" in sent
    # The upstream echoed the placeholders; the client gets the values back.
    assert response.json()["choices"][0]["message"]["content"] == PROMPT


def test_pseudonymisation_is_reversed_in_streams_and_cached_without_values(
    gateway_server, principals, key_a, upstream
):
    route_alias("default", upstream.base_url)
    policy(principals, upstream_pii="pseudonymize")
    body = {
        "model": "default",
        "stream": True,
        "temperature": 0,
        "messages": [{"role": "user", "content": PROMPT}],
    }
    texts = []
    for _ in range(2):  # the second is a cache hit, replayed
        response = httpx.post(
            f"{gateway_server}/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {key_a}"},
            timeout=10,
        )
        assert response.status_code == 200
        events = [e.removeprefix("data: ") for e in response.text.strip().split("\n\n")][:-1]
        texts.append(
            "".join(
                json.loads(e)["choices"][0]["delta"].get("content") or ""
                for e in events
                if json.loads(e)["choices"]
            )
        )
        assert "<EMAIL_1>" not in response.text
    assert texts == [PROMPT, PROMPT]
    assert response.headers["X-Cache"] == "HIT"
    assert len(upstream.requests) == 1


def test_tool_call_arguments_are_pseudonymised_too(client, principals, key_a, upstream):
    route_alias("default", upstream.base_url)
    policy(principals, upstream_pii="pseudonymize")
    arguments = json.dumps({"to": "jane.doe@example.com"})
    body_messages = [
        {"role": "user", "content": "Email jane.doe@example.com please"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "send_email", "arguments": arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sent to jane.doe@example.com"},
    ]
    response = client.post(
        "/v1/chat/completions",
        data=json.dumps({"model": "default", "messages": body_messages}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key_a}",
    )
    assert response.status_code == 200
    sent = json.dumps(upstream.requests[-1].json)
    assert "jane.doe@example.com" not in sent
    sent_args = upstream.requests[-1].json["messages"][1]["tool_calls"][0]["function"]
    assert json.loads(sent_args["arguments"]) == {"to": "<EMAIL_1>"}


def test_blocked_pii_types_are_refused_naming_the_type_not_the_value(
    client, principals, key_a, upstream
):
    route_alias("default", upstream.base_url)
    policy(principals, block_pii_types=["US_SSN", "CREDIT_CARD"])
    response = chat(client, key_a, "My SSN is 219-09-9999, can you file my taxes?")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "pii_detected" and "US_SSN" in error["message"]
    assert "219-09-9999" not in response.content.decode()
    assert upstream.requests == []
    assert chat(client, key_a, PROMPT).status_code == 200  # other types pass


def test_a_failing_detector_fails_the_request_closed(
    client, principals, key_a, upstream, monkeypatch
):
    route_alias("default", upstream.base_url)
    policy(principals, upstream_pii="mask")

    def broken(text, types=None):
        raise DetectorError("recogniser crashed")

    monkeypatch.setattr("privacy.pii.detect", broken)
    response = chat(client, key_a, PROMPT)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "pii_detector_unavailable"
    assert upstream.requests == []
