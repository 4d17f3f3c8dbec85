"""The embedded default keeps its promises with no service installed: ``manage.py runplatform``
(what `make run` runs) starts a real Celery worker and beat on the file broker, with the same
schedule as production, and every process shares one response cache. So retention purges run,
an erasure approved in the admin reaches the gateway's cache, a failing canary rolls itself
back, and /readyz names a worker or beat that is down.

The model server is the stand-in (tests/standin_model_server.py), already answering where the
launcher looks for it, so these tests need no llama.cpp; the real model is test_launcher's.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from llmplatform.launcher import answers
from tests.conftest import free_port
from tests.platform_process import RunningPlatform, minimal_env, running_platform

pytestmark = pytest.mark.slow

PURGE_SECONDS = 3
HEARTBEAT_SECONDS = 2
ADMIN_PASSWORD = "embedded-tasks-admin-pass"
STARTUP_TIMEOUT = 180.0


@pytest.fixture(scope="module")
def standin() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).with_name("standin_model_server.py")),
            "--port",
            str(port),
            "--alias",
            "gemma-3-270m",
            "--cpu",
            "standin",
        ],
        stdout=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 20
        while not answers(f"{url}/models"):
            assert time.monotonic() < deadline, "the stand-in model server did not start"
            time.sleep(0.1)
        yield url
    finally:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def platform(standin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    port = free_port()
    env = minimal_env(
        LLMP_DATA_DIR=str(tmp_path_factory.mktemp("llmp-embedded")),
        LLMP_PORT=str(port),
        LLMP_LOCAL_MODEL_URL=standin,
        DEMO_ADMIN_PASSWORD=ADMIN_PASSWORD,
        # Shorter than production's hourly purge and 30 s heartbeat, so the tests take seconds.
        LLMP_RETENTION_PURGE_SECONDS=str(PURGE_SECONDS),
        LLMP_CELERY_HEARTBEAT_SECONDS=str(HEARTBEAT_SECONDS),
        # The admin is driven over HTTP below; its second factor has tests of its own.
        LLMP_ADMIN_REQUIRE_2FA="off",
    )
    with running_platform(env, port=port, model_url=standin, timeout=STARTUP_TIMEOUT) as running:
        yield running


def _wait_for(what: str, condition: Callable[[], Any], *, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout:.0f}s: {what}")
        time.sleep(0.25)


def _db(platform: RunningPlatform) -> sqlite3.Connection:
    """The platform's own database (read from here; it is a file in its data directory)."""
    return sqlite3.connect(Path(platform.env["LLMP_DATA_DIR"]) / "db.sqlite3", timeout=10)


def _count(platform: RunningPlatform, sql: str, *params: object) -> int:
    with _db(platform) as conn:
        return int(conn.execute(sql, params).fetchone()[0])


def _checks(platform: RunningPlatform) -> dict[str, dict[str, Any]]:
    return httpx.get(f"{platform.base_url}/readyz", timeout=10).json()["checks"]


def _chat(
    platform: RunningPlatform,
    *,
    model: str = "default",
    user: str | None = None,
    temperature: float | None = None,
) -> httpx.Response:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": "Hello there"}],
    }
    if user is not None:
        body["user"] = user
    if temperature is not None:
        body["temperature"] = temperature
    return httpx.post(
        f"{platform.base_url}/v1/chat/completions",
        json=body,
        timeout=30,
        headers={"Authorization": f"Bearer {platform.key}"},
    )


def _printed(output: str, tag: str) -> int:
    """The number a shell snippet printed after ``tag`` (Django's shell may print more)."""
    found = re.search(rf"^{tag} (\d+)", output, re.MULTILINE)
    assert found, output
    return int(found[1])


def _worker_log(platform: RunningPlatform) -> str:
    path = Path(platform.env["LLMP_DATA_DIR"]) / "logs" / "celery-worker.log"
    return path.read_text(errors="replace") if path.exists() else ""


# --- Worker, beat and their health ------------------------------------------------------------


def test_the_banner_names_the_worker_and_beat_and_readyz_shows_their_heartbeat(
    platform: RunningPlatform,
):
    banner = "\n".join(platform.output)
    assert re.search(
        r"Tasks +Celery worker and beat \(worker pid \d+, beat pid \d+; file broker", banner
    ), banner
    assert {"celery worker", "celery beat"} <= platform.child_pids.keys()

    # Beat sends a heartbeat every 2 s, the worker runs it, /readyz reads its age.
    checks = _wait_for(
        "a heartbeat in /readyz",
        lambda: (
            (c := _checks(platform))["celery_worker"]["ok"]
            and "last heartbeat" in c["celery_worker"]["detail"]
            and c
        ),
        timeout=30,
    )
    assert checks["celery_beat"]["ok"]
    assert checks["celery_worker"]["detail"].startswith("running (pid ")
    assert httpx.get(f"{platform.base_url}/readyz", timeout=10).status_code == 200


# --- Retention ----------------------------------------------------------------------------------

_RECORDS = """
from datetime import timedelta
from django.utils import timezone
from privacy import services
from privacy.models import Conversation
from llmplatform.actors import Actor
from llmplatform.models import Tenant

tenant = Tenant.objects.get(slug="demo")
records = {}
for external_id in ("expired-subject", "current-subject"):
    subject = services.subject_get_or_create(tenant=tenant, external_id=external_id)
    services.consent_set(actor=Actor.system("test"), subject=subject,
                         purpose="store_conversations", granted=True, source="api")
    records[external_id] = services.conversation_store(
        tenant=tenant, external_id=external_id, alias="default",
        request_id="r-" + external_id, prompt="hi", response="hello")
Conversation.objects.filter(pk=records["current-subject"].pk).update(
    expires_at=timezone.now() + timedelta(days=30))
# Past its TTL from this moment (the update is committed when it returns): no purge could have
# removed it before.
Conversation.objects.filter(pk=records["expired-subject"].pk).update(
    expires_at=timezone.now() - timedelta(days=1))
print("EXPIRED", timezone.now().isoformat())
"""

_CONVERSATIONS = (
    "SELECT count(*) FROM privacy_conversation c JOIN privacy_datasubject s "
    "ON c.subject_id = s.id WHERE s.external_id = ?"
)


def _purge_runs(platform: RunningPlatform) -> list[tuple[datetime, datetime | None, int]]:
    """The retention purge's runs as the platform records them (privacy.PurgeRun): started,
    finished (None while it runs) and how many records each deleted, oldest first."""
    with _db(platform) as conn:
        rows = conn.execute(
            "SELECT started_at, finished_at, deleted FROM privacy_purgerun ORDER BY started_at"
        ).fetchall()
    return [
        (_utc(started), _utc(finished) if finished else None, n) for started, finished, n in rows
    ]


def _utc(stored: str) -> datetime:
    """A datetime as Django stores it in SQLite (UTC, without the offset)."""
    return datetime.fromisoformat(stored).replace(tzinfo=UTC)


def test_a_record_past_its_ttl_is_gone_within_one_purge_interval(platform: RunningPlatform):
    # Written by another process (as any process of the platform could), purged by beat and
    # the worker, with nobody calling the purge.
    printed = re.search(r"^EXPIRED (\S+)", platform.manage("shell", "-c", _RECORDS), re.M)
    assert printed, "the records were not written"
    expired = datetime.fromisoformat(printed[1])

    def first_run_after_expiry_finished() -> tuple[datetime, datetime | None, int] | None:
        after = [run for run in _purge_runs(platform) if run[0] > expired]
        return after[0] if after and after[0][1] is not None else None

    # The first purge that starts after the record expired (beat sends one every 3 s), once it
    # has finished. The timeout only bounds a broken platform; what is asserted is which run
    # removed the record, not how long it took.
    first_after = _wait_for(
        "the first purge run after the record expired, finished",
        first_run_after_expiry_finished,
        timeout=60,
    )

    # That run (or one already under way when the record expired, whose delete came after)
    # removed it: gone by the end of the first purge after its TTL, not at some later one.
    assert _count(platform, _CONVERSATIONS, "expired-subject") == 0
    removed_by = [
        run
        for run in _purge_runs(platform)
        if run[2] >= 1 and run[1] is not None and run[1] >= expired and run[0] <= first_after[0]
    ]
    assert len(removed_by) == 1, (expired, first_after, _purge_runs(platform))
    assert _count(platform, _CONVERSATIONS, "current-subject") == 1  # not yet expired: kept
    assert "privacy.purge_expired_conversations" in _worker_log(platform)


# --- Erasure through the admin reaches the gateway's cache --------------------------------------

_CONSENT = """
from privacy import services
from llmplatform.actors import Actor
from llmplatform.models import Tenant
subject = services.subject_get_or_create(tenant=Tenant.objects.get(slug="demo"),
                                         external_id="erin")
services.consent_set(actor=Actor.system("test"), subject=subject,
                     purpose="store_conversations", granted=True, source="api")
print("consented")
"""

_ERASURE_REQUEST = """
from privacy.subject_requests import services as request_services
from privacy.models import SubjectRequest as SR
from llmplatform.actors import Actor
from llmplatform.models import Tenant
request = request_services.subject_request_create(
    tenant=Tenant.objects.get(slug="demo"), kind=SR.Kind.ERASURE, law=SR.Law.GDPR,
    source=SR.Source.API, external_id="erin", actor=Actor.system("test"))
print("REQUEST", request.pk, request.state)
"""


def _admin_session(platform: RunningPlatform) -> httpx.Client:
    client = httpx.Client(base_url=platform.base_url, timeout=30, follow_redirects=True)
    client.get("/admin/login/")
    signed_in = client.post(
        "/admin/login/?next=/admin/",
        data={
            "username": "admin",
            "password": ADMIN_PASSWORD,
            "csrfmiddlewaretoken": client.cookies["csrftoken"],
            "next": "/admin/",
        },
        headers={"Referer": f"{platform.base_url}/admin/login/"},
    )
    assert signed_in.status_code == 200 and "Log out" in signed_in.text, signed_in.text[:2000]
    return client


def test_an_erasure_approved_in_the_admin_removes_records_and_cached_answers(
    platform: RunningPlatform,
):
    assert "consented" in platform.manage("shell", "-c", _CONSENT)
    first = _chat(platform, user="erin", temperature=0)
    second = _chat(platform, user="erin", temperature=0)
    assert (first.status_code, second.status_code) == (200, 200), first.text
    assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("MISS", "HIT")
    _wait_for(
        "erin's conversation record",
        lambda: _count(platform, _CONVERSATIONS, "erin") >= 1,
        timeout=15,
    )

    request_id = _printed(platform.manage("shell", "-c", _ERASURE_REQUEST), "REQUEST")
    admin = _admin_session(platform)
    try:
        page = admin.get("/admin/privacy/subjectrequest/")
        assert page.status_code == 200
        approved = admin.post(
            "/admin/privacy/subjectrequest/",
            data={
                "action": "approve",
                "_selected_action": str(request_id),
                "index": "0",
                "csrfmiddlewaretoken": admin.cookies["csrftoken"],
            },
            headers={"Referer": f"{platform.base_url}/admin/privacy/subjectrequest/"},
        )
    finally:
        admin.close()
    assert approved.status_code == 200 and "Approved 1 request" in approved.text

    # The worker carries it out: the records go, and the web process no longer serves the
    # subject's cached answer (the cache is one file that both processes use).
    _wait_for(
        "the erasure completed",
        lambda: (
            _count(
                platform,
                "SELECT count(*) FROM privacy_subjectrequest WHERE id = ? AND state = ?",
                request_id,
                "completed",
            )
            == 1
        ),
        timeout=30,
    )
    assert _count(platform, _CONVERSATIONS, "erin") == 0
    assert _chat(platform, user="erin", temperature=0).headers["X-Cache"] == "MISS"
    receipt = _count(
        platform, "SELECT count(*) FROM privacy_erasurereceipt WHERE request_id = ?", request_id
    )
    assert receipt == 1


# --- A failing canary rolls itself back -----------------------------------------------------

_CANARY = """
from gateway.models import ModelAlias, ModelVersion, Provider, ProviderDeployment
from deployments.rollouts import services
from django.contrib.auth import get_user_model
from llmplatform.actors import Actor

alias = ModelAlias.objects.create(name="canary")
versions = []
for version, url, weight in (("v1", "{stable}", 100), ("v2", "http://127.0.0.1:9/v1", 0)):
    provider = Provider.objects.create(name="canary-" + version, kind="openai", base_url=url)
    deployment = ProviderDeployment.objects.create(
        name="canary-" + version, provider=provider, model="gemma-3-270m", max_attempts=1,
        input_price_per_1k="0.001", output_price_per_1k="0.002")
    versions.append(ModelVersion.objects.create(alias=alias, version=version,
                                                deployment=deployment, weight=weight))
officer = get_user_model().objects.get(username="admin")
officer = Actor.for_user(officer)
rollout = services.rollout_create(actor=officer, alias=alias, stable_version=versions[0],
                                  candidate_version=versions[1], stages=[50, 100],
                                  min_requests=5, with_checklist=False)
services.rollout_start(actor=officer, rollout=rollout)
print("ROLLOUT", rollout.pk)
"""

_WEIGHTS = (
    "SELECT v.version, v.weight FROM gateway_modelversion v JOIN gateway_modelalias a "
    "ON v.alias_id = a.id WHERE a.name = ? ORDER BY v.version"
)


def test_a_canary_whose_candidate_fails_is_rolled_back_by_beat_and_the_worker(
    platform: RunningPlatform,
):
    rollout_id = _printed(
        platform.manage("shell", "-c", _CANARY.replace("{stable}", platform.model_url)), "ROLLOUT"
    )
    with _db(platform) as conn:
        assert conn.execute(_WEIGHTS, ("canary",)).fetchall() == [("v1", 50), ("v2", 50)]

    # Saved by another process: the gateway follows within a second (no Redis to tell it).
    _wait_for(
        "the new alias routed",
        lambda: _chat(platform, model="canary", user="probe").status_code != 404,
        timeout=3,
    )

    # Real traffic: about half of it goes to the candidate, whose upstream refuses connections.
    failures = 0
    for i in range(30):
        reply = _chat(platform, model="canary", user=f"canary-user-{i}")
        failures += reply.status_code >= 500
    assert failures >= 5

    # Nobody calls the evaluation: beat sends it every 15 s and the worker rolls back.
    _wait_for(
        "the rollout rolled back",
        lambda: (
            _count(
                platform,
                "SELECT count(*) FROM rollouts_rollout WHERE id = ? AND state = ?",
                rollout_id,
                "rolled_back",
            )
            == 1
        ),
        timeout=45,
    )
    with _db(platform) as conn:
        assert conn.execute(_WEIGHTS, ("canary",)).fetchall() == [("v1", 100), ("v2", 0)]
    # The gateway follows the rollback within a second: every answer from v1.
    time.sleep(1.5)
    served = {
        _chat(platform, model="canary", user=f"after-{i}").headers.get("x-llmp-model-version")
        for i in range(10)
    }
    assert served == {"v1"}


# --- A dead worker or beat: named by /readyz, restarted by the launcher -------------------------


@pytest.mark.parametrize(
    "name,check", [("celery worker", "celery_worker"), ("celery beat", "celery_beat")]
)
def test_a_killed_celery_process_is_named_by_readyz_and_restarted(
    platform: RunningPlatform, name: str, check: str
):
    pid = platform.child_pids[name]
    # Hold the launcher so the gap cannot close before /readyz is asked.
    os.kill(platform.process.pid, signal.SIGSTOP)
    try:
        os.killpg(pid, signal.SIGKILL)
        status = _wait_for(
            f"/readyz naming the {name}",
            lambda: (
                (r := httpx.get(f"{platform.base_url}/readyz", timeout=10)).status_code == 503
                and not r.json()["checks"][check]["ok"]
                and r
            ),
            timeout=15,
        )
        assert f"pid {pid} is gone" in status.json()["checks"][check]["detail"]
    finally:
        os.kill(platform.process.pid, signal.SIGCONT)

    _wait_for(f"the {name} restarted", lambda: platform.child_pids[name] != pid, timeout=20)
    assert any(f"{name} (pid {pid}) was killed by SIGKILL" in line for line in platform.output)
    checks = _wait_for(
        f"/readyz with the {name} back",
        lambda: (c := _checks(platform))[check]["ok"] and "restarts 1" in c[check]["detail"] and c,
        timeout=20,
    )
    assert checks[check]["detail"].startswith("running")


def test_sigint_stops_the_worker_and_beat_with_the_rest(platform: RunningPlatform):
    pids = [platform.child_pids[name] for name in ("celery worker", "celery beat")]

    platform.process.send_signal(signal.SIGINT)

    assert platform.process.wait(timeout=40) == 0
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
