"""Shared fixtures: the principals alice (tenant A owner), bob (tenant A member) and charlie
(tenant B owner), API keys, a routed model alias, and a real gateway server on loopback."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from django.conf import settings

from gateway import services as gateway_services
from gateway.models import ModelAlias, ModelVersion, Provider, ProviderDeployment, Tier
from llmplatform.actors import SYSTEM, Actor
from llmplatform.models import Membership
from tests.browser import browser, page  # noqa: F401 - fixtures for every test module

REQUIRE_SERVICES = os.environ.get("LLMP_REQUIRE_SERVICES") == "1"

# aiohttp sessions of event loops that tests have closed report themselves at interpreter exit,
# when stderr is already gone; that is noise, not a failure.
logging.raiseExceptions = False


def _postgres_configured() -> bool:
    return settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"


def _redis_configured() -> bool:
    return bool(settings.REDIS_URL)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``postgres`` or ``redis`` need the real service. Without it they are
    skipped with a plain reason, except under LLMP_REQUIRE_SERVICES=1 (CI), where they fail."""
    missing = {
        "postgres": None if _postgres_configured() else "DATABASE_URL is not a PostgreSQL URL",
        "redis": None if _redis_configured() else "REDIS_URL is not set",
    }
    for item in items:
        for marker, reason in missing.items():
            if reason and item.get_closest_marker(marker):
                if REQUIRE_SERVICES:
                    item.add_marker(pytest.mark.xfail(reason=reason, strict=True, run=False))
                    item.user_properties.append(("missing_service", reason))
                else:
                    item.add_marker(pytest.mark.skip(reason=f"needs {marker}: {reason}"))


def pytest_runtest_setup(item):
    for name, reason in item.user_properties:
        if name == "missing_service":
            pytest.fail(f"LLMP_REQUIRE_SERVICES=1 but {reason}", pytrace=False)


@pytest.fixture(scope="session", autouse=True)
def _tasks_run_in_the_calling_process():
    """These tests run Celery tasks eagerly, in the process that queues them, so a test sees a
    task's effect right after the call that queued it. The platform never does: it queues them
    for a worker (the embedded file broker, or CELERY_BROKER_URL), and the tests that start the
    platform as `make run` does (tests/test_embedded_tasks.py) run a real worker and beat."""
    from llmplatform.celery import app

    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = False


@pytest.fixture(autouse=True)
def _platform_app_is_current():
    """Shared tasks resolve against Celery's current app, which any ``Celery()`` made without
    ``set_as_current=False`` takes over for the rest of the process: every test starts with the
    platform's (eager) app current again."""
    from llmplatform.celery import app

    app.set_current()


@pytest.fixture(scope="session", autouse=True)
def _clean_shared_caches():
    """The embedded default's caches are files in LLMP_DATA_DIR that outlive a test run: start
    from empty ones, as from an empty Redis."""
    from django.core.cache import cache

    from gateway import cache as response_cache

    cache.clear()
    response_cache._local.clear()
    yield


@pytest.fixture(scope="session", autouse=True)
def _clean_redis():
    """The test Redis database starts empty, so state from an earlier run (cache entries,
    breaker states, counters keyed by ids that a new test database reuses) cannot leak in."""
    if _redis_configured():
        from llmplatform.redis_client import sync_redis

        sync_redis().flushdb()
    yield


@pytest.fixture(autouse=True)
def _fresh_account_lockouts(monkeypatch):
    """Failed sign-ins per account are counted in the shared cache: each test counts from 0."""
    from llmplatform import account_lockout

    monkeypatch.setattr(account_lockout, "PREFIX", f"llmp:signin-account:{uuid.uuid4().hex}:")


@pytest.fixture(autouse=True)
def _fresh_verdicts():
    """What a process read from the verdict store stays in its memory: each test starts
    without it (the store's keys hold tenant ids, which a test database may reuse)."""
    from gateway.pipeline import verdicts

    verdicts.forget_known()
    yield


@pytest.fixture(autouse=True)
def _fresh_breakers():
    """Breaker state lives per process (or in Redis): each test starts with closed breakers."""
    from gateway.resilience.breaker import breaker_store

    breaker_store().clear()
    yield


@pytest.fixture(autouse=True)
def _fresh_limits():
    """Limit counters are keyed by tenant and key ids, which a test database may reuse."""
    from gateway import limits
    from gateway.pipeline import authenticate

    limits.local_store.clear()
    authenticate.clear_cache()
    if _redis_configured():
        from llmplatform.redis_client import sync_redis

        client = sync_redis()
        keys = list(client.scan_iter("llmp:lim:*", count=1000))
        if keys:
            client.delete(*keys)
    yield


@pytest.fixture
def admin_client(client, admin_user):
    """pytest-django's admin_client, signed in with the second factor the admin requires."""
    from django_otp import DEVICE_ID_SESSION_KEY
    from django_otp.plugins.otp_totp.models import TOTPDevice

    device = TOTPDevice.objects.create(user=admin_user, name="test", confirmed=True)
    client.force_login(admin_user)
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    session.save()
    return client


@pytest.fixture(autouse=True)
def _after_answer_inline(settings):
    """Most tests read what a request did (its usage record, a security event, a conversation
    record) right after its response, and Django's test client ends its event loop with the
    response: the work after an answer runs before the response completes. Production runs it
    in the background; tests/test_after_answer_in_background.py covers that mode end to end, and
    tests of the batching writer set their own switches."""
    settings.LLMP_AFTER_ANSWER_INLINE = True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def tier(db) -> Tier:
    return Tier.objects.create(name="pro", max_prompt_chars=2000)


@dataclass
class Principals:
    tenant_a: object
    tenant_b: object
    alice: object
    bob: object
    charlie: object


@pytest.fixture
def principals(db, tier, django_user_model) -> Principals:
    create = gateway_services.tenant_create
    tenant_a = create(actor=SYSTEM, name="Tenant A", slug="tenant-a", tier=tier)
    tenant_b = create(actor=SYSTEM, name="Tenant B", slug="tenant-b", tier=tier)
    alice = django_user_model.objects.create_user("alice", password="alice-pass-123")
    bob = django_user_model.objects.create_user("bob", password="bob-pass-123")
    charlie = django_user_model.objects.create_user("charlie", password="charlie-pass-123")
    Membership.objects.create(user=alice, tenant=tenant_a, role=Membership.Role.OWNER)
    Membership.objects.create(user=bob, tenant=tenant_a, role=Membership.Role.MEMBER)
    Membership.objects.create(user=charlie, tenant=tenant_b, role=Membership.Role.OWNER)
    return Principals(tenant_a, tenant_b, alice, bob, charlie)


@pytest.fixture
def key_a(principals) -> str:
    _, plaintext = gateway_services.api_key_create(
        actor=Actor.for_user(principals.alice), tenant=principals.tenant_a, name="a-key"
    )
    return plaintext


@pytest.fixture
def key_b(principals) -> str:
    _, plaintext = gateway_services.api_key_create(
        actor=Actor.for_user(principals.charlie), tenant=principals.tenant_b, name="b-key"
    )
    return plaintext


def route_alias(
    name: str,
    base_url: str,
    *,
    model: str = "upstream-model",
    kind: str = "openai",
    **provider_fields,
) -> ModelAlias:
    """Create a provider, a deployment and an alias routed to it (for tests)."""
    provider = Provider.objects.create(
        name=f"{name}-provider", kind=kind, base_url=base_url, **provider_fields
    )
    deployment = ProviderDeployment.objects.create(
        name=f"{name}-deployment",
        provider=provider,
        model=model,
        input_price_per_1k="0.001",
        output_price_per_1k="0.002",
    )
    alias = ModelAlias.objects.create(name=name)
    ModelVersion.objects.create(alias=alias, version="v1", deployment=deployment)
    return alias


def set_tier(principals, **fields):
    """Change tenant A's tier (its limits and policies) for a test."""
    tier = principals.tenant_a.plan.tier
    for name, value in fields.items():
        setattr(tier, name, value)
    tier.save()
    return tier


def chat(client, key, messages, **extra):
    """``POST /v1/chat/completions`` to the "default" alias through Django's test client."""
    import json

    body = {"model": "default", "messages": messages, **extra}
    return client.post(
        "/v1/chat/completions",
        data=json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )


@pytest.fixture
def gateway_server(transactional_db) -> Iterator[str]:
    """The real ASGI app under uvicorn on a loopback port; yields its base URL."""
    import uvicorn

    from llmplatform.asgi import application

    port = free_port()
    config = uvicorn.Config(
        application, host="127.0.0.1", port=port, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("gateway server did not start")
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
    close_server_connections()


def close_server_connections() -> None:
    """Close the database connection of asgiref's one shared thread, where the server's
    thread-sensitive database work runs when no request context gives it a thread of its own.
    Left open, it outlives the test, and PostgreSQL refuses to drop the test database at the end
    of the run ("1 other session")."""
    from asgiref.sync import SyncToAsync
    from django.db import connections

    SyncToAsync.single_thread_executor.submit(connections.close_all).result(timeout=10)


def gateway_process_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a gateway process that shares this test's PostgreSQL database, Redis,
    data directory and secrets (after-answer work inline, as in every test), plus ``env``."""
    db = settings.DATABASES["default"]
    return {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "REDIS_URL": settings.REDIS_URL or "",
        "LLMP_DATA_DIR": str(settings.DATA_DIR),
        "LLMP_API_KEY_PEPPER": settings.API_KEY_PEPPER,
        "SECRET_KEY": settings.SECRET_KEY,
        "LLMP_AFTER_ANSWER_INLINE": "true",
        **(env or {}),
    }


def start_gateway_process(*, workers: int = 1, env: dict[str, str] | None = None):
    """Another gateway *process* (uvicorn in a subprocess) sharing this test's PostgreSQL
    database and Redis. Returns (process, base URL); the caller terminates it."""
    import subprocess
    import sys

    import httpx

    db = settings.DATABASES["default"]
    if db["ENGINE"] != "django.db.backends.postgresql":
        pytest.skip("a second process needs a shared server database")
    port = free_port()
    full_env = gateway_process_env(env)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "llmplatform.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--workers",
            str(workers),
        ],
        env=full_env,
        cwd=settings.BASE_DIR,
    )
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"{base_url}/healthz", timeout=1)
            return process, base_url
        except httpx.HTTPError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError("the gateway process did not start") from None
            time.sleep(0.1)


@pytest.fixture
def second_gateway(transactional_db) -> Iterator[str]:
    """Another gateway process sharing this test's database and Redis; yields its URL."""
    process, base_url = start_gateway_process()
    yield base_url
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A real AWS-compatible server (moto) on a loopback port, shared by the session."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws_region(moto_endpoint, monkeypatch, settings) -> str:
    """Test credentials, and the platform's AWS clients pointed at moto; returns the region."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    settings.AWS_REGION = "eu-west-1"
    settings.LLMP_AWS_ENDPOINT_URL = moto_endpoint
    return settings.AWS_REGION


# --- What the guard reads (tests/test_verdict_cache.py, tests/test_later_turn.py) -------------


@pytest.fixture
def screened(monkeypatch) -> list[str]:
    """Every text the real screen scores during the test, in order."""
    from gateway.screening import injection

    texts: list[str] = []
    real = injection.screen_text

    def counting(text: str, role: str = injection.USER) -> injection.ScreenResult:
        texts.append(text)
        return real(text, role=role)

    monkeypatch.setattr(injection, "screen_text", counting)
    return texts


@pytest.fixture
def searched(monkeypatch) -> list[str]:
    """Every text the real PII detector reads during the test."""
    from privacy import pii

    texts: list[str] = []
    real = pii.detect

    def counting(text, types=None):
        texts.append(text)
        return real(text, types)

    monkeypatch.setattr(pii, "detect", counting)
    return texts


@pytest.fixture
def long_prompts(principals, settings):
    """Tenant A's tier admits prompts of up to 50,000 characters; a policy change in a test
    applies at once."""
    set_tier(principals, max_prompt_chars=50_000)
    settings.LLMP_AUTH_CACHE_SECONDS = 0
