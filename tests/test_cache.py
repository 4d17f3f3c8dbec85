"""The response cache: repeats served without an upstream call, per tenant, invalidated by
version changes, the admin and the API, replayed as streams, erasable per data subject."""

from __future__ import annotations

import httpx
import pytest

from gateway import cache as response_cache
from gateway import services
from gateway.models import ModelVersion, TenantPlan, UsageRecord
from gateway.pipeline import authenticate
from llmplatform.actors import Actor
from llmplatform.models import AuditEvent

from .conftest import route_alias
from .upstreams import OpenAIUpstream

QUESTION = {
    "model": "default",
    "temperature": 0,
    "messages": [{"role": "user", "content": "What is the capital of France?"}],
}


@pytest.fixture(autouse=True)
def _fresh_state():
    authenticate.clear_cache()
    response_cache._local.clear()
    yield


@pytest.fixture
def upstream():
    with OpenAIUpstream() as server:
        server.reply = "Paris is the capital"
        yield server


def ask(base_url: str, key: str, body: dict | None = None, **headers) -> httpx.Response:
    return httpx.post(
        f"{base_url}/v1/chat/completions",
        json=body or QUESTION,
        headers={"Authorization": f"Bearer {key}", **headers},
        timeout=10,
    )


def test_a_repeated_temperature_zero_request_is_a_hit_without_an_upstream_call(
    gateway_server, principals, key_a, upstream
):
    route_alias("default", upstream.base_url)
    first = ask(gateway_server, key_a)
    second = ask(gateway_server, key_a)
    assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("MISS", "HIT")
    assert len(upstream.requests) == 1
    assert second.json()["choices"][0]["message"]["content"] == "Paris is the capital"
    assert second.json()["usage"] == first.json()["usage"]
    assert second.headers["x-llmp-deployment"] == "default-deployment"
    hit = UsageRecord.objects.get(request_id=second.headers["X-Request-ID"])
    assert hit.cache_hit and hit.cost == 0 and hit.completion_tokens == 4
    assert not UsageRecord.objects.get(request_id=first.headers["X-Request-ID"]).cache_hit


def test_sampling_requests_bypass_the_cache_unless_the_tenant_opts_in(
    gateway_server, principals, key_a, upstream
):
    route_alias("default", upstream.base_url)
    warm = {**QUESTION, "temperature": 0.8}
    assert ask(gateway_server, key_a, warm).headers["X-Cache"] == "BYPASS"
    assert ask(gateway_server, key_a, warm).headers["X-Cache"] == "BYPASS"
    assert len(upstream.requests) == 2
    TenantPlan.objects.filter(tenant=principals.tenant_a).update(cache_nonzero_temperature=True)
    authenticate.clear_cache()
    assert ask(gateway_server, key_a, warm).headers["X-Cache"] == "MISS"
    assert ask(gateway_server, key_a, warm).headers["X-Cache"] == "HIT"
    assert len(upstream.requests) == 3


def test_tenants_never_share_entries(gateway_server, key_a, key_b, upstream):
    route_alias("default", upstream.base_url)
    ask(gateway_server, key_a)
    assert ask(gateway_server, key_b).headers["X-Cache"] == "MISS"
    assert len(upstream.requests) == 2


def test_a_changed_system_prompt_or_version_gets_fresh_answers(gateway_server, key_a, upstream):
    route_alias("default", upstream.base_url)
    ask(gateway_server, key_a)
    assert ask(gateway_server, key_a).headers["X-Cache"] == "HIT"
    version = ModelVersion.objects.get()
    version.system_prompt = "Answer in French."
    version.save()
    assert ask(gateway_server, key_a).headers["X-Cache"] == "MISS"
    assert upstream.requests[-1].json["messages"][0]["content"].startswith("Answer in French.")


def test_the_invalidation_api_needs_the_admin_scope_and_clears_the_tenant(
    gateway_server, principals, key_a, key_b, upstream
):
    route_alias("default", upstream.base_url)
    ask(gateway_server, key_a)
    ask(gateway_server, key_b)
    url = f"{gateway_server}/v1/cache/invalidate"
    denied = httpx.post(
        url, json={"model": "default"}, headers={"Authorization": f"Bearer {key_a}"}
    )
    assert denied.status_code == 403
    _, admin_key = services.api_key_create(
        actor=Actor.for_user(principals.alice),
        tenant=principals.tenant_a,
        name="ops",
        scopes=["admin"],
    )
    done = httpx.post(
        url, json={"model": "default"}, headers={"Authorization": f"Bearer {admin_key}"}
    )
    assert done.status_code == 200 and done.json()["invalidated"] is True
    assert ask(gateway_server, key_a).headers["X-Cache"] == "MISS"
    assert ask(gateway_server, key_b).headers["X-Cache"] == "HIT"  # tenant B untouched
    assert AuditEvent.objects.filter(
        action="cache.invalidate_tenant", tenant=principals.tenant_a
    ).exists()


def test_an_officer_invalidates_an_alias_from_the_admin(
    gateway_server, admin_client, key_a, upstream
):
    alias = route_alias("default", upstream.base_url)
    ask(gateway_server, key_a)
    response = admin_client.post(
        "/admin/gateway/modelalias/", {"action": "invalidate_cache", "_selected_action": [alias.pk]}
    )
    assert response.status_code == 302
    assert ask(gateway_server, key_a).headers["X-Cache"] == "MISS"
    event = AuditEvent.objects.get(action="cache.invalidate_alias")
    assert event.object_repr == "default" and event.actor == "user:admin"


def test_a_streamed_request_is_replayed_from_the_cache(gateway_server, key_a, upstream):
    route_alias("default", upstream.base_url)
    body = {**QUESTION, "stream": True}
    first = ask(gateway_server, key_a, body)
    second = ask(gateway_server, key_a, body)
    assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("MISS", "HIT")
    assert len(upstream.requests) == 1

    def text(response):
        import json

        events = [e.removeprefix("data: ") for e in response.text.strip().split("\n\n")]
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        return "".join(
            c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]
        )

    assert text(second) == text(first) == "Paris is the capital"
    # A plain request for the same question is answered from the streamed one's entry.
    assert ask(gateway_server, key_a).headers["X-Cache"] == "HIT"


def test_no_cache_skips_the_lookup_and_no_store_keeps_nothing(gateway_server, key_a, upstream):
    route_alias("default", upstream.base_url)
    ask(gateway_server, key_a, **{"Cache-Control": "no-store"})
    assert ask(gateway_server, key_a).headers["X-Cache"] == "MISS"
    assert (
        ask(gateway_server, key_a, **{"Cache-Control": "no-cache"}).headers["X-Cache"] == "BYPASS"
    )
    assert len(upstream.requests) == 3


def test_a_data_subjects_entries_can_be_purged(gateway_server, principals, key_a, upstream):
    route_alias("default", upstream.base_url)
    mine = {**QUESTION, "user": "subject-42"}
    other = {**QUESTION, "user": "subject-7"}
    ask(gateway_server, key_a, mine)
    ask(gateway_server, key_a, other)
    assert response_cache.purge_subject(principals.tenant_a.pk, "subject-42") == 1
    assert ask(gateway_server, key_a, mine).headers["X-Cache"] == "MISS"
    assert ask(gateway_server, key_a, other).headers["X-Cache"] == "HIT"


@pytest.mark.redis
@pytest.mark.postgres
def test_entries_live_in_redis_shared_by_every_process(
    gateway_server, second_gateway, principals, key_a, upstream
):
    from llmplatform.redis_client import sync_redis

    route_alias("default", upstream.base_url)
    assert ask(gateway_server, key_a).headers["X-Cache"] == "MISS"
    assert len(sync_redis().keys(f"llmp:rc:e:{principals.tenant_a.pk}:*")) == 1
    other = ask(second_gateway, key_a)
    assert other.status_code == 200 and other.headers["X-Cache"] == "HIT"
    assert len(upstream.requests) == 1


async def test_the_namespace_alone_is_the_one_a_lookup_uses():
    # A request the cache does not answer reads only the namespace (for the fallback copy of its
    # answer): it must be the namespace a later lookup of the same key uses, after any bumps.
    cache = response_cache.response_cache()
    key = response_cache.CacheKey(tenant_id=424242, alias="ns-probe", digest="d" * 64, subject=None)
    assert await cache.namespace(key) == (await cache.lookup(key))[0]
    cache.bump(key.ns_keys[1])
    cache.bump(key.ns_keys[2])
    cache.bump(key.ns_keys[2])
    namespace = await cache.namespace(key)
    assert namespace == (await cache.lookup(key))[0]
    assert namespace.split(".")[1:] != ["0", "0"]
