"""Bring-your-own scanners: each adapter against a real local server speaking its protocol
(misbehaving ones included), and through the gateway end to end: what a client gets when a
scanner blocks, flags, times out or fails, before the call and after it."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from gateway.models import GuardrailScanner, SecurityEvent, UsageRecord
from gateway.scanners.base import (
    POST_CALL,
    PRE_CALL,
    ScannerBadResponse,
    ScannerConfig,
    ScannerFailed,
    ScannerTimeout,
    ScanRequest,
    ScanText,
)
from gateway.scanners.registry import build_scanner

from .conftest import chat, route_alias
from .scanner_servers import BedrockGuardrailServer, HttpScannerServer, PresidioServer
from .upstreams import OpenAIUpstream

# What the test scanners block (they block on the word ATTACK) but the built-in screen passes:
# these tests are about the scanner seeing a tool result, not about the screen.
ATTACK_TOOL_RESULT = "Weather: sunny, 21 degrees. Station code ATTACK-7 reported no rain overnight."


# --- Servers and helpers -----------------------------------------------------------------------


@pytest.fixture
def upstream():
    with OpenAIUpstream(reply="Happy to help.") as server:
        yield server


@pytest.fixture
def http_scanner():
    with HttpScannerServer() as server:
        server.hang_seconds = 3
        yield server


@pytest.fixture
def bedrock_guardrail(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDSCANNERTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "scanner-test-secret")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with BedrockGuardrailServer() as server:
        server.hang_seconds = 3
        yield server


@pytest.fixture
def presidio():
    with PresidioServer() as server:
        server.hang_seconds = 3
        yield server


def _config(**fields) -> ScannerConfig:
    defaults = dict(
        name="s",
        kind="http",
        tenant_id=None,
        alias="",
        pre_call=True,
        post_call=False,
        fail_closed=True,
        timeout=2.0,
    )
    return ScannerConfig(**{**defaults, **fields})


def _request(*texts: str, phase: str = PRE_CALL) -> ScanRequest:
    return ScanRequest(
        phase=phase,
        request_id="req_1",
        tenant_id=7,
        tenant_slug="acme",
        alias="default",
        texts=tuple(
            ScanText(f"messages[{n}].content", "user", "message", t) for n, t in enumerate(texts)
        ),
    )


def _scan(config: ScannerConfig, request: ScanRequest):
    async def run():
        adapter = build_scanner(config)
        try:
            return await adapter.scan(request)
        finally:
            await adapter.aclose()

    return asyncio.run(run())


def _scanner(**fields) -> GuardrailScanner:
    defaults = dict(name="guard", kind="http", timeout_ms=2000)
    return GuardrailScanner.objects.create(**{**defaults, **fields})


def _tool_turns(tool_text: str) -> list[dict]:
    return [
        {"role": "user", "content": "What is the weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": tool_text},
    ]


# --- The HTTP scanner's contract, against a real server -------------------------------------------


def test_the_http_scanner_sends_the_contract_and_reads_a_block(http_scanner):
    verdict = _scan(_config(url=http_scanner.base_url), _request("hello", "an ATTACK here"))
    assert (verdict.action, verdict.score, verdict.reasons) == ("block", 0.97, ("matched:ATTACK",))
    sent = http_scanner.requests[-1].json
    assert sent["version"] == 1 and sent["phase"] == "pre_call"
    assert sent["tenant"] == {"id": 7, "slug": "acme"} and sent["alias"] == "default"
    assert sent["texts"][1] == {
        "index": 1,
        "role": "user",
        "kind": "message",
        "param": "messages[1].content",
        "text": "an ATTACK here",
    }
    assert http_scanner.requests[-1].headers["x-request-id"] == "req_1"


def test_the_http_scanner_sends_its_auth_header_from_a_secret_reference(http_scanner, monkeypatch):
    monkeypatch.setenv("PROVIDER_SCANNER_TOKEN", "Bearer tok-123")
    http_scanner.required_key = "tok-123"
    config = _config(url=http_scanner.base_url, auth_header="Authorization")
    with pytest.raises(ScannerFailed, match="HTTP 401"):
        _scan(config, _request("hello"))
    verdict = _scan(
        _config(url=http_scanner.base_url, auth_secret_ref="env:PROVIDER_SCANNER_TOKEN"),
        _request("hello"),
    )
    assert verdict.action == "allow"


@pytest.mark.parametrize(
    ("behaviour", "error"),
    [
        ("error500", ScannerFailed),
        ("malformed_json", ScannerBadResponse),
        ("no_action", ScannerBadResponse),
        ("hang", ScannerTimeout),
        ("redirect", ScannerFailed),  # not followed, least of all to the metadata service
        ("huge", ScannerBadResponse),
    ],
)
def test_a_misbehaving_http_scanner_is_a_typed_failure(http_scanner, behaviour, error):
    http_scanner.behaviour = behaviour
    with pytest.raises(error):
        _scan(_config(url=http_scanner.base_url, timeout=0.3), _request("hello"))


def test_a_scanner_url_on_a_metadata_address_is_refused_before_any_call():
    config = _config(url="http://169.254.169.254/latest/meta-data/")
    with pytest.raises(ScannerFailed) as refused:
        _scan(config, _request("hello"))
    assert refused.value.reason == "not_allowed"


# --- Bedrock Guardrails' ApplyGuardrail, through boto3, against a real server ---------------------


def _bedrock(server: BedrockGuardrailServer, **fields) -> ScannerConfig:
    return _config(
        kind="bedrock",
        url=server.base_url,
        guardrail_id=server.guardrail_id,
        guardrail_version="3",
        region="eu-west-1",
        **fields,
    )


def test_bedrock_applies_the_guardrail_signed_with_the_phase_as_its_source(bedrock_guardrail):
    allowed = _scan(_bedrock(bedrock_guardrail), _request("what is the capital of France?"))
    assert allowed.action == "allow"
    sent = bedrock_guardrail.requests[-1]
    assert sent.path == f"/guardrail/{bedrock_guardrail.guardrail_id}/version/3/apply"
    assert sent.headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDSCANNERTEST/")
    assert sent.json == {
        "source": "INPUT",
        "content": [{"text": {"text": "what is the capital of France?"}}],
    }

    blocked = _scan(_bedrock(bedrock_guardrail), _request("ATTACK", phase=POST_CALL))
    assert bedrock_guardrail.requests[-1].json["source"] == "OUTPUT"
    assert blocked.action == "block"
    assert "contentPolicy:PROMPT_ATTACK" in blocked.reasons
    assert "sensitiveInformationPolicy:EMAIL" in blocked.reasons
    # The matched text stays out of what is recorded.
    assert not any("someone@example.com" in r for r in blocked.reasons)

    flagged = _scan(_bedrock(bedrock_guardrail, on_detect="flag"), _request("ATTACK"))
    assert flagged.action == "flag"


@pytest.mark.parametrize(
    ("behaviour", "reason"),
    [
        ("error500", "unavailable"),
        ("malformed_json", "bad_response"),
        ("no_action", "bad_response"),
        ("hang", "timeout"),
    ],
)
def test_a_misbehaving_bedrock_guardrail_is_a_typed_failure(bedrock_guardrail, behaviour, reason):
    bedrock_guardrail.behaviour = behaviour
    with pytest.raises(ScannerFailed) as failed:
        _scan(_bedrock(bedrock_guardrail, timeout=0.5), _request("hello"))
    assert failed.value.reason == reason


def test_an_unknown_guardrail_is_a_failure_not_an_allow(bedrock_guardrail):
    config = _config(
        kind="bedrock", url=bedrock_guardrail.base_url, guardrail_id="other", guardrail_version="1"
    )
    with pytest.raises(ScannerFailed, match="ResourceNotFoundException"):
        _scan(config, _request("hello"))


# --- A Presidio analyzer, against a real server ------------------------------------------------


def _presidio(server: PresidioServer, **fields) -> ScannerConfig:
    return _config(kind="presidio", url=server.base_url, **fields)


def test_presidio_findings_above_the_threshold_block_and_name_only_their_types(presidio):
    verdict = _scan(_presidio(presidio), _request("Write to john@example.com", "call John Smith"))
    assert verdict.action == "block"
    assert verdict.reasons == ("EMAIL_ADDRESS", "PERSON")
    sent = presidio.requests[-1].json
    assert sent["language"] == "en" and sent["score_threshold"] == 0.5
    assert sent["text"] == "Write to john@example.com\ncall John Smith"


def test_presidio_below_the_threshold_or_outside_the_entities_allows(presidio):
    assert _scan(_presidio(presidio), _request("maybe tomorrow")).action == "allow"
    only_email = _presidio(presidio, entities=("EMAIL_ADDRESS",), on_detect="flag")
    assert _scan(only_email, _request("call John Smith")).action == "allow"
    assert presidio.requests[-1].json["entities"] == ["EMAIL_ADDRESS"]
    assert _scan(only_email, _request("mail a@b.io")).action == "flag"


@pytest.mark.parametrize(
    ("behaviour", "reason"),
    [
        ("error500", "unavailable"),
        ("malformed_json", "bad_response"),
        ("no_action", "bad_response"),
        ("hang", "timeout"),
    ],
)
def test_a_misbehaving_presidio_is_a_typed_failure(presidio, behaviour, reason):
    presidio.behaviour = behaviour
    with pytest.raises(ScannerFailed) as failed:
        _scan(_presidio(presidio, timeout=0.3), _request("hello"))
    assert failed.value.reason == reason


# --- Through the gateway ---------------------------------------------------------------------


pytestmark_db = pytest.mark.django_db


@pytestmark_db
def test_a_prompt_the_scanner_blocks_gets_the_error_json_and_never_reaches_the_provider(
    client, principals, key_a, upstream, http_scanner
):
    route_alias("default", upstream.base_url)
    _scanner(url=http_scanner.base_url, tenant=principals.tenant_a)
    response = chat(client, key_a, [{"role": "user", "content": "an ATTACK, please"}])
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "request_blocked_by_scanner"
    assert error["type"] == "invalid_request_error"
    assert response["X-Request-ID"] in error["message"]
    assert "guard" not in error["message"] and "matched" not in error["message"]
    assert upstream.requests == []
    event = SecurityEvent.objects.get()
    assert (event.kind, event.action, event.tenant) == ("scanner", "blocked", principals.tenant_a)
    assert event.reasons == ["scanner:guard", "phase:pre_call", "matched:ATTACK"]
    assert event.score == 0.97 and event.request_id == response["X-Request-ID"]
    assert UsageRecord.objects.get().error_code == "request_blocked_by_scanner"


@pytestmark_db
def test_an_allowed_prompt_is_answered_after_the_scanner_read_every_part(
    client, principals, key_a, upstream, http_scanner
):
    route_alias("default", upstream.base_url)
    _scanner(url=http_scanner.base_url)
    response = chat(
        client,
        key_a,
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}],
        tools=[{"type": "function", "function": {"name": "weather", "parameters": {}}}],
    )
    assert response.status_code == 200, response.content
    assert response.json()["choices"][0]["message"]["content"] == "Happy to help."
    sent = http_scanner.requests[-1].json
    assert [(t["role"], t["kind"]) for t in sent["texts"]] == [
        ("system", "message"),
        ("user", "message"),
        ("tools", "tool_definition"),
    ]
    assert sent["tenant"]["slug"] == "tenant-a" and sent["phase"] == "pre_call"
    assert not SecurityEvent.objects.exists()


@pytestmark_db
def test_a_tool_result_carrying_an_attack_is_seen_by_the_scanner_and_blocked(
    client, principals, key_a, upstream, http_scanner
):
    route_alias("default", upstream.base_url)
    _scanner(url=http_scanner.base_url)
    response = chat(client, key_a, _tool_turns(ATTACK_TOOL_RESULT))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "request_blocked_by_scanner"
    texts = http_scanner.requests[-1].json["texts"]
    assert {"role": "tool", "kind": "tool_result", "param": "messages[2].content"}.items() <= (
        texts[-1].items()
    )
    assert texts[-1]["text"] == ATTACK_TOOL_RESULT
    arguments = [t for t in texts if t["kind"] == "tool_call"]
    assert [t["param"] for t in arguments] == [
        "messages[1].tool_calls[0].function.name",
        "messages[1].tool_calls[0].function.arguments",
    ]
    assert upstream.requests == []


@pytestmark_db
def test_a_flag_lets_the_prompt_through_and_is_recorded(
    client, principals, key_a, upstream, http_scanner
):
    route_alias("default", upstream.base_url)
    http_scanner.flag_words = ["curious"]
    _scanner(url=http_scanner.base_url)
    response = chat(client, key_a, [{"role": "user", "content": "a curious question"}])
    assert response.status_code == 200
    event = SecurityEvent.objects.get()
    assert (event.kind, event.action) == ("scanner", "flagged")
    assert event.reasons == ["scanner:guard", "phase:pre_call", "seen:curious"]


@pytestmark_db
@pytest.mark.parametrize("behaviour", ["hang", "error500", "malformed_json"])
def test_a_failing_scanner_fails_open_or_closed_as_configured_and_is_recorded(
    client, principals, key_a, upstream, http_scanner, behaviour
):
    route_alias("default", upstream.base_url)
    http_scanner.behaviour = behaviour
    scanner = _scanner(url=http_scanner.base_url, timeout_ms=300, fail_mode="open")
    reason = {"hang": "timeout", "error500": "unavailable", "malformed_json": "bad_response"}

    passed = chat(client, key_a, [{"role": "user", "content": "Hello"}])
    assert passed.status_code == 200
    event = SecurityEvent.objects.get()
    assert (event.kind, event.action) == ("scanner_error", "flagged")
    assert event.reasons == ["scanner:guard", "phase:pre_call", reason[behaviour], "fail_open"]

    scanner.fail_mode = "closed"
    scanner.save()
    refused = chat(client, key_a, [{"role": "user", "content": "Hello"}])
    assert refused.status_code == 503
    error = refused.json()["error"]
    assert (error["code"], error["type"]) == ("scanner_unavailable", "api_error")
    assert refused["X-Request-ID"] in error["message"]
    closed = SecurityEvent.objects.get(action="blocked")
    assert closed.kind == "scanner_error"
    assert closed.reasons == ["scanner:guard", "phase:pre_call", reason[behaviour], "fail_closed"]
    assert len(upstream.requests) == 1  # only the request that passed open


@pytestmark_db
def test_scanners_run_together_within_the_total_deadline(
    client, principals, key_a, upstream, settings
):
    """Two slow scanners, each allowed 10 s: the request's deadline ends both, and each one's
    fail mode decides (here one open, one closed: refused)."""
    settings.LLMP_SCANNERS_DEADLINE_MS = 300
    route_alias("default", upstream.base_url)
    with HttpScannerServer("hang") as slow_a, HttpScannerServer("hang") as slow_b:
        slow_a.hang_seconds = slow_b.hang_seconds = 3
        _scanner(name="slow-a", url=slow_a.base_url, timeout_ms=10_000, fail_mode="open")
        _scanner(name="slow-b", url=slow_b.base_url, timeout_ms=10_000, fail_mode="closed")
        response = chat(client, key_a, [{"role": "user", "content": "Hello"}])
        assert len(slow_a.requests) == 1 and len(slow_b.requests) == 1  # both were asked
    assert response.status_code == 503
    reasons = sorted(e.reasons for e in SecurityEvent.objects.all())
    assert reasons == [
        ["scanner:slow-a", "phase:pre_call", "timeout", "fail_open"],
        ["scanner:slow-b", "phase:pre_call", "timeout", "fail_closed"],
    ]


@pytestmark_db
def test_a_scanner_of_tenant_a_never_runs_for_tenant_b_nor_on_another_alias(
    client, principals, key_a, key_b, upstream, http_scanner
):
    route_alias("default", upstream.base_url)
    other = route_alias("other", upstream.base_url)
    _scanner(url=http_scanner.base_url, tenant=principals.tenant_a)
    _scanner(name="other-only", url=http_scanner.base_url, alias=other)
    attack = [{"role": "user", "content": "an ATTACK"}]
    assert chat(client, key_b, attack).status_code == 200  # tenant B: no scanner of its own
    assert http_scanner.requests == []
    assert not SecurityEvent.objects.filter(tenant=principals.tenant_b).exists()
    assert chat(client, key_a, attack).status_code == 400
    assert [r.json["scanner"] for r in http_scanner.requests] == ["guard"]


@pytestmark_db
def test_a_disabled_scanner_does_not_run(client, principals, key_a, upstream, http_scanner):
    route_alias("default", upstream.base_url)
    _scanner(url=http_scanner.base_url, enabled=False)
    assert chat(client, key_a, [{"role": "user", "content": "an ATTACK"}]).status_code == 200
    assert http_scanner.requests == []


@pytestmark_db
def test_a_reply_the_post_call_scanner_blocks_is_withheld(
    client, principals, key_a, upstream, http_scanner
):
    route_alias("default", upstream.base_url)
    upstream.reply = "Sure: ATTACK payload follows."
    _scanner(url=http_scanner.base_url, pre_call=False, post_call=True)
    response = chat(client, key_a, [{"role": "user", "content": "Hello"}], temperature=0)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "response_blocked_by_scanner"
    assert "ATTACK" not in response.content.decode()
    sent = http_scanner.requests[-1].json
    assert sent["phase"] == "post_call"
    assert sent["texts"] == [
        {
            "index": 0,
            "role": "assistant",
            "kind": "reply",
            "param": "choices[0].message.content",
            "text": "Sure: ATTACK payload follows.",
        }
    ]
    event = SecurityEvent.objects.get()
    assert (event.kind, event.action) == ("scanner", "blocked")
    assert event.reasons[:2] == ["scanner:guard", "phase:post_call"]
    # Metered once, with the tokens the provider spent, and not cached for the next caller.
    usage = UsageRecord.objects.get()
    assert usage.error_code == "response_blocked_by_scanner" and usage.completion_tokens > 0
    again = chat(client, key_a, [{"role": "user", "content": "Hello"}], temperature=0)
    assert again.status_code == 400 and len(upstream.requests) == 2


def test_a_streamed_reply_is_held_until_checked_then_sent_or_refused(
    gateway_server, principals, key_a, upstream, http_scanner
):
    route_alias("default", upstream.base_url)
    upstream.reply = "A perfectly fine answer in several words."
    _scanner(url=http_scanner.base_url, pre_call=False, post_call=True)
    body = {
        "model": "default",
        "messages": [{"role": "user", "content": "Hello"}],
        "stream": True,
    }
    headers = {"Authorization": f"Bearer {key_a}"}
    url = f"{gateway_server}/v1/chat/completions"
    passed = httpx.post(url, json=body, headers=headers, timeout=30)
    assert passed.status_code == 200
    assert passed.headers["content-type"] == "text/event-stream"
    lines = passed.text.splitlines()
    chunks = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "A perfectly fine answer in several words."
    assert len(chunks) > 3  # still chunks, sent together after the check
    assert passed.text.rstrip().endswith("data: [DONE]")

    upstream.reply = "Here is the ATTACK you asked for, word by word."
    refused = httpx.post(url, json=body, headers=headers, timeout=30)
    # Refused before the first byte: an error answer, not a 200 with an error event.
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "response_blocked_by_scanner"
    assert "ATTACK" not in refused.text


@pytestmark_db
def test_bedrock_and_presidio_scanners_guard_a_request_end_to_end(
    client, principals, key_a, upstream, bedrock_guardrail, presidio
):
    route_alias("default", upstream.base_url)
    _scanner(
        name="bedrock",
        kind="bedrock",
        url=bedrock_guardrail.base_url,
        guardrail_id=bedrock_guardrail.guardrail_id,
        guardrail_version="DRAFT",
        region="eu-west-1",
    )
    _scanner(name="pii", kind="presidio", url=presidio.base_url, pre_call=False, post_call=True)
    blocked = chat(client, key_a, _tool_turns(ATTACK_TOOL_RESULT))
    assert blocked.status_code == 400
    assert blocked.json()["error"]["code"] == "request_blocked_by_scanner"
    assert bedrock_guardrail.requests[-1].json["content"][-1] == {
        "text": {"text": ATTACK_TOOL_RESULT}
    }
    event = SecurityEvent.objects.get()
    assert "contentPolicy:PROMPT_ATTACK" in event.reasons and "scanner:bedrock" in event.reasons

    upstream.reply = "You can reach John Smith at john@example.com."
    withheld = chat(client, key_a, [{"role": "user", "content": "Who is the contact?"}])
    assert withheld.status_code == 400
    assert withheld.json()["error"]["code"] == "response_blocked_by_scanner"
    assert "john@example.com" not in withheld.content.decode()
    (pii,) = [e for e in SecurityEvent.objects.all() if "scanner:pii" in e.reasons]
    assert pii.reasons == ["scanner:pii", "phase:post_call", "EMAIL_ADDRESS", "PERSON"]

    upstream.reply = "The contact is the front desk."
    assert chat(client, key_a, [{"role": "user", "content": "Who?"}]).status_code == 200


@pytestmark_db
def test_the_openai_sdk_gets_a_typed_error_for_a_blocked_prompt(
    gateway_server, principals, key_a, upstream, http_scanner
):
    from openai import BadRequestError, OpenAI

    route_alias("default", upstream.base_url)
    _scanner(url=http_scanner.base_url, post_call=True)
    sdk = OpenAI(base_url=f"{gateway_server}/v1", api_key=key_a, max_retries=0, timeout=30)
    answer = sdk.chat.completions.create(
        model="default", messages=[{"role": "user", "content": "Hello"}]
    )
    assert answer.choices[0].message.content == "Happy to help."
    with pytest.raises(BadRequestError) as refused:
        sdk.chat.completions.create(
            model="default", messages=[{"role": "user", "content": "an ATTACK"}]
        )
    assert refused.value.code == "request_blocked_by_scanner"
    stream = sdk.chat.completions.create(
        model="default", messages=[{"role": "user", "content": "Hello"}], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == (
        "Happy to help."
    )


def test_no_scanner_configured_means_no_scanner_call(db, principals, key_a, upstream, client):
    """With no scanner, the request path reads none (the routing snapshot carries an empty
    tuple) and answers as before."""
    route_alias("default", upstream.base_url)
    with httpx.Client():
        response = chat(client, key_a, [{"role": "user", "content": "an ATTACK"}])
    assert response.status_code == 200
    assert not SecurityEvent.objects.exists()


@pytestmark_db
def test_the_scanners_credential_never_reaches_a_log_an_event_or_the_client(
    client, principals, key_a, upstream, http_scanner, monkeypatch, capfd, caplog
):
    secret = "Bearer scanner-secret-7f3a9c1e5b"
    monkeypatch.setenv("PROVIDER_SCANNER_TOKEN", secret)
    http_scanner.required_key = "something-else"  # the scanner refuses it: 401
    route_alias("default", upstream.base_url)
    _scanner(url=http_scanner.base_url, auth_secret_ref="env:PROVIDER_SCANNER_TOKEN")
    response = chat(client, key_a, [{"role": "user", "content": "Hello"}])
    assert response.status_code == 503
    assert http_scanner.requests[-1].headers["authorization"] == secret  # it was sent
    captured = capfd.readouterr()
    assert "scanner_failed" in caplog.text  # the failure is logged, without the value
    event = SecurityEvent.objects.get()
    assert event.reasons == ["scanner:guard", "phase:pre_call", "unavailable", "fail_closed"]
    places = (response.content.decode(), captured.out, captured.err, caplog.text, event.reasons)
    for place in map(str, places):
        assert "scanner-secret-7f3a9c1e5b" not in place
