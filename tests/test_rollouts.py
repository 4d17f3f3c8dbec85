"""Model rollouts through the live gateway: canary stages that roll themselves back when the
candidate fails, blue-green switch and switch back on the next request, sticky users, the
cache namespace bumped by a version change, the guard's thresholds, and the admin pages."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from django.core import mail
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from deployments.rollouts import selectors, services, tasks
from deployments.rollouts.models import Rollout, RolloutStep
from gateway.models import Tier, UsageRecord
from gateway.pipeline import authenticate
from llmplatform.actors import Actor
from llmplatform.models import AuditEvent
from privacy.models import PrivacyPolicy

from .rollouts_support import (  # noqa: F401 - fast_password_hashing is an autouse fixture
    alias_with_two_versions,
    chat,
    fast_password_hashing,
    grant,
    usage_rows,
    weights,
)
from .upstreams import OpenAIUpstream

Action = RolloutStep.Action


@pytest.fixture
def unlimited(tier: Tier) -> Tier:
    """The tests send more requests a minute than the test tier allows."""
    Tier.objects.filter(pk=tier.pk).update(requests_per_minute=0, requests_per_hour=0)
    authenticate.clear_cache()
    return tier


@pytest.fixture
def officer(django_user_model):
    user = django_user_model.objects.create_user("olivia", email="olivia@example.org")
    grant(
        user, "receive_rollout_alerts", "override_checklist_gate", "change_rollout", "add_signoff"
    )
    return user


@pytest.fixture
def upstreams():
    with (
        OpenAIUpstream(reply="from stable") as stable,
        OpenAIUpstream(reply="from candidate") as candidate,
    ):
        yield stable, candidate


def _canary(officer, alias, stable, candidate, **fields) -> Rollout:
    fields.setdefault("with_checklist", False)
    return services.rollout_create(
        actor=Actor.for_user(officer),
        alias=alias,
        stable_version=stable,
        candidate_version=candidate,
        **fields,
    )


# --- the live gateway -------------------------------------------------------------------------


@pytest.mark.slow
def test_a_canary_whose_candidate_fails_rolls_itself_back_and_traffic_returns_to_stable(
    gateway_server, principals, key_a, unlimited, officer, upstreams
):
    stable_up, candidate_up = upstreams
    candidate_up.behaviour = "error500"
    alias, v1, v2 = alias_with_two_versions(stable_up.base_url, candidate_up.base_url)
    rollout = _canary(officer, alias, v1, v2, stages=[25, 50, 100], min_requests=5)
    services.rollout_start(actor=Actor.for_user(officer), rollout=rollout)
    assert weights(alias) == {"v1": 75, "v2": 25}

    served = Counter()
    for i in range(40):
        response = chat(gateway_server, key_a, user=f"user-{i}")
        served[(response.headers["x-llmp-model-version"], response.status_code >= 500)] += 1
    # Real traffic reached both versions; every candidate request failed (502 from the
    # upstream's 500s, then 503 once the candidate's circuit breaker opened).
    failed = served[("v2", True)]
    assert failed >= 5 and served[("v1", False)] >= 20
    assert set(served) == {("v1", False), ("v2", True)}
    assert len(candidate_up.requests) >= 5

    assert tasks.evaluate_rollouts() == {"rolled_back": 1}

    rollout.refresh_from_db()
    assert rollout.state == Rollout.State.ROLLED_BACK and rollout.candidate_percent == 0
    assert weights(alias) == {"v1": 100, "v2": 0}
    after = [chat(gateway_server, key_a, user=f"user-{i}") for i in range(40)]
    assert {(r.status_code, r.headers["x-llmp-model-version"]) for r in after} == {(200, "v1")}

    step = rollout.steps.get(action=Action.AUTO_ROLLED_BACK)
    assert step.actor == services.GUARD_ACTOR.label and (step.from_percent, step.to_percent) == (
        25,
        0,
    )
    assert step.figures["candidate"]["errors"] == failed
    assert step.figures["candidate"]["error_rate"] == 100.0
    assert step.figures["stable"]["error_rate"] == 0.0
    assert "error rate" in step.reason
    assert len(mail.outbox) == 1
    alert = mail.outbox[0]
    assert alert.to == ["olivia@example.org"] and "rolled back" in alert.subject
    assert "v1" in alert.body and f"/admin/rollouts/rollout/{rollout.pk}/change/" in alert.body
    event = AuditEvent.objects.get(action="rollout.auto_rolled_back")
    assert event.actor == services.GUARD_ACTOR.label and event.after["state"] == "rolled_back"
    # A second evaluation finds nothing to do.
    assert tasks.evaluate_rollouts() == {}


@pytest.mark.slow
def test_blue_green_switches_and_switches_back_on_the_next_request(
    gateway_server, principals, key_a, unlimited, officer, upstreams
):
    stable_up, candidate_up = upstreams
    alias, v1, v2 = alias_with_two_versions(stable_up.base_url, candidate_up.base_url)
    rollout = _canary(officer, alias, v1, v2, strategy=Rollout.Strategy.BLUE_GREEN)
    assert chat(gateway_server, key_a).json()["choices"][0]["message"]["content"] == "from stable"

    services.rollout_start(actor=Actor.for_user(officer), rollout=rollout)
    # The green slot answered a health probe before it got any traffic.
    assert candidate_up.requests[0].json["max_tokens"] == 1
    switched = chat(gateway_server, key_a)
    assert switched.headers["x-llmp-model-version"] == "v2"
    assert switched.json()["choices"][0]["message"]["content"] == "from candidate"

    services.rollout_switch_back(
        actor=Actor.for_user(officer), rollout=rollout, reason="customer complaint"
    )
    back = chat(gateway_server, key_a)
    assert back.headers["x-llmp-model-version"] == "v1"
    assert back.json()["choices"][0]["message"]["content"] == "from stable"
    rollout.refresh_from_db()
    assert rollout.state == Rollout.State.ROLLED_BACK
    assert list(rollout.steps.values_list("action", flat=True)) == [
        Action.CREATED,
        Action.HEALTH_PROBE,
        Action.STARTED,
        Action.SWITCHED_BACK,
    ]
    assert AuditEvent.objects.filter(action="rollout.switched_back", actor="user:olivia").exists()


@pytest.mark.slow
def test_a_version_change_bumps_the_cache_namespace(
    gateway_server, principals, key_a, unlimited, officer, upstreams
):
    stable_up, candidate_up = upstreams
    alias, v1, v2 = alias_with_two_versions(stable_up.base_url, candidate_up.base_url)
    rollout = _canary(officer, alias, v1, v2, strategy=Rollout.Strategy.BLUE_GREEN)
    assert chat(gateway_server, key_a, temperature=0).headers["X-Cache"] == "MISS"
    assert chat(gateway_server, key_a, temperature=0).headers["X-Cache"] == "HIT"

    services.rollout_start(actor=Actor.for_user(officer), rollout=rollout)
    green = chat(gateway_server, key_a, temperature=0)
    assert (green.headers["X-Cache"], green.headers["x-llmp-model-version"]) == ("MISS", "v2")

    services.rollout_switch_back(actor=Actor.for_user(officer), rollout=rollout)
    stable_calls = len(stable_up.requests)
    blue = chat(gateway_server, key_a, temperature=0)
    # The answer v1 gave before the switch is not served again: the namespace moved on.
    assert (blue.headers["X-Cache"], blue.headers["x-llmp-model-version"]) == ("MISS", "v1")
    assert len(stable_up.requests) == stable_calls + 1


@pytest.mark.slow
def test_a_canary_split_keeps_each_user_on_one_version(
    gateway_server, principals, key_a, unlimited, officer, upstreams
):
    stable_up, candidate_up = upstreams
    alias, v1, v2 = alias_with_two_versions(stable_up.base_url, candidate_up.base_url)
    rollout = _canary(officer, alias, v1, v2, stages=[25, 50, 100])
    services.rollout_start(actor=Actor.for_user(officer), rollout=rollout)
    users = [f"user-{i}" for i in range(30)]

    def versions() -> dict[str, str]:
        return {
            u: chat(gateway_server, key_a, user=u).headers["x-llmp-model-version"] for u in users
        }

    at_25 = versions()
    assert versions() == at_25  # the same user lands on the same version every time
    assert set(at_25.values()) == {"v1", "v2"}
    services.rollout_advance(actor=Actor.for_user(officer), rollout=rollout)
    at_50 = versions()
    moved = {u for u in users if at_25[u] != at_50[u]}
    # Growing the candidate's share moves users from stable to candidate, never back.
    assert all(at_25[u] == "v1" and at_50[u] == "v2" for u in moved)
    assert sum(v == "v2" for v in at_50.values()) > sum(v == "v2" for v in at_25.values())


def test_a_candidate_that_fails_its_health_probe_gets_no_traffic(
    transactional_db, principals, officer, upstreams
):
    stable_up, candidate_up = upstreams
    candidate_up.behaviour = "error500"
    alias, v1, v2 = alias_with_two_versions(stable_up.base_url, candidate_up.base_url)
    rollout = _canary(officer, alias, v1, v2, strategy=Rollout.Strategy.BLUE_GREEN)
    with pytest.raises(services.RolloutError, match="health probe"):
        services.rollout_start(actor=Actor.for_user(officer), rollout=rollout)
    rollout.refresh_from_db()
    assert rollout.state == Rollout.State.PENDING and weights(alias) == {"v1": 100, "v2": 0}
    probe = rollout.steps.get(action=Action.HEALTH_PROBE)
    assert probe.reason.startswith("failed") and probe.figures == {"ok": False}


# --- the guard and the schedule, from usage records ---------------------------------------------


@pytest.fixture
def live_canary(db, principals, officer, django_capture_on_commit_callbacks):
    alias, v1, v2 = alias_with_two_versions("http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1")
    rollout = _canary(officer, alias, v1, v2, min_requests=20)
    with django_capture_on_commit_callbacks(execute=True):
        services.rollout_start(actor=Actor.for_user(officer), rollout=rollout)
    return rollout


def test_the_guard_waits_for_the_minimum_number_of_candidate_requests(live_canary, principals):
    usage_rows(principals.tenant_a, "default", "v1", 100)
    usage_rows(principals.tenant_a, "default", "v2", 19, status=502)
    assert services.rollout_evaluate(rollout_id=live_canary.pk) == "healthy"
    usage_rows(principals.tenant_a, "default", "v2", 1, status=502)
    assert services.rollout_evaluate(rollout_id=live_canary.pk) == "rolled_back"


def test_a_candidate_within_the_threshold_keeps_its_traffic(live_canary, principals):
    tenant = principals.tenant_a
    usage_rows(tenant, "default", "v1", 98)
    usage_rows(tenant, "default", "v1", 2, status=503)  # stable: 2 % errors
    usage_rows(tenant, "default", "v2", 96)
    usage_rows(tenant, "default", "v2", 4, status=504)  # candidate: 4 %, 2 points above
    # Client-side outcomes and plain cache hits do not count against a version.
    usage_rows(tenant, "default", "v2", 30, status=429)
    usage_rows(tenant, "default", "v2", 30, status=200, cache_hit=True)
    assert services.rollout_evaluate(rollout_id=live_canary.pk) == "healthy"
    live_canary.refresh_from_db()
    assert live_canary.state == Rollout.State.IN_PROGRESS
    assert live_canary.last_figures["candidate"]["requests"] == 100
    assert live_canary.last_figures["candidate"]["error_rate"] == 4.0
    # One more failure (or an answer only a fallback could give) crosses the line.
    usage_rows(tenant, "default", "v2", 1, status=200, fallback_reason="upstream_timeout")
    assert services.rollout_evaluate(rollout_id=live_canary.pk) == "rolled_back"


def test_errors_outside_the_window_are_forgotten(live_canary, principals):
    Rollout.objects.filter(pk=live_canary.pk).update(started_at=timezone.now() - timedelta(hours=1))
    old = timezone.now() - timedelta(minutes=6)
    usage_rows(principals.tenant_a, "default", "v2", 50, status=502, at=old)
    usage_rows(principals.tenant_a, "default", "v2", 50)
    assert services.rollout_evaluate(rollout_id=live_canary.pk) == "healthy"


def test_the_latency_guard_rolls_back_a_slow_candidate(live_canary, principals):
    usage_rows(principals.tenant_a, "default", "v1", 50, latency_ms=800)
    usage_rows(principals.tenant_a, "default", "v2", 18, latency_ms=900)
    usage_rows(principals.tenant_a, "default", "v2", 2, latency_ms=7000)
    assert services.rollout_evaluate(rollout_id=live_canary.pk) == "rolled_back"
    step = live_canary.steps.get(action=Action.AUTO_ROLLED_BACK)
    assert "P95" in step.reason and step.figures["candidate"]["p95_ms"] == 7000.0


def test_a_scheduled_canary_advances_only_with_enough_healthy_traffic(
    db, principals, officer, time_machine, django_capture_on_commit_callbacks
):
    alias, v1, v2 = alias_with_two_versions("http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1")
    rollout = _canary(
        officer,
        alias,
        v1,
        v2,
        stages=[10, 100],
        min_requests=10,
        advance_every=timedelta(minutes=30),
    )
    with django_capture_on_commit_callbacks(execute=True):
        services.rollout_start(actor=Actor.for_user(officer), rollout=rollout)
    usage_rows(principals.tenant_a, "default", "v2", 10)
    assert services.rollout_evaluate(rollout_id=rollout.pk) == "healthy"  # not due yet
    time_machine.move_to(timezone.now() + timedelta(minutes=31))
    assert services.rollout_evaluate(rollout_id=rollout.pk) == "healthy"  # due, no traffic
    usage_rows(principals.tenant_a, "default", "v2", 10)
    with django_capture_on_commit_callbacks(execute=True):
        assert services.rollout_evaluate(rollout_id=rollout.pk) == "advanced"
    assert weights(alias) == {"v1": 0, "v2": 100}
    time_machine.move_to(timezone.now() + timedelta(minutes=31))
    usage_rows(principals.tenant_a, "default", "v2", 10)
    assert services.rollout_evaluate(rollout_id=rollout.pk) == "completed"
    rollout.refresh_from_db()
    assert rollout.state == Rollout.State.COMPLETED
    assert list(rollout.steps.values_list("actor", flat=True))[-2:] == [
        services.SCHEDULE_ACTOR.label,
        services.SCHEDULE_ACTOR.label,
    ]


def test_the_management_command_evaluates_once(live_canary, principals, capsys):
    usage_rows(principals.tenant_a, "default", "v2", 20, status=502)
    call_command("evaluate_rollouts")
    assert "rolled_back: 1" in capsys.readouterr().out
    assert selectors.rollouts_in_progress().count() == 0


def test_a_stale_rollout_cannot_be_moved_twice(live_canary, officer):
    stale = Rollout.objects.get(pk=live_canary.pk)
    services.rollout_rollback(actor=Actor.for_user(officer), rollout=live_canary, reason="by hand")
    with pytest.raises(services.RolloutError):
        services.rollout_advance(actor=Actor.for_user(officer), rollout=stale)
    assert live_canary.steps.filter(action=Action.ROLLED_BACK).count() == 1


def test_only_one_unfinished_rollout_per_alias(live_canary, officer):
    with pytest.raises(services.RolloutError, match="unfinished rollout"):
        _canary(
            officer, live_canary.alias, live_canary.stable_version, live_canary.candidate_version
        )


def test_rollouts_in_progress_lists_live_rollouts_only(live_canary, officer):
    assert list(selectors.rollouts_in_progress()) == [live_canary]
    services.rollout_pause(actor=Actor.for_user(officer), rollout=live_canary)
    assert list(selectors.rollouts_in_progress()) == [live_canary]
    services.rollout_resume(actor=Actor.for_user(officer), rollout=live_canary)
    services.rollout_rollback(actor=Actor.for_user(officer), rollout=live_canary)
    assert list(selectors.rollouts_in_progress()) == []


# --- usage records: the version served, PII redactions -----------------------------------------


def test_usage_records_name_the_version_and_count_pii_redactions(
    client, principals, key_a, upstreams
):
    import json

    stable_up, candidate_up = upstreams
    alias_with_two_versions(stable_up.base_url, candidate_up.base_url)
    PrivacyPolicy.objects.update_or_create(
        tenant=principals.tenant_a, defaults={"upstream_pii": "mask"}
    )
    body = {
        "model": "default",
        "messages": [
            {
                "role": "user",
                "content": (
                    "Mail jane.doe@example.com or john@example.org, or call +1 415 555 0132."
                ),
            }
        ],
    }
    response = client.post(
        "/v1/chat/completions",
        data=json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key_a}",
    )
    assert response.status_code == 200
    record = UsageRecord.objects.get(request_id=response["X-Request-ID"])
    assert (record.version, record.pii_redactions) == ("v1", 3)


# --- the admin ----------------------------------------------------------------------------------


def _list_queries(admin_client) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get("/admin/rollouts/rollout/?open=live")
    assert response.status_code == 200
    return len(queries)


def test_the_rollout_list_runs_a_fixed_number_of_queries(
    admin_client, principals, officer, django_capture_on_commit_callbacks
):
    def live_rollout(name: str) -> None:
        alias, v1, v2 = alias_with_two_versions(
            "http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1", name=name
        )
        rollout = _canary(officer, alias, v1, v2)
        with django_capture_on_commit_callbacks(execute=True):
            services.rollout_start(actor=Actor.for_user(officer), rollout=rollout)

    live_rollout("first")
    one = _list_queries(admin_client)
    for name in ("second", "third", "fourth"):
        live_rollout(name)
    assert _list_queries(admin_client) == one
    page = admin_client.get("/admin/rollouts/rollout/?open=live").content.decode()
    assert "fourth: v1 -&gt; v2" in page and "v1 95% / v2 5%" in page


def test_an_officer_runs_a_rollout_from_its_page(admin_client, live_canary):
    url = f"/admin/rollouts/rollout/{live_canary.pk}/change/"
    page = admin_client.get(url).content.decode()
    assert "Timeline" in page and "Started" in page and "Roll back" in page
    response = admin_client.post(
        f"/admin/rollouts/rollout/{live_canary.pk}/act/rollback/",
        {"reason": "latency complaints"},
        follow=True,
    )
    assert "Rolled back to the stable version" in response.content.decode()
    live_canary.refresh_from_db()
    assert live_canary.state == Rollout.State.ROLLED_BACK
    step = live_canary.steps.get(action=Action.ROLLED_BACK)
    assert (step.actor, step.reason) == ("user:admin", "latency complaints")
    refused = admin_client.post(
        f"/admin/rollouts/rollout/{live_canary.pk}/act/advance/", follow=True
    )
    assert "Only a rollout in progress can advance" in refused.content.decode()


def test_an_officer_creates_a_rollout_in_the_admin(admin_client, principals):
    alias, v1, v2 = alias_with_two_versions("http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1")
    form = {
        "alias": alias.pk,
        "stable_version": v1.pk,
        "candidate_version": v1.pk,
        "strategy": "canary",
        "stages": "[5, 25, 50, 100]",
        "max_error_rate_increase": "2",
        "min_requests": "50",
        "window": "00:05:00",
        "p95_latency_limit_ms": "5000",
        "advance_every": "",
        "executor_kind": "gateway",
        "executor_config": "{}",
        "template": "",
    }
    invalid = admin_client.post("/admin/rollouts/rollout/add/", form)
    assert invalid.status_code == 200 and "Choose another version" in invalid.content.decode()
    response = admin_client.post(
        "/admin/rollouts/rollout/add/", {**form, "candidate_version": v2.pk}
    )
    assert response.status_code == 302
    rollout = Rollout.objects.get()
    assert (rollout.state, rollout.stages, rollout.created_by) == (
        "pending",
        [5, 25, 50, 100],
        "user:admin",
    )
    assert AuditEvent.objects.filter(action="rollout.created", actor="user:admin").exists()


def test_people_without_the_permission_cannot_act(
    client, live_canary, principals, django_user_model
):
    client.force_login(principals.charlie)  # a tenant owner, not staff
    assert client.get("/admin/rollouts/rollout/").status_code == 302
    assert client.post(f"/admin/rollouts/rollout/{live_canary.pk}/act/rollback/").status_code == 302
    live_canary.refresh_from_db()
    assert live_canary.state == Rollout.State.IN_PROGRESS
