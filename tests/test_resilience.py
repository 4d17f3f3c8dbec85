"""Timeouts, retries, breakers and fallback chains, against real local upstreams that misbehave
on purpose. Each test asserts what the client gets, how many upstream calls were made, and how
long it took (bounds generous enough for a loaded CI machine, tight enough to mean something).

Most tests drive ``dispatch`` directly with hand-built targets (no database); the API-level
tests at the end go through the views.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import time
import uuid
from decimal import Decimal

import httpx
import pytest

from gateway.errors import UpstreamFailure
from gateway.models import AliasFallback, ProviderDeployment, UsageRecord
from gateway.pipeline import authenticate, dispatch
from gateway.pipeline.dispatch import CircuitOpen, DispatchPlan
from gateway.pipeline.route import Degraded, Target
from gateway.providers.base import (
    ChatMessage,
    ChatRequest,
    ChatResult,
    ProviderConfig,
    UpstreamBadResponse,
    UpstreamTimeout,
    Usage,
)
from gateway.resilience.breaker import InProcessBreaker
from gateway.resilience.policy import ResiliencePolicy
from gateway.resilience.redis_breaker import RedisBreaker
from gateway.resilience.retry import BackoffWait

from .conftest import route_alias
from .upstreams import OpenAIUpstream

# Fast-failing numbers: tests change what they are about.
FAST = {"backoff_base": 0.05, "backoff_max": 0.2, "total_timeout": 5.0}


@pytest.fixture
def primary():
    with OpenAIUpstream() as server:
        yield server


@pytest.fixture
def secondary():
    with OpenAIUpstream(reply="from the secondary") as server:
        yield server


@pytest.fixture
def breaker():
    return InProcessBreaker(on_transition=None)


_names = itertools.count()


def target(upstream: OpenAIUpstream, *, read_timeout: float = 30.0, **policy) -> Target:
    """A target on ``upstream`` with a name of its own (adapters and breakers are per name)."""
    name = f"dep-{next(_names)}-{uuid.uuid4().hex[:6]}"
    provider = ProviderConfig(
        name=f"{name}-provider",
        kind="openai",
        base_url=upstream.base_url,
        connect_timeout=2.0,
        read_timeout=read_timeout,
    )
    return Target(
        alias="default",
        version="v1",
        deployment=name,
        model="upstream-model",
        provider=provider,
        weight=100,
        system_prompt="",
        params={},
        input_price_per_1k=Decimal(0),
        output_price_per_1k=Decimal(0),
        policy=ResiliencePolicy(**{**FAST, **policy}),
    )


def plan(*targets: Target, breaker, **kwargs) -> DispatchPlan:
    def request_for(t: Target) -> ChatRequest:
        return ChatRequest(model=t.model, messages=[ChatMessage("user", "hello there")])

    return DispatchPlan("default", targets, request_for, breaker=breaker, **kwargs)


def then_ok(upstream: OpenAIUpstream, failures: int = 1) -> None:
    """Misbehave for the first ``failures`` calls, then answer normally."""

    def switch(_request) -> None:
        if len(upstream.requests) > failures:
            upstream.behaviour = "ok"

    upstream.on_request = switch


@pytest.fixture(autouse=True)
def waits(monkeypatch) -> list[float]:
    """The backoffs the retry loop scheduled, in order (what a wall clock would only guess)."""
    scheduled: list[float] = []
    original = dispatch._before_retry

    def record(state, deployment):
        scheduled.append(state.upcoming_sleep)
        original(state, deployment)

    monkeypatch.setattr(dispatch, "_before_retry", record)
    return scheduled


HANG = 5.0  # how long a hanging upstream stays silent: waiting for it would take this long


async def timed(coro):
    started = time.perf_counter()
    try:
        return await coro, time.perf_counter() - started
    except Exception as exc:
        exc.elapsed = time.perf_counter() - started
        raise


async def read_all(served) -> str:
    text = [served.first.content]
    async for delta in served.deltas:
        text.append(delta.content)
    return "".join(text)


# ---------------------------------------------------------------------------------------------
# Retries


async def test_a_500_is_retried_and_the_retry_answers(primary, breaker, waits):
    primary.behaviour = "error500"
    then_ok(primary)
    served, elapsed = await timed(dispatch.complete(plan(target(primary), breaker=breaker)))
    assert served.result.content == "hello there"
    assert (served.attempts, len(primary.requests)) == (2, 2)
    assert served.fallback_reason == "" and not served.degraded
    assert len(waits) == 1 and 0.05 <= waits[0] <= 0.1  # one jittered backoff
    assert elapsed >= waits[0]  # and it was waited


async def test_a_429_is_retried_no_sooner_than_its_retry_after(primary, breaker, waits):
    primary.behaviour, primary.retry_after = "rate_limited", "1"
    then_ok(primary)
    served, elapsed = await timed(dispatch.complete(plan(target(primary), breaker=breaker)))
    assert served.result.content == "hello there"
    assert len(primary.requests) == 2
    assert waits == [1.0]  # Retry-After, not the shorter backoff
    assert elapsed >= 1.0


async def test_a_retry_after_longer_than_accepted_moves_to_the_fallback_at_once(
    primary, secondary, breaker, waits
):
    primary.behaviour, primary.retry_after = "rate_limited", "30"
    first, second = target(primary, retry_after_max=2), target(secondary)
    served, _elapsed = await timed(dispatch.complete(plan(first, second, breaker=breaker)))
    assert served.result.content == "from the secondary"
    assert served.target == second and served.deployment == second.deployment
    assert served.fallback_reason == "upstream_unavailable"
    assert (len(primary.requests), len(secondary.requests), served.attempts) == (1, 1, 2)
    assert waits == []  # no backoff before moving on


async def test_a_connection_reset_is_retried_up_to_max_attempts(primary, breaker, waits):
    primary.behaviour = "reset"
    with pytest.raises(UpstreamFailure) as caught:
        await timed(dispatch.complete(plan(target(primary, max_attempts=3), breaker=breaker)))
    assert (caught.value.status, caught.value.code) == (503, "upstream_unavailable")
    assert len(primary.requests) == 3
    assert len(waits) == 2 and 0.05 <= waits[0] <= 0.1 and 0.1 <= waits[1] <= 0.15


@pytest.mark.parametrize("behaviour", ["malformed_json", "wrong_content_type"])
async def test_a_malformed_answer_is_not_retried_but_fails_over(
    primary, secondary, breaker, behaviour, waits
):
    primary.behaviour = behaviour
    first, second = target(primary), target(secondary)
    served, _elapsed = await timed(dispatch.complete(plan(first, second, breaker=breaker)))
    assert served.result.content == "from the secondary" and served.target == second
    assert served.fallback_reason == "upstream_bad_response"
    assert (len(primary.requests), len(secondary.requests), served.attempts) == (1, 1, 2)
    assert waits == []  # no backoff: a malformed answer is not worth a second try

    with pytest.raises(UpstreamFailure) as caught:
        await dispatch.complete(plan(target(primary), breaker=breaker))
    assert (caught.value.status, caught.value.code) == (502, "upstream_bad_response")


async def test_a_refused_request_is_neither_retried_nor_failed_over_nor_counted(
    primary, secondary, breaker
):
    primary.behaviour = "bad_request"  # 400 context_length_exceeded: the request's fault
    first = target(primary, failure_threshold=1)
    with pytest.raises(UpstreamFailure) as caught:
        await dispatch.complete(plan(first, target(secondary), breaker=breaker))
    assert caught.value.status == 502
    assert (len(primary.requests), len(secondary.requests)) == (1, 0)
    state = breaker.snapshot({first.deployment: first.policy})[first.deployment]
    assert (state.state, state.consecutive_failures) == ("closed", 0)


def test_backoff_grows_exponentially_with_jitter_and_honours_retry_after():
    from tenacity import RetryCallState

    wait = BackoffWait(ResiliencePolicy(backoff_base=0.5, backoff_max=3, retry_after_max=10))

    def state(attempt: int, retry_after: float | None = None) -> RetryCallState:
        s = RetryCallState(None, None, (), {})
        s.attempt_number = attempt
        error = UpstreamBadResponse("x", retry_after=retry_after)
        s.set_exception((type(error), error, None))
        return s

    for attempt, low in [(1, 0.5), (2, 1.0), (3, 2.0)]:
        samples = {wait(state(attempt)) for _ in range(50)}
        assert all(low <= s <= low + 0.5 for s in samples) and len(samples) > 1  # jittered
    assert wait(state(6)) == 3  # capped
    assert wait(state(1, retry_after=4)) == 4  # never sooner than Retry-After
    assert wait(state(1, retry_after=60)) == 10  # (stop decides that 60 is too long)


# ---------------------------------------------------------------------------------------------
# Timeouts


async def test_a_hung_upstream_is_abandoned_at_the_total_timeout(primary, breaker):
    primary.behaviour = "hang"  # silent for 5 s
    with pytest.raises(UpstreamFailure) as caught:
        await timed(dispatch.complete(plan(target(primary, total_timeout=0.5), breaker=breaker)))
    assert (caught.value.status, caught.value.code) == (504, "upstream_timeout")
    assert len(primary.requests) == 1  # no time left to retry
    assert 0.5 <= caught.value.elapsed < HANG  # at its timeout, not when the upstream answers


async def test_read_timeouts_are_retried_within_the_total_timeout(primary, breaker, waits):
    primary.behaviour = "hang"
    slow = target(primary, read_timeout=0.2, total_timeout=5, max_attempts=3)
    with pytest.raises(UpstreamFailure) as caught:
        await timed(dispatch.complete(plan(slow, breaker=breaker)))
    assert caught.value.status == 504
    assert len(primary.requests) == 3
    assert len(waits) == 2  # three read timeouts of 0.2 s, two short backoffs between them
    assert 0.6 + sum(waits) <= caught.value.elapsed < HANG


async def test_a_slow_first_token_fails_over_before_any_byte_is_sent(primary, secondary, breaker):
    primary.on_request = lambda _: time.sleep(1.5)  # then answers normally: too late
    first = target(primary, first_token_timeout=0.3, max_attempts=1)
    second = target(secondary)
    served, elapsed = await timed(dispatch.open_stream(plan(first, second, breaker=breaker)))
    assert served.target == second and served.fallback_reason == "upstream_timeout"
    assert await read_all(served) == "from the secondary"
    assert (len(primary.requests), len(secondary.requests), served.attempts) == (1, 1, 2)
    assert 0.3 <= elapsed < 1.5  # the primary's first token would come at 1.5 s


async def test_a_stream_that_stalls_midway_ends_at_the_idle_timeout_without_retry(
    primary, secondary, breaker
):
    primary.behaviour, primary.reply = "stream_stall", "one two three four"
    first = target(primary, idle_timeout=0.3)
    served = await dispatch.open_stream(plan(first, target(secondary), breaker=breaker))
    assert served.first.content.strip() == "one" and served.target == first
    started = time.perf_counter()
    with pytest.raises(UpstreamTimeout):
        await read_all(served)
    assert 0.3 <= time.perf_counter() - started < HANG  # the stall lasts 5 s
    # Bytes have reached the client: no retry, no fallback.
    assert (len(primary.requests), len(secondary.requests)) == (1, 0)
    state = breaker.snapshot({first.deployment: first.policy})[first.deployment]
    assert state.consecutive_failures == 1


async def test_a_stream_that_breaks_midway_is_not_retried(primary, secondary, breaker):
    primary.behaviour, primary.reply = "stream_break", "one two three four"
    served = await dispatch.open_stream(plan(target(primary), target(secondary), breaker=breaker))
    with pytest.raises(UpstreamBadResponse):
        await read_all(served)
    assert (len(primary.requests), len(secondary.requests)) == (1, 0)


async def test_a_stream_failing_before_its_first_token_is_retried(primary, breaker):
    primary.behaviour = "error500"
    then_ok(primary)
    served = await dispatch.open_stream(plan(target(primary), breaker=breaker))
    assert await read_all(served) == "hello there"
    assert served.attempts == len(primary.requests) == 2


# ---------------------------------------------------------------------------------------------
# Breakers and the fallback chain


async def _serve_many(n: int, make_plan) -> list[tuple[object, float]]:
    results = []
    for _ in range(n):
        results.append(await timed(dispatch.complete(make_plan())))
    return results


@pytest.mark.parametrize("store", ["process", pytest.param("redis", marks=pytest.mark.redis)])
async def test_with_the_primary_failing_every_call_all_clients_succeed_and_an_open_breaker_adds_no_latency(  # noqa: E501
    primary, secondary, store
):
    breaker = (
        InProcessBreaker(on_transition=None)
        if store == "process"
        else RedisBreaker(prefix=f"test:{uuid.uuid4().hex}:", on_transition=None)
    )
    primary.behaviour = "hang"  # each call to it costs its whole total timeout
    first = target(primary, total_timeout=0.3, max_attempts=1, failure_threshold=3)
    second = target(secondary)
    gc.collect()  # earlier tests' garbage: a full collection mid-loop would pause ~0.2 s
    results = await _serve_many(20, lambda: plan(first, second, breaker=breaker))

    assert all(s.result.content == "from the secondary" for s, _ in results)  # 100 % success
    assert len(primary.requests) == 3  # then the breaker is open
    assert len(secondary.requests) == 20
    assert all(0.3 <= elapsed < HANG for _, elapsed in results[:3])  # its total timeout
    # Once the breaker is open the primary is not called at all, so it costs no wait: the
    # 17 later requests each took less than the primary's timeout.
    assert all(elapsed < 0.3 for _, elapsed in results[3:])
    assert [s.fallback_reason for s, _ in results] == ["upstream_timeout"] * 3 + [
        "breaker_open"
    ] * 17
    if store == "redis":
        breaker.clear()


async def test_an_open_breaker_stops_retries_midway(primary, secondary, breaker):
    primary.behaviour = "error500"
    first = target(primary, max_attempts=2, failure_threshold=5)
    results = await _serve_many(6, lambda: plan(first, target(secondary), breaker=breaker))
    assert all(s.result.content == "from the secondary" for s, _ in results)
    # 2 + 2 + 1: the fifth failure opens the breaker, and the third request's retry is skipped.
    assert len(primary.requests) == 5
    assert [s.attempts for s, _ in results] == [3, 3, 2, 1, 1, 1]


async def test_an_open_breaker_answers_at_once_while_the_primary_hangs(primary, breaker):
    primary.behaviour = "hang"
    only = target(
        primary, total_timeout=0.3, max_attempts=1, failure_threshold=1, recovery_seconds=30
    )
    with pytest.raises(UpstreamFailure):
        await dispatch.complete(plan(only, breaker=breaker))
    gc.collect()
    with pytest.raises(CircuitOpen) as caught:
        await timed(dispatch.complete(plan(only, breaker=breaker)))
    assert (caught.value.status, caught.value.code) == (503, "circuit_open")
    assert caught.value.headers["Retry-After"] in {"29", "30"}
    assert caught.value.elapsed < 0.3  # not even the primary's timeout: it was not called
    assert len(primary.requests) == 1


async def test_after_recovery_one_probe_closes_the_breaker(primary, secondary, breaker):
    primary.behaviour = "error500"
    first = target(primary, max_attempts=1, failure_threshold=2, recovery_seconds=0.3)
    second = target(secondary)
    for _ in range(3):
        await dispatch.complete(plan(first, second, breaker=breaker))
    assert len(primary.requests) == 2  # open after two failures
    primary.behaviour = "ok"
    await asyncio.sleep(0.35)
    served = await dispatch.complete(plan(first, second, breaker=breaker))
    assert served.target == first and served.fallback_reason == ""  # the probe succeeded
    state = breaker.snapshot({first.deployment: first.policy})[first.deployment]
    assert state.state == "closed"
    await dispatch.complete(plan(first, second, breaker=breaker))
    assert len(primary.requests) == 4


async def test_a_forced_open_breaker_is_skipped_and_a_forced_closed_one_is_called(
    primary, secondary, breaker
):
    forced_open = target(primary, override="forced_open")
    served = await dispatch.complete(plan(forced_open, target(secondary), breaker=breaker))
    assert served.fallback_reason == "breaker_open" and len(primary.requests) == 0

    primary.behaviour = "error500"
    forced_closed = target(primary, override="forced_closed", failure_threshold=1, max_attempts=1)
    for _ in range(3):
        await dispatch.complete(plan(forced_closed, target(secondary), breaker=breaker))
    assert len(primary.requests) == 3  # called every time, whatever its failures


async def test_when_every_deployment_fails_the_cached_answer_is_served(primary, secondary, breaker):
    primary.behaviour = secondary.behaviour = "error500"
    calls = []

    async def cached_answer():
        calls.append(1)
        return ChatResult.text("an answer from yesterday", "stop", Usage(3, 4))

    chain = plan(
        target(primary, max_attempts=1),
        target(secondary, max_attempts=1),
        breaker=breaker,
        cached_answer=cached_answer,
    )
    served = await dispatch.complete(chain)
    assert (served.source, served.result.content) == ("cache", "an answer from yesterday")
    assert served.target is None and served.deployment == "cache"
    assert (served.attempts, served.fallback_reason) == (2, "upstream_server_error")
    assert calls == [1]

    streamed = await dispatch.open_stream(chain)
    assert await read_all(streamed) == "an answer from yesterday"


async def test_the_degraded_reply_or_error_when_nothing_else_answers(primary, breaker):
    primary.behaviour = "error500"
    message = Degraded("message", "I'm temporarily unavailable. Please try again later.")
    served = await dispatch.complete(
        plan(target(primary, max_attempts=1), breaker=breaker, degraded=message)
    )
    assert served.degraded and served.deployment == "degraded"
    assert served.result.content == message.message

    streamed = await dispatch.open_stream(
        plan(target(primary, max_attempts=1), breaker=breaker, degraded=message)
    )
    assert streamed.degraded and await read_all(streamed) == message.message

    with pytest.raises(UpstreamFailure) as caught:  # mode "error": the last failure's error
        await dispatch.complete(plan(target(primary, max_attempts=1), breaker=breaker))
    assert (caught.value.status, caught.value.code) == (502, "upstream_server_error")


# ---------------------------------------------------------------------------------------------
# Through the API (the views call dispatch.complete(plan) / open_stream(plan))


@pytest.fixture
def _fresh_state():
    from gateway.resilience.breaker import breaker_store

    authenticate.clear_cache()
    breaker_store().clear()
    yield
    breaker_store().clear()


def _chain(primary_url: str, secondary_url: str, **deployment_fields) -> None:
    alias = route_alias("default", primary_url)
    ProviderDeployment.objects.filter(name="default-deployment").update(**deployment_fields)
    backup = route_alias("backup", secondary_url)
    AliasFallback.objects.create(
        alias=alias, deployment=backup.versions.get().deployment, position=1
    )


def _post(client, key, body, path="/v1/chat/completions"):
    return client.post(
        path,
        data=json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )


@pytest.mark.django_db
def test_api_with_the_primary_failing_every_call_clients_see_only_successes(
    client, key_a, primary, secondary, _fresh_state
):
    primary.behaviour = "error500"
    _chain(primary.base_url, secondary.base_url, max_attempts=1, breaker_failure_threshold=3)
    body = {"model": "default", "messages": [{"role": "user", "content": "hi"}]}
    responses = [_post(client, key_a, body) for _ in range(10)]
    assert [r.status_code for r in responses] == [200] * 10
    assert {r["x-llmp-deployment"] for r in responses} == {"backup-deployment"}
    assert all(
        r.json()["choices"][0]["message"]["content"] == "from the secondary" for r in responses
    )
    assert len(primary.requests) == 3 and len(secondary.requests) == 10
    records = list(UsageRecord.objects.order_by("created_at"))
    assert {r.deployment for r in records} == {"backup-deployment"}
    assert [r.fallback_reason for r in records] == ["upstream_server_error"] * 3 + [
        "breaker_open"
    ] * 7
    assert [r.upstream_attempts for r in records] == [2] * 3 + [1] * 7


@pytest.mark.django_db(transaction=True)
def test_api_a_stream_fails_over_before_its_first_byte(
    gateway_server, key_a, primary, secondary, _fresh_state
):
    primary.behaviour = "hang"
    _chain(primary.base_url, secondary.base_url, first_token_timeout=0.3, max_attempts=1)
    started = time.perf_counter()
    response = httpx.post(
        f"{gateway_server}/v1/chat/completions",
        timeout=10,
        headers={"Authorization": f"Bearer {key_a}"},
        json={"model": "default", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert response.status_code == 200 and response.headers["x-llmp-deployment"] == (
        "backup-deployment"
    )
    assert "from" in response.text and response.text.rstrip().endswith("data: [DONE]")
    assert time.perf_counter() - started < 1.5
    assert (len(primary.requests), len(secondary.requests)) == (1, 1)


@pytest.mark.django_db
def test_api_degraded_mode_answers_with_the_message_marked_degraded(
    client, key_a, primary, _fresh_state
):
    primary.behaviour = "error500"
    alias = route_alias("default", primary.base_url)
    alias.degraded_mode = "message"
    alias.save()
    ProviderDeployment.objects.update(max_attempts=1)
    response = _post(
        client, key_a, {"model": "default", "messages": [{"role": "user", "content": "hi"}]}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert body["choices"][0]["message"]["content"] == alias.degraded_message
    assert response["x-llmp-deployment"] == "degraded"
    record = UsageRecord.objects.get()
    assert record.degraded and record.upstream_attempts == 1


@pytest.mark.django_db
def test_api_an_open_breaker_gives_503_circuit_open_without_calling(
    client, key_a, primary, _fresh_state
):
    primary.behaviour = "error500"
    route_alias("default", primary.base_url)
    ProviderDeployment.objects.update(max_attempts=1, breaker_failure_threshold=1)
    body = {"model": "default", "messages": [{"role": "user", "content": "hi"}]}
    assert _post(client, key_a, body).status_code == 502
    response = _post(client, key_a, body)
    assert response.status_code == 503 and response.json()["error"]["code"] == "circuit_open"
    assert int(response["Retry-After"]) > 0
    assert len(primary.requests) == 1
