"""Request limits, token limits and spend budgets, through the API.

The counters live in Redis when ``REDIS_URL`` is set (CI) and in-process otherwise; these tests
run against whichever is configured. The tests marked ``postgres``/``redis`` start real gateway
processes sharing one Redis.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import httpx
import pytest

from gateway import services
from gateway.models import ApiKey, ProviderDeployment, UsageRecord
from gateway.resilience.breaker import InProcessBreaker, set_breaker_store
from llmplatform.actors import SYSTEM

from .conftest import route_alias, set_tier, start_gateway_process
from .upstreams import OpenAIUpstream

pytestmark = pytest.mark.django_db


@pytest.fixture
def upstream():
    with OpenAIUpstream(reply="fine thanks") as server:
        yield server


def chat(client, key, *, content="hello there", user=None, max_tokens=10, stream=False):
    body = {
        "model": "default",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
    }
    if user is not None:
        body["user"] = user
    if stream:
        body["stream"] = True
    return client.post(
        "/v1/chat/completions",
        data=json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )


def expensive(alias_name: str = "default") -> None:
    """Prices of 1 and 2 USD per 1,000 tokens, so budgets are in whole cents."""
    ProviderDeployment.objects.filter(name=f"{alias_name}-deployment").update(
        input_price_per_1k=Decimal("1"), output_price_per_1k=Decimal("2")
    )


def test_a_key_over_its_per_minute_limit_gets_429_with_retry_after_and_headers(
    client, principals, key_a, upstream
):
    route_alias("default", upstream.base_url)
    set_tier(principals, key_requests_per_minute=2)
    _, other_key = services.api_key_create(actor=SYSTEM, tenant=principals.tenant_a, name="other")

    first, second, third = (chat(client, key_a) for _ in range(3))
    assert first.status_code == second.status_code == 200
    assert first["x-ratelimit-limit-requests"] == "2"
    assert first["x-ratelimit-remaining-requests"] == "1"
    assert second["x-ratelimit-remaining-requests"] == "0"
    assert first["x-ratelimit-reset-requests"].endswith("s")
    assert "x-ratelimit-limit-tokens" in first and "x-ratelimit-remaining-tokens" in first

    assert third.status_code == 429
    error = third.json()["error"]
    assert error["code"] == "rate_limit_exceeded"
    assert "API key's per-minute limit is 2 requests" in error["message"]
    assert 1 <= int(third["Retry-After"]) <= 60
    assert third["x-ratelimit-remaining-requests"] == "0"
    # Only two requests reached the provider; another key of the tenant is not affected.
    assert len(upstream.requests) == 2
    assert chat(client, other_key).status_code == 200


def test_end_users_are_limited_one_by_one_and_the_tenant_over_all_its_keys(
    client, principals, key_a, upstream
):
    route_alias("default", upstream.base_url)
    set_tier(principals, user_requests_per_minute=1, requests_per_hour=3)
    assert chat(client, key_a, user="u1").status_code == 200
    refused = chat(client, key_a, user="u1")
    assert refused.status_code == 429
    assert "end user's per-minute limit" in refused.json()["error"]["message"]
    assert chat(client, key_a, user="u2").status_code == 200

    _, second_key = services.api_key_create(actor=SYSTEM, tenant=principals.tenant_a, name="two")
    assert chat(client, second_key).status_code == 200  # the tenant's third this hour
    tenant_refused = chat(client, second_key)
    assert tenant_refused.status_code == 429
    assert "tenant's hourly limit is 3 requests" in tenant_refused.json()["error"]["message"]
    assert int(tenant_refused["Retry-After"]) <= 3600


def test_a_refused_request_counts_nowhere(client, principals, key_a, key_b, upstream):
    """A 429 adds to no counter: the other tenant, and the same tenant's other limits, are
    untouched, and the refused request was never sent upstream."""
    route_alias("default", upstream.base_url)
    set_tier(principals, user_requests_per_minute=1, key_requests_per_minute=5)
    assert chat(client, key_a, user="u1").status_code == 200
    for _ in range(3):
        assert chat(client, key_a, user="u1").status_code == 429
    ok = chat(client, key_a, user="u2")
    assert ok.status_code == 200
    # key counter: 2 requests admitted of 5 (the refused ones did not count)
    assert ok["x-ratelimit-remaining-requests"] in {"0", "3"}  # user u2's 1/min is tighter
    assert chat(client, key_b, user="u1").status_code == 200
    assert len(upstream.requests) == 3


def test_tokens_are_reserved_up_front_and_corrected_to_actual_use(
    client, principals, key_a, upstream
):
    route_alias("default", upstream.base_url)
    set_tier(principals, tokens_per_minute=300, max_output_tokens=0)
    # The reservation is the prompt's estimate plus max_tokens; what stays counted is the
    # actual usage the upstream reports (2 prompt words + 2 reply words here).
    first = chat(client, key_a, max_tokens=250)
    assert first.status_code == 200
    assert first.json()["usage"]["total_tokens"] == 4
    second = chat(client, key_a, max_tokens=250)
    assert second.status_code == 200, "the first request's unused reservation was given back"
    assert int(second["x-ratelimit-remaining-tokens"]) >= 300 - 250 - 8

    too_big = chat(client, key_a, max_tokens=400)
    assert too_big.status_code == 429
    error = too_big.json()["error"]
    assert error["code"] == "tokens_rate_limit_exceeded"
    assert "300 tokens" in error["message"]
    assert "x-ratelimit-limit-tokens" in too_big


def test_a_failed_request_gives_its_reservation_back(client, principals, key_a, upstream):
    route_alias("default", upstream.base_url)
    set_tier(principals, tokens_per_minute=600, max_output_tokens=0)
    upstream.behaviour = "bad_request"
    assert chat(client, key_a, max_tokens=500).status_code == 502
    upstream.behaviour = "ok"
    assert chat(client, key_a, max_tokens=500).status_code == 200


def test_streams_are_corrected_to_what_was_streamed(gateway_server, principals, key_a, upstream):
    route_alias("default", upstream.base_url)
    set_tier(principals, tokens_per_minute=300, max_output_tokens=0)
    body = {
        "model": "default",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 250,
        "stream": True,
    }
    headers = {"Authorization": f"Bearer {key_a}"}
    for _ in range(3):
        response = httpx.post(
            f"{gateway_server}/v1/chat/completions", json=body, headers=headers, timeout=10
        )
        assert response.status_code == 200
        assert response.text.endswith("data: [DONE]\n\n")


def test_the_tenant_daily_budget_refuses_requests_that_could_exceed_it(
    client, principals, key_a, upstream
):
    route_alias("default", upstream.base_url)
    expensive()
    plan = principals.tenant_a.plan
    # Reserved for max_tokens=5 and "hello there" (estimated 3 tokens): 3*0.001 + 5*0.002 =
    # 0.013 USD; used: 2 prompt + 2 reply words = 0.006 USD. The second request would need
    # 0.006 + 0.013 > 0.018.
    plan.daily_budget = Decimal("0.018")
    plan.save()
    assert chat(client, key_a, max_tokens=5).status_code == 200
    refused = chat(client, key_a, max_tokens=5)
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "budget_exceeded" and error["type"] == "insufficient_quota"
    assert "tenant's daily budget of $0.02" in error["message"]
    assert int(refused["Retry-After"]) <= 86400
    spent = sum(r.cost for r in UsageRecord.objects.filter(status_code=200))
    assert spent <= plan.daily_budget


def test_a_key_budget_applies_to_that_key_only(client, principals, key_a, upstream):
    route_alias("default", upstream.base_url)
    expensive()
    key = ApiKey.objects.get(name="a-key")
    key.monthly_budget = Decimal("0.015")
    key.save()
    assert chat(client, key_a, max_tokens=5).status_code == 200
    refused = chat(client, key_a, max_tokens=5)
    assert refused.status_code == 429
    assert "API key's monthly budget" in refused.json()["error"]["message"]
    _, other = services.api_key_create(actor=SYSTEM, tenant=principals.tenant_a, name="other")
    assert chat(client, other, max_tokens=5).status_code == 200


@pytest.fixture
def redis_down(settings):
    """Redis unreachable: a closed loopback port."""
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    set_breaker_store(InProcessBreaker())
    yield
    set_breaker_store(None)


def test_redis_down_by_default_lets_rate_limited_requests_through(
    client, principals, key_a, upstream, redis_down
):
    route_alias("default", upstream.base_url)
    set_tier(principals, requests_per_minute=1)
    assert chat(client, key_a).status_code == 200
    assert chat(client, key_a).status_code == 200  # fail open: the limit cannot be counted


def test_redis_down_by_default_refuses_requests_under_a_budget(
    client, principals, key_a, upstream, redis_down
):
    route_alias("default", upstream.base_url)
    set_tier(principals, daily_budget=Decimal("10"))
    refused = chat(client, key_a)
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "limits_unavailable"
    assert refused["Retry-After"] == "1"
    assert upstream.requests == []


def test_redis_down_settings_can_invert_both(
    client, principals, key_a, upstream, redis_down, settings
):
    route_alias("default", upstream.base_url)
    settings.LLMP_LIMITS_REDIS_DOWN_REQUESTS = "closed"
    settings.LLMP_LIMITS_REDIS_DOWN_BUDGETS = "open"
    set_tier(principals, requests_per_minute=100)
    assert chat(client, key_a).status_code == 503
    set_tier(
        principals,
        requests_per_minute=0,
        requests_per_hour=0,
        requests_per_day=0,
        tokens_per_minute=0,
        tokens_per_day=0,
        daily_budget=Decimal("10"),
    )
    from gateway.pipeline import authenticate

    authenticate.clear_cache()
    assert chat(client, key_a).status_code == 200


def _fire(urls: list[str], key: str, count: int, body: dict) -> list[int]:
    def one(i: int) -> int:
        response = httpx.post(
            f"{urls[i % len(urls)]}/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )
        return response.status_code

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(one, range(count)))


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.slow
def test_two_gateway_processes_sharing_redis_admit_exactly_the_limit(
    transactional_db, principals, key_a, upstream
):
    route_alias("default", upstream.base_url)
    set_tier(principals, requests_per_minute=10, tokens_per_minute=0, tokens_per_day=0)
    upstream.on_request = lambda request: time.sleep(0.3)
    first, url_a = start_gateway_process()
    second, url_b = start_gateway_process()
    try:
        body = {"model": "default", "messages": [{"role": "user", "content": "hi"}]}
        statuses = _fire([url_a, url_b], key_a, 40, body)
    finally:
        for process in (first, second):
            process.terminate()
            process.wait(timeout=10)
    assert statuses.count(200) == 10, statuses
    assert statuses.count(429) == 30
    assert len(upstream.requests) == 10


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.slow
def test_a_spend_budget_holds_under_concurrent_load_on_two_processes(
    transactional_db, principals, key_a, upstream
):
    route_alias("default", upstream.base_url)
    set_tier(
        principals,
        requests_per_minute=0,
        requests_per_hour=0,
        requests_per_day=0,
        tokens_per_minute=0,
        tokens_per_day=0,
        max_output_tokens=0,
    )
    expensive()
    plan = principals.tenant_a.plan
    # Each request reserves 3*0.001 + 100*0.002 = 0.203 USD: 5 fit in 1.02.
    plan.daily_budget = Decimal("1.02")
    plan.save()
    upstream.on_request = lambda request: time.sleep(0.5)
    first, url_a = start_gateway_process()
    second, url_b = start_gateway_process()
    try:
        body = {
            "model": "default",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 100,
        }
        statuses = _fire([url_a, url_b], key_a, 30, body)
    finally:
        for process in (first, second):
            process.terminate()
            process.wait(timeout=10)
    # All 30 were in flight together: exactly the 5 whose reservations fit were let through.
    assert statuses.count(200) == 5, statuses
    assert statuses.count(429) == 25
    spent = sum(r.cost for r in UsageRecord.objects.filter(status_code=200))
    assert 0 < spent <= plan.daily_budget


def test_batched_corrections_reach_the_counters(
    gateway_server, principals, key_a, upstream, settings
):
    """In production corrections are gathered for a few milliseconds and sent together."""
    settings.LLMP_AFTER_ANSWER_INLINE = False
    settings.LLMP_USAGE_FLUSH_MS = 50
    route_alias("default", upstream.base_url)
    set_tier(principals, tokens_per_minute=1000, max_output_tokens=0)
    body = {"model": "default", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 600}
    headers = {"Authorization": f"Bearer {key_a}"}
    first = httpx.post(
        f"{gateway_server}/v1/chat/completions", json=body, headers=headers, timeout=10
    )
    assert first.status_code == 200
    time.sleep(0.3)  # the correction is sent within CorrectionBuffer.CORRECTION_MS
    second = httpx.post(
        f"{gateway_server}/v1/chat/completions", json=body, headers=headers, timeout=10
    )
    assert second.status_code == 200, "the first reservation of 601 tokens was corrected"
    assert int(second.headers["x-ratelimit-remaining-tokens"]) >= 1000 - 601 - 10
