"""The circuit breaker's state machine, on both stores (in-process, and Redis shared by every
process), its hot-path economy, its fallback when Redis is down, and the officer's actions."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
import structlog

from gateway.models import BreakerEvent, DeploymentBreaker, ModelAlias, ProviderDeployment
from gateway.resilience import services
from gateway.resilience.breaker import (
    ALLOW,
    BreakerAdmission,
    InProcessBreaker,
    breaker_store,
    set_breaker_store,
)
from gateway.resilience.policy import ResiliencePolicy
from gateway.resilience.redis_breaker import RedisBreaker
from llmplatform.actors import Actor
from llmplatform.models import AuditEvent

from .conftest import route_alias

POLICY = ResiliencePolicy(
    failure_threshold=3, failure_rate=0, recovery_seconds=0.3, total_timeout=0.5
)
ROOT = Path(__file__).resolve().parent.parent


class Transitions(list):
    async def __call__(self, deployment: str, kind: str, error_code: str) -> None:
        self.append(kind)


@pytest.fixture(params=["process", pytest.param("redis", marks=pytest.mark.redis)])
def store(request):
    """Each store, recording its transitions; the Redis one reads Redis on every call
    (``state_ttl=0``) so that tests see every write at once."""
    transitions = Transitions()
    if request.param == "process":
        breaker = InProcessBreaker(on_transition=transitions)
    else:
        breaker = RedisBreaker(
            prefix=f"test:{uuid.uuid4().hex}:", state_ttl=0, on_transition=transitions
        )
    breaker.transitions = transitions
    yield breaker
    breaker.clear()


async def fail(store, n: int = 1, policy: ResiliencePolicy = POLICY, name: str = "dep") -> None:
    for _ in range(n):
        admission = await store.admit(name, policy)
        await store.record_failure(name, policy, admission, "upstream_server_error")


async def succeed(store, n: int = 1, policy: ResiliencePolicy = POLICY, name: str = "dep") -> None:
    for _ in range(n):
        admission = await store.admit(name, policy)
        await store.record_success(name, policy, admission)


def state_of(store, name: str = "dep", policy: ResiliencePolicy = POLICY):
    return store.snapshot({name: policy})[name]


async def test_it_opens_after_consecutive_failures_and_then_refuses(store):
    await fail(store, 2)
    assert await store.admit("dep", POLICY) == ALLOW
    await fail(store)
    admission = await store.admit("dep", POLICY)
    assert not admission.allowed and admission.state == "open"
    assert 0 < admission.retry_after <= 0.3
    assert store.transitions == ["opened"]
    snapshot = state_of(store)
    assert (snapshot.state, snapshot.consecutive_failures) == ("open", 3)
    assert [code for _, code in snapshot.recent_failures] == ["upstream_server_error"] * 3
    assert 0 < snapshot.retry_in <= 0.3


async def test_a_success_resets_the_consecutive_failures(store):
    await fail(store, 2)
    await succeed(store)
    await fail(store, 2)
    assert await store.admit("dep", POLICY) == ALLOW
    assert state_of(store).consecutive_failures == 2


async def test_half_open_admits_exactly_one_probe_and_its_success_closes(store):
    await fail(store, 3)
    await asyncio.sleep(0.35)
    admissions = await asyncio.gather(*(store.admit("dep", POLICY) for _ in range(10)))
    probes = [a for a in admissions if a.probe]
    assert len(probes) == 1 and probes[0].allowed
    assert not any(a.allowed for a in admissions if not a.probe)
    assert state_of(store).probe_in_flight

    await store.record_success("dep", POLICY, probes[0])
    assert await store.admit("dep", POLICY) == ALLOW
    assert store.transitions == ["opened", "half_open", "closed"]
    snapshot = state_of(store)
    assert (snapshot.state, snapshot.consecutive_failures) == ("closed", 0)


async def test_a_failed_probe_opens_it_again(store):
    await fail(store, 3)
    await asyncio.sleep(0.35)
    probe = await store.admit("dep", POLICY)
    assert probe.probe
    await store.record_failure("dep", POLICY, probe, "upstream_timeout")
    admission = await store.admit("dep", POLICY)
    assert not admission.allowed and admission.retry_after > 0.2
    assert store.transitions == ["opened", "half_open", "opened"]


async def test_a_released_probe_lets_the_next_request_probe(store):
    await fail(store, 3)
    await asyncio.sleep(0.35)
    probe = await store.admit("dep", POLICY)
    assert not (await store.admit("dep", POLICY)).allowed
    await store.release("dep", probe)  # e.g. the client went away
    assert (await store.admit("dep", POLICY)).probe


async def test_a_failure_rate_over_the_window_opens_it(store):
    policy = ResiliencePolicy(
        failure_threshold=100, failure_rate=0.5, min_requests=10, window_seconds=60
    )
    for _ in range(4):  # 8 requests, half failed: too few to judge
        await succeed(store, policy=policy)
        await fail(store, policy=policy)
    assert (await store.admit("dep", policy)).allowed
    await succeed(store, policy=policy)
    await fail(store, policy=policy)  # 10 requests, 5 failed
    assert not (await store.admit("dep", policy)).allowed
    snapshot = state_of(store, policy=policy)
    assert (snapshot.window_requests, snapshot.window_failures) == (10, 5)


async def test_failures_older_than_the_window_no_longer_count(store):
    policy = ResiliencePolicy(
        failure_threshold=100, failure_rate=0.5, min_requests=4, window_seconds=1
    )
    await fail(store, 3, policy=policy)
    await asyncio.sleep(1.4)
    await succeed(store, 3, policy=policy)
    await fail(store, policy=policy)  # 1 of the last 4 failed
    assert (await store.admit("dep", policy)).allowed


async def test_an_officers_override_wins(store):
    forced_open = ResiliencePolicy(override="forced_open")
    assert not (await store.admit("dep", forced_open)).allowed
    await fail(store, 3)
    forced_closed = ResiliencePolicy(override="forced_closed")
    assert await store.admit("dep", forced_closed) == ALLOW


async def test_breakers_are_per_deployment_and_reset_clears_one(store):
    await fail(store, 3, name="a")
    assert (await store.admit("b", POLICY)).allowed
    store.reset("a")
    assert (await store.admit("a", POLICY)).allowed
    assert state_of(store, "a").state == "closed"


# ---------------------------------------------------------------------------------------------
# Redis: shared state, hot-path economy, outage


@pytest.mark.redis
async def test_two_processes_share_one_breaker():
    from django.conf import settings

    prefix = f"test:{uuid.uuid4().hex}:"
    script = textwrap.dedent(f"""
        import asyncio
        from gateway.resilience.redis_breaker import RedisBreaker
        from gateway.resilience.policy import ResiliencePolicy

        async def main():
            store = RedisBreaker(url={settings.REDIS_URL!r}, prefix={prefix!r},
                                 on_transition=None)
            policy = ResiliencePolicy(failure_threshold=3)
            for _ in range(3):
                admission = await store.admit("shared", policy)
                await store.record_failure("shared", policy, admission, "upstream_timeout")

        asyncio.run(main())
    """)
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "llmplatform.settings"}
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr

    here = RedisBreaker(prefix=prefix, on_transition=None)
    admission = await here.admit("shared", ResiliencePolicy(failure_threshold=3))
    assert not admission.allowed and admission.state == "open"
    here.clear()


@pytest.mark.redis
def test_independent_clients_in_other_event_loops_see_the_same_state():
    prefix = f"test:{uuid.uuid4().hex}:"
    writer = RedisBreaker(prefix=prefix, on_transition=None)
    reader = RedisBreaker(prefix=prefix, on_transition=None)
    asyncio.run(fail(writer, 3))
    # A fresh loop (as each Django test-client request has): its own client, same state.
    assert not asyncio.run(reader.admit("dep", POLICY)).allowed
    writer.clear()


@pytest.mark.redis
async def test_a_breaker_opened_elsewhere_refuses_here_before_the_kept_closed_state_expires():
    """Another replica keeps a closed state for ``state_ttl`` without asking Redis; the
    opening is published, so it refuses its next call instead of calling the failing
    deployment once more."""
    prefix = f"test:{uuid.uuid4().hex}:"
    policy = ResiliencePolicy(failure_threshold=3, recovery_seconds=60)
    opener = RedisBreaker(prefix=prefix, on_transition=None)
    here = RedisBreaker(prefix=prefix, state_ttl=60, on_transition=None)
    await here.start_listening()
    channel = here._opened_channel()
    with here._sync() as client:
        for _ in range(250):  # the subscription is made in the background
            if client.pubsub_numsub(channel)[0][1]:
                break
            await asyncio.sleep(0.02)
    assert (await here.admit("dep", policy)).allowed  # closed, kept for a minute
    await fail(opener, 3, policy)
    for _ in range(100):
        admission = await here.admit("dep", policy)
        if not admission.allowed:
            break
        await asyncio.sleep(0.01)
    assert not admission.allowed and admission.state == "open"
    assert admission.retry_after is not None and admission.retry_after > 50
    here._listener.cancel()
    opener.clear()


@pytest.mark.redis
async def test_the_closed_hot_path_reads_redis_at_most_once_per_state_ttl():
    store = RedisBreaker(prefix=f"test:{uuid.uuid4().hex}:", state_ttl=1.0, on_transition=None)
    calls = []
    original = store._run

    async def counting(*args, **kwargs):
        calls.append(args[0])
        return await original(*args, **kwargs)

    store._run = counting
    await succeed(store, 200)
    assert calls == ["admit"]  # one read, no writes for successes
    await fail(store)
    assert calls == ["admit", "failure"]  # a failure is written at once
    await succeed(store)
    assert calls == ["admit", "failure", "success"]  # and a success then resets the count
    await succeed(store, 50)
    assert len(calls) == 3
    # The successes counted locally reach the shared window on the next read.
    store._seen["dep"].fresh_until = 0
    await succeed(store)
    assert state_of(store).window_requests >= 250
    store.clear()


async def test_when_redis_is_unreachable_the_local_breaker_takes_over_loudly():
    store = RedisBreaker(url="redis://127.0.0.1:1/0", prefix="test:", on_transition=None)
    with structlog.testing.capture_logs() as logs:
        started = time.perf_counter()
        assert await store.admit("dep", POLICY) == ALLOW
        await fail(store, 3)
        assert not (await store.admit("dep", POLICY)).allowed  # the local breaker opened
        assert time.perf_counter() - started < 1.0
    errors = [e for e in logs if e["event"] == "breaker_redis_unavailable"]
    assert len(errors) == 1 and errors[0]["log_level"] == "error"
    assert state_of(store).state == "open"  # the admin falls back to the local view too


# ---------------------------------------------------------------------------------------------
# The officer's actions and the admin


@pytest.fixture
def local_store():
    store = InProcessBreaker(on_transition=None)
    set_breaker_store(store)
    yield store
    set_breaker_store(None)


@pytest.mark.django_db
def test_forcing_a_breaker_is_audited_and_reaches_the_routing_table(admin_user, local_store):
    route_alias("default", "http://127.0.0.1:1/v1")
    deployment = ProviderDeployment.objects.get()
    services.breaker_force(
        actor=Actor.for_user(admin_user), deployment=deployment, override="forced_open"
    )
    deployment.refresh_from_db()
    assert deployment.breaker_override == "forced_open"
    event = AuditEvent.objects.get(action="breaker.force")
    assert (event.before, event.after) == (
        {"breaker_override": "auto"},
        {"breaker_override": "forced_open"},
    )
    assert event.actor == "user:admin"
    assert BreakerEvent.objects.get().kind == "forced_open"

    from gateway.pipeline.route import build_routes

    assert build_routes()["default"].plan().primary.policy.override == "forced_open"

    services.breaker_force(actor=Actor.for_user(admin_user), deployment=deployment, override="auto")
    assert AuditEvent.objects.filter(action="breaker.force").count() == 2


@pytest.mark.django_db
def test_resetting_a_breaker_is_audited_and_closes_it(admin_user, local_store):
    route_alias("default", "http://127.0.0.1:1/v1")
    deployment = ProviderDeployment.objects.get()
    policy = ResiliencePolicy(failure_threshold=1)
    asyncio.run(fail(local_store, 1, policy=policy, name=deployment.name))
    services.breaker_reset(actor=Actor.for_user(admin_user), deployment=deployment)
    assert state_of(local_store, deployment.name, policy).state == "closed"
    event = AuditEvent.objects.get(action="breaker.reset")
    assert event.before["state"] == "open" and event.after == {"state": "closed"}


@pytest.mark.django_db
def test_the_admin_lists_live_states_and_its_actions_are_audited(
    admin_client, local_store, django_assert_max_num_queries
):
    for name in ("a", "b", "c"):
        route_alias(name, "http://127.0.0.1:1/v1")
    policy = ResiliencePolicy(failure_threshold=1)
    asyncio.run(fail(local_store, 1, policy=policy, name="b-deployment"))

    with django_assert_max_num_queries(8):
        page = admin_client.get("/admin/gateway/deploymentbreaker/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "b-deployment" in text and "open" in text and "upstream_server_error" in text

    b = DeploymentBreaker.objects.get(name="b-deployment")
    response = admin_client.post(
        "/admin/gateway/deploymentbreaker/", {"action": "force_closed", "_selected_action": [b.pk]}
    )
    assert response.status_code == 302
    assert ProviderDeployment.objects.get(pk=b.pk).breaker_override == "forced_closed"
    response = admin_client.post(
        "/admin/gateway/deploymentbreaker/", {"action": "reset", "_selected_action": [b.pk]}
    )
    assert response.status_code == 302
    assert state_of(local_store, "b-deployment", policy).state == "closed"
    assert AuditEvent.objects.filter(action__startswith="breaker.").count() == 2

    detail = admin_client.get(f"/admin/gateway/deploymentbreaker/{b.pk}/change/")
    assert detail.status_code == 200 and b"upstream_server_error" in detail.content


@pytest.mark.django_db
def test_the_resilience_fields_are_in_the_deployment_and_alias_forms(admin_client):
    alias = route_alias("default", "http://127.0.0.1:1/v1")
    deployment = ProviderDeployment.objects.get()
    page = admin_client.get(f"/admin/gateway/providerdeployment/{deployment.pk}/change/")
    for name in (
        b"total_timeout",
        b"first_token_timeout",
        b"idle_timeout",
        b"max_attempts",
        b"breaker_failure_threshold",
        b"breaker_recovery_seconds",
    ):
        assert name in page.content
    page = admin_client.get(f"/admin/gateway/modelalias/{alias.pk}/change/")
    for name in (b"degraded_mode", b"degraded_message", b"resilience", b"fallbacks"):
        assert name in page.content


def test_alias_overrides_are_validated():
    from django.core.exceptions import ValidationError

    alias = ModelAlias(name="x", resilience={"total_timeout": 0, "retries": 3})
    with pytest.raises(ValidationError) as caught:
        alias.clean_fields()
    text = str(caught.value)
    assert "total_timeout: must be between 0.1 and 3600" in text
    assert "retries: unknown setting" in text
    policy = ResiliencePolicy().with_overrides({"total_timeout": 2, "max_attempts": 1})
    assert (policy.total_timeout, policy.max_attempts) == (2.0, 1)


def test_admission_defaults():
    assert BreakerAdmission(True) == ALLOW and not ALLOW.probe
    assert breaker_store() is breaker_store()
