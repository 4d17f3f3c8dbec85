"""Past one box: three gateway processes and two Celery workers sharing one PostgreSQL and one
Redis (the production shape: Redis is also the broker, as in ``deploy/compose.env.example``)
behave as one gateway. A tenant's limit holds exactly across all three, a routing change made in
one is followed by the others on their next request, a breaker opened by one refuses in the
others without calling the failing upstream, and a task delivered several times (to either
worker) runs once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from celery import Celery
from django.conf import settings

from gateway import services as gateway_services
from gateway.models import ModelVersion, Provider, ProviderDeployment, Tier
from gateway.pipeline.route import REFRESH_SECONDS, invalidate_routing
from llmplatform.actors import SYSTEM
from llmplatform.models import AuditEvent
from privacy.models import ErasureReceipt, SubjectRequest
from privacy.subject_requests import services as request_services

from .conftest import free_port, gateway_process_env, route_alias
from .upstreams import OpenAIUpstream

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

LIMIT = 5  # the tenant's requests per minute
TASKS = 6  # subject requests, each delivered three times


def shared_env() -> dict[str, str]:
    """What every process of the platform gets: the test's database and Redis, Redis as the
    Celery broker too."""
    return gateway_process_env({"CELERY_BROKER_URL": settings.REDIS_URL or ""})


def ask(url: str, key: str, text: str) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions",
        timeout=30,
        headers={"Authorization": f"Bearer {key}"},
        # Not temperature 0: nothing here may come from the response cache.
        json={
            "model": "default",
            "temperature": 0.5,
            "messages": [{"role": "user", "content": text}],
        },
    )


def error_code(response: httpx.Response) -> str | None:
    try:
        return response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


@pytest.fixture
def workers(tmp_path: Path, transactional_db) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Two Celery workers (prefork, one child each) consuming from the shared Redis broker."""
    started = []
    for index in range(2):
        log = open(tmp_path / f"worker-{index}.log", "wb")  # noqa: SIM115 - closed below
        started.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "llmplatform",
                    "worker",
                    "-c",
                    "1",
                    "-n",
                    f"scale{index}@%h",
                    "-l",
                    "info",
                    "--without-gossip",
                    "--without-mingle",
                ],
                env=shared_env(),
                cwd=settings.BASE_DIR,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        log.close()
    yield started
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process in started:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def start_gateways(count: int) -> list[tuple[subprocess.Popen[bytes], str]]:
    """``count`` gateway processes (uvicorn, one worker each) started side by side."""
    started = []
    for _ in range(count):
        port = free_port()
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
            ],
            env=shared_env(),
            cwd=settings.BASE_DIR,
        )
        started.append((process, f"http://127.0.0.1:{port}"))
    # Generous: three Django processes importing at once on a busy 2-core machine took over a
    # minute; what the test measures starts after they answer.
    deadline = time.monotonic() + 180
    for process, url in started:
        while True:
            try:
                httpx.get(f"{url}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("a gateway process did not start") from None
                time.sleep(0.1)
    return started


@pytest.fixture
def gateways(transactional_db) -> Iterator[Callable[[], list[str]]]:
    """Called by the test once the rows they route by exist; stopped here."""
    processes: list[tuple[subprocess.Popen[bytes], str]] = []

    def start() -> list[str]:
        processes.extend(start_gateways(3))
        return [url for _, url in processes]

    yield start
    for process, _ in processes:
        process.terminate()
    for process, _ in processes:
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_for_a_quiet_minute_start() -> None:
    """Limits count in fixed minute windows: a burst that straddles a minute's end would be
    counted in two windows. Start it early in a minute."""
    into = time.time() % 60
    if into > 52:
        time.sleep(60.5 - into)


def test_three_gateways_and_two_workers_behave_as_one(
    principals, key_a, key_b, workers, gateways, tmp_path
):
    with OpenAIUpstream(reply="blue") as blue, OpenAIUpstream(reply="green") as green:
        # Tenant A on a tier of LIMIT requests a minute; tenant B (key_b) keeps the default tier
        # for the routing and breaker checks.
        limited = Tier.objects.create(name="limited", requests_per_minute=LIMIT)
        gateway_services.tenant_set_tier(actor=SYSTEM, tenant=principals.tenant_a, tier=limited)
        alias = route_alias("default", blue.base_url)
        provider = Provider.objects.create(
            name="green-provider", kind="openai", base_url=green.base_url
        )
        green_deployment = ProviderDeployment.objects.create(
            name="green-deployment",
            provider=provider,
            model="m",
            max_attempts=1,
            breaker_failure_threshold=2,
            breaker_recovery_seconds=300,
        )
        ModelVersion.objects.create(
            alias=alias, version="v2", deployment=green_deployment, weight=0
        )
        urls = gateways()
        # Each process's first request pays for its imports, connections and scripts.
        for url in urls:
            assert ask(url, key_b, "warm up").status_code == 200

        # 1. The tenant's limit is exact across the three: 3 x LIMIT requests at once, spread
        # round-robin, and exactly LIMIT are answered.
        wait_for_a_quiet_minute_start()
        with ThreadPoolExecutor(max_workers=3 * LIMIT) as pool:
            answers = list(
                pool.map(
                    lambda n: ask(urls[n % 3], key_a, f"limited {n}"),
                    range(3 * LIMIT),
                )
            )
        statuses = Counter(r.status_code for r in answers)
        assert statuses == {200: LIMIT, 429: 2 * LIMIT}, [r.text for r in answers]
        assert {error_code(r) for r in answers if r.status_code == 429} == {"rate_limit_exceeded"}
        assert len(blue.requests) == LIMIT + 3

        # 2. A routing change made in one process (a rollout's switch: weights by update(),
        # then the change published) is followed by every gateway on its next request.
        assert [
            ask(url, key_b, "which?").json()["choices"][0]["message"]["content"] for url in urls
        ] == ["blue"] * 3
        ModelVersion.objects.filter(alias=alias).update(weight=0)
        ModelVersion.objects.filter(alias=alias, version="v2").update(weight=100)
        invalidate_routing()
        assert REFRESH_SECONDS >= 5  # well outside this test's next seconds
        assert [
            ask(url, key_b, "which now?").json()["choices"][0]["message"]["content"] for url in urls
        ] == ["green"] * 3
        assert [r.json["model"] for r in green.requests] == ["m"] * 3

        # 3. A breaker opened by one gateway is open in the others at once: each refuses its
        # next request with circuit_open and the failing upstream is not called again. (Each
        # of them served a request well inside the second it keeps a closed state.)
        green.behaviour = "error500"
        for attempt in range(5):
            response = ask(urls[0], key_b, f"failing {attempt}")
            if error_code(response) == "circuit_open":
                break
        assert response.status_code == 503 and error_code(response) == "circuit_open"
        calls = len(green.requests)
        for url in urls[1:]:
            refused = ask(url, key_b, "still failing?")
            assert refused.status_code == 503, refused.text
            assert error_code(refused) == "circuit_open"
        assert len(green.requests) == calls

    # 4. Tasks delivered more than once, to either of two workers, run once: erasures approved
    # by an officer in another process (each enqueued on commit), then each delivered twice
    # more, as a broker redelivers after a lost acknowledgement.
    requests = [
        request_services.subject_request_create(
            tenant=principals.tenant_a,
            kind=SubjectRequest.Kind.ERASURE,
            law="gdpr",
            source=SubjectRequest.Source.API,
            external_id=f"scale-subject-{n}",
            actor=SYSTEM,
        )
        for n in range(TASKS)
    ]
    ids = [r.pk for r in requests]
    approve = (
        "from llmplatform.actors import Actor\n"
        "from privacy.models import SubjectRequest\n"
        "from privacy.subject_requests import services\n"
        f"for r in SubjectRequest.objects.filter(pk__in={ids!r}):\n"
        "    services.subject_request_approve(actor=Actor.system('scale-test'), request=r)\n"
    )
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", approve],
        env=shared_env(),
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    # Not the current app: shared tasks resolve against the current app, and the rest of the
    # suite runs them eagerly on the platform's app.
    broker = Celery(broker=settings.REDIS_URL, set_as_current=False)
    try:
        for _ in range(2):
            for pk in ids:
                broker.send_task("privacy.execute_subject_request", args=[pk])
    finally:
        broker.close()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        finished = SubjectRequest.objects.filter(pk__in=ids, state="completed").count()
        if finished == TASKS:
            break
        time.sleep(0.5)
    logs = "\n".join(p.read_text(errors="replace")[-3000:] for p in tmp_path.glob("worker-*.log"))
    assert finished == TASKS, logs
    # Let any duplicate still in flight finish before counting effects.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _pending(settings.REDIS_URL):
        time.sleep(0.5)
    time.sleep(1.0)
    completions = Counter(
        AuditEvent.objects.filter(
            action="subject_request.complete", object_id__in=[str(pk) for pk in ids]
        ).values_list("object_id", flat=True)
    )
    assert completions == {str(pk): 1 for pk in ids}
    assert ErasureReceipt.objects.filter(request_id__in=ids).count() == TASKS
    # Both workers took deliveries: the claim, not a single consumer, kept it to one run each.
    received = [
        p.read_text(errors="replace").count("Task privacy.execute_subject_request")
        for p in sorted(tmp_path.glob("worker-*.log"))
    ]
    assert sum(received) >= TASKS and all(received), received


def _pending(redis_url: str | None) -> int:
    """Messages still queued or unacknowledged on the Redis broker."""
    from redis import Redis

    with Redis.from_url(redis_url or "") as client:
        return int(client.llen("celery")) + int(client.hlen("unacked"))
