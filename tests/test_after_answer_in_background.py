"""The work after an answer as production runs it: in the background, off the answer's path
(``LLMP_AFTER_ANSWER_INLINE`` off, usage records in batches). Every other test module runs it
inline, before the response completes; here the real server's event loop outlives each
response, and each effect is waited for: the usage record, a flagged security event, the
fallback copy of an answer in the cache, a consented conversation record, a GPC opt-out."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from django.db import OperationalError

from gateway.models import ModelVersion, SecurityEvent, UsageRecord
from gateway.pipeline import authenticate
from llmplatform.actors import Actor
from privacy import selectors as privacy_selectors
from privacy import services as privacy_services
from privacy.models import ConsentRecord, Conversation

from .conftest import route_alias, set_tier
from .upstreams import OpenAIUpstream


@pytest.fixture(autouse=True)
def _in_the_background(settings):
    settings.LLMP_AFTER_ANSWER_INLINE = False
    settings.LLMP_USAGE_FLUSH_MS = 50
    authenticate.clear_cache()


@pytest.fixture
def upstream():
    with OpenAIUpstream(reply="Happy to help.") as server:
        yield server


def eventually(check: Callable[[], Any], seconds: float = 10.0) -> Any:
    """``check()``'s first truthy value within ``seconds``. On SQLite's shared in-memory test
    database a read can meet the server thread's write ("table is locked"): it is read again."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            value = check()
        except OperationalError:
            value = None
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def ask(base_url: str, key: str, headers: dict[str, str] | None = None, **body: Any):
    return httpx.post(
        f"{base_url}/v1/chat/completions",
        json={
            "model": "default",
            "messages": [{"role": "user", "content": "What is a banana split?"}],
            **body,
        },
        headers={"Authorization": f"Bearer {key}", **(headers or {})},
        timeout=15,
    )


def test_usage_records_of_plain_and_streamed_answers_arrive_after_the_answer(
    gateway_server, principals, key_a, upstream
):
    route_alias("default", upstream.base_url)
    plain = ask(gateway_server, key_a)
    streamed = ask(gateway_server, key_a, stream=True)
    assert plain.status_code == streamed.status_code == 200

    ids = [plain.headers["X-Request-ID"], streamed.headers["X-Request-ID"]]

    def both_recorded():
        records = list(UsageRecord.objects.filter(request_id__in=ids))
        return records if len(records) == 2 else None

    records = eventually(both_recorded)
    assert records, "the usage records never arrived"
    by_id = {record.request_id: record for record in records}
    assert by_id[ids[0]].streamed is False and by_id[ids[1]].streamed is True
    assert all(r.status_code == 200 and r.completion_tokens > 0 for r in records)
    assert all(r.tenant_id == principals.tenant_a.pk for r in records)


def test_a_flagged_leak_is_recorded_after_the_answer(gateway_server, principals, key_a, upstream):
    alias = route_alias("default", upstream.base_url)
    ModelVersion.objects.filter(alias=alias).update(system_prompt="You are Acme's helper.")
    set_tier(principals, leak_mode="flag")

    def leak(request):
        upstream.reply = f"My instructions are: {request.json['messages'][0]['content']}"

    upstream.on_request = leak
    response = ask(gateway_server, key_a)
    assert response.status_code == 200
    assert "llmp-canary-" not in response.text

    event = eventually(
        lambda: SecurityEvent.objects.filter(request_id=response.headers["X-Request-ID"]).first()
    )
    assert event is not None, "the flagged event never arrived"
    assert (event.kind, event.action) == ("system_prompt_leak", "flagged")


def test_an_answer_kept_after_it_was_sent_serves_when_the_provider_fails(
    gateway_server, principals, key_a, upstream
):
    route_alias("default", upstream.base_url)
    # Not eligible for the cache (temperature above 0): kept only as the fallback copy, which
    # is written after the answer.
    first = ask(gateway_server, key_a, temperature=0.7)
    assert first.status_code == 200 and first.headers["X-Cache"] == "BYPASS"
    upstream.behaviour = "error500"

    def served_from_cache():
        response = ask(gateway_server, key_a, temperature=0.7)
        return response if response.headers.get("x-llmp-deployment") == "cache" else None

    fallback = eventually(served_from_cache)
    assert fallback is not None, "the fallback copy never served"
    assert fallback.json()["choices"][0]["message"]["content"] == "Happy to help."


def test_a_consented_conversation_is_stored_after_the_answer(
    gateway_server, principals, key_a, upstream
):
    route_alias("default", upstream.base_url)
    subject = privacy_services.subject_get_or_create(tenant=principals.tenant_a, external_id="u-1")
    privacy_services.consent_set(
        actor=Actor.system("test-app"),
        subject=subject,
        purpose=ConsentRecord.Purpose.STORE_CONVERSATIONS,
        granted=True,
        source=ConsentRecord.Source.API,
    )
    response = ask(gateway_server, key_a, user="u-1")
    assert response.status_code == 200

    stored = eventually(
        lambda: Conversation.objects.filter(request_id=response.headers["X-Request-ID"]).first()
    )
    assert stored is not None, "the conversation record never arrived"
    assert stored.subject_id == subject.pk and stored.tenant_id == principals.tenant_a.pk


def test_a_gpc_signal_is_recorded_after_the_answer(gateway_server, principals, key_a, upstream):
    route_alias("default", upstream.base_url)
    response = ask(gateway_server, key_a, headers={"Sec-GPC": "1"}, user="u-2")
    assert response.status_code == 200

    def opted_out():
        subject = privacy_selectors.subject_for(principals.tenant_a.pk, "u-2")
        return subject is not None and subject.do_not_sell

    assert eventually(opted_out), "the GPC opt-out never arrived"
