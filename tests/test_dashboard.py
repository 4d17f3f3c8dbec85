"""The compliance officer's dashboard on the admin index: every figure is the real count of the
rows behind it, and its link opens the admin list filtered to exactly those rows."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from urllib.parse import urlsplit

import pytest
import time_machine
from asgiref.sync import async_to_sync
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.plugins.otp_totp.models import TOTPDevice

from deployments.backups.models import Backup, RestoreDrill
from deployments.compliance import selectors as compliance_selectors
from deployments.compliance.models import ComplianceFramework, ComplianceItem, EvidenceCheck
from deployments.rollouts.models import Rollout
from gateway import services as gateway_services
from gateway.models import (
    DeploymentBreaker,
    ModelVersion,
    SecurityEvent,
    TenantPlan,
    Tier,
    UsageRecord,
)
from gateway.resilience import services as breaker_services
from gateway.resilience.breaker import breaker_store
from gateway.resilience.policy import policy_for
from llmplatform.actors import SYSTEM, Actor
from llmplatform.adminsite import dashboard as admin_dashboard
from llmplatform.adminsite.dashboard import Figure
from privacy.models import SubjectRequest

from .conftest import route_alias

# Mid-month and mid-day, so "yesterday" and "earlier this month" are both in this month.
NOW = datetime(2026, 11, 18, 12, 0, tzinfo=UTC)


@pytest.fixture
def frozen():
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


def figures(response) -> dict[str, Figure]:
    """Every figure on the dashboard page, by key (table cells included)."""
    assert response.status_code == 200
    found: dict[str, Figure] = {}
    for panel in response.context["dashboard_panels"]:
        for figure in panel.figures:
            found[figure.key] = figure
        for row in panel.rows:
            for figure in row.cells:
                found[figure.key] = figure
    return found


def rows_behind(client, url: str) -> set[int]:
    """The ids the admin list at ``url`` shows (all of them: the lists here are short)."""
    response = client.get(url)
    assert response.status_code == 200, url
    changelist = response.context["cl"]
    # An unknown or refused filter would make the admin redirect with ?e=1 or raise; a filter
    # it silently ignored would show every row, which the tests' other rows would reveal.
    assert "e" not in changelist.params
    return {obj.pk for obj in changelist.result_list}


def dashboard(client) -> dict[str, Figure]:
    response = client.get("/admin/")
    figures_by_key = figures(response)
    html = response.content.decode()
    for figure in figures_by_key.values():  # what the context says is what the page shows
        assert f'data-figure="{figure.key}"' in html
        if figure.url:
            assert f'href="{figure.url.replace("&", "&amp;")}"' in html
    return figures_by_key


def at(moment: datetime, model, *objs) -> None:
    """Move rows' ``created_at`` (auto_now_add) to ``moment``."""
    model.objects.filter(pk__in=[o.pk for o in objs]).update(created_at=moment)


# --- Data-subject requests --------------------------------------------------------------------


def _request(tenant, *, due_in: timedelta, state=SubjectRequest.State.VERIFIED, **fields):
    return SubjectRequest.objects.create(
        tenant=tenant,
        kind=SubjectRequest.Kind.ERASURE,
        source=SubjectRequest.Source.API,
        state=state,
        due_at=timezone.now() + due_in,
        **fields,
    )


def test_overdue_and_due_soon_requests_are_counted_and_link_to_exactly_those(
    admin_client, principals, frozen
):
    a, b = principals.tenant_a, principals.tenant_b
    overdue = {
        _request(a, due_in=-timedelta(days=2)).pk,
        _request(b, due_in=-timedelta(hours=1), state=SubjectRequest.State.FAILED).pk,
    }
    due_soon = {
        _request(a, due_in=timedelta(days=3)).pk,
        _request(b, due_in=timedelta(days=6, hours=23)).pk,
    }
    _request(a, due_in=timedelta(days=20))  # not yet
    _request(a, due_in=-timedelta(days=5), state=SubjectRequest.State.COMPLETED)  # done
    # Past its original deadline but extended: not overdue.
    _request(a, due_in=-timedelta(days=1), extended_due_at=NOW + timedelta(days=30))

    shown = dashboard(admin_client)

    assert shown["subject_requests_overdue"].value == "2"
    assert shown["subject_requests_overdue"].level == "alert"
    assert rows_behind(admin_client, shown["subject_requests_overdue"].url) == overdue
    assert shown["subject_requests_due_soon"].value == "2"
    assert rows_behind(admin_client, shown["subject_requests_due_soon"].url) == due_soon


def test_with_nothing_overdue_the_figure_is_zero_and_calm(admin_client, principals):
    _request(principals.tenant_a, due_in=timedelta(days=25))

    shown = dashboard(admin_client)

    assert shown["subject_requests_overdue"].value == "0"
    assert shown["subject_requests_overdue"].level == "ok"
    assert rows_behind(admin_client, shown["subject_requests_overdue"].url) == set()


# --- Circuit breakers -------------------------------------------------------------------------


def _open_breaker(deployment) -> None:
    store = breaker_store()
    policy = policy_for(deployment, connect_timeout=0, read_timeout=0)

    async def fail_until_open():
        for _ in range(policy.failure_threshold):
            admission = await store.admit(deployment.name, policy)
            await store.record_failure(deployment.name, policy, admission, "upstream_timeout")

    async_to_sync(fail_until_open)()


def test_open_breakers_are_counted_live_and_link_to_exactly_those(
    admin_client, admin_user, monkeypatch
):
    monkeypatch.setattr(breaker_store(), "on_transition", None)  # no history rows needed
    names = ["failing", "forced-open", "healthy", "failing-but-forced-closed"]
    deployments = {
        name: DeploymentBreaker.objects.get(
            pk=route_alias(name, "http://127.0.0.1:9/v1").versions.get().deployment_id
        )
        for name in names
    }
    _open_breaker(deployments["failing"])
    _open_breaker(deployments["failing-but-forced-closed"])
    breaker_services.breaker_force(
        actor=Actor.for_user(admin_user),
        deployment=deployments["forced-open"],
        override="forced_open",
    )
    breaker_services.breaker_force(
        actor=Actor.for_user(admin_user),
        deployment=deployments["failing-but-forced-closed"],
        override="forced_closed",
    )

    shown = dashboard(admin_client)

    assert shown["breakers_open"].value == "2"
    assert rows_behind(admin_client, shown["breakers_open"].url) == {
        deployments["failing"].pk,
        deployments["forced-open"].pk,
    }
    response = admin_client.get(shown["breakers_open"].url)
    assert "OPEN" in response.content.decode()  # the list's own live state column agrees


# --- Compliance, rollouts, backups -------------------------------------------------------------


def _check(code: str, ok: bool, checked_at: datetime) -> EvidenceCheck:
    return EvidenceCheck.objects.create(
        check_code=code,
        ok=ok,
        summary="s",
        checked_at=checked_at,
        trigger=EvidenceCheck.Trigger.SCHEDULE,
    )


def test_failing_compliance_items_are_counted_and_link_to_exactly_those(admin_client, db):
    framework = ComplianceFramework.objects.create(code="test-fw", name="Test framework")

    def live(code: str, check: str) -> ComplianceItem:
        return ComplianceItem.objects.create(
            framework=framework,
            code=code,
            text=code,
            kind=ComplianceItem.Kind.LIVE,
            check_code=check,
        )

    earlier, later = NOW - timedelta(hours=2), NOW - timedelta(hours=1)
    failing = {
        live("a", "test.failing").pk,
        live("b", "test.failing").pk,  # one check, 2 items
        live("c", "test.broke").pk,
    }
    live("d", "test.recovered")
    live("e", "test.never_ran")
    _check("test.failing", False, later)
    _check("test.broke", True, earlier)
    _check("test.broke", False, later)  # the newest run decides
    _check("test.recovered", False, earlier)
    _check("test.recovered", True, later)
    failing |= {
        s.item.pk
        for s in compliance_selectors.failing_items()
        if s.item.framework_id != framework.pk
    }  # the default checklists' own state

    shown = dashboard(admin_client)

    assert shown["compliance_failing"].value == str(len(failing))
    assert shown["compliance_failing"].level == "alert"
    assert rows_behind(admin_client, shown["compliance_failing"].url) == failing


def test_rollouts_taking_traffic_are_counted_and_link_to_exactly_those(admin_client, db):
    def rollout(name: str, state: str) -> Rollout:
        alias = route_alias(name, "http://127.0.0.1:9/v1")
        stable = alias.versions.get()
        candidate = ModelVersion.objects.create(
            alias=alias, version="v2", deployment=stable.deployment, weight=0
        )
        return Rollout.objects.create(
            alias=alias, stable_version=stable, candidate_version=candidate, state=state
        )

    live = {
        rollout("canary", Rollout.State.IN_PROGRESS).pk,
        rollout("held", Rollout.State.PAUSED).pk,
    }
    rollout("waiting", Rollout.State.PENDING)
    rollout("done", Rollout.State.COMPLETED)
    rollout("undone", Rollout.State.ROLLED_BACK)

    shown = dashboard(admin_client)

    assert shown["rollouts_in_progress"].value == "2"
    assert rows_behind(admin_client, shown["rollouts_in_progress"].url) == live


def _backup(state: str, data_from: datetime | None) -> Backup:
    return Backup.objects.create(
        state=state,
        trigger=Backup.Trigger.SCHEDULED,
        requested_by="beat",
        started_at=data_from,
        finished_at=data_from and data_from + timedelta(minutes=3),
    )


def _drill(*, finished: datetime, seconds: float, result=RestoreDrill.Result.SUCCEEDED):
    return RestoreDrill.objects.create(
        backup_uuid=uuid.uuid4(),
        kind=RestoreDrill.Kind.DRILL,
        actor="officer",
        started_at=finished - timedelta(seconds=seconds),
        finished_at=finished,
        duration_seconds=seconds,
        rto_seconds=15 * 60,
        target_database="scratch",
        result=result,
    )


def test_the_last_good_backups_age_is_measured_against_the_rpo(admin_client, frozen):
    good = {
        _backup(Backup.State.SUCCEEDED, NOW - timedelta(hours=5)).pk,
        _backup(Backup.State.SUCCEEDED, NOW - timedelta(minutes=42)).pk,
    }
    _backup(Backup.State.FAILED, NOW - timedelta(minutes=10))  # newer, but failed
    _backup(Backup.State.RUNNING, NOW - timedelta(minutes=2))
    _drill(finished=NOW - timedelta(days=100), seconds=60)
    _drill(finished=NOW - timedelta(days=3), seconds=8 * 60 + 30)

    shown = dashboard(admin_client)

    backup = shown["last_good_backup"]
    assert backup.value == "42 min" and backup.level == "ok"  # the RPO is 1 h by default
    assert backup.note.startswith("RPO 1 h; data from 2026-11-18 11:18")
    assert rows_behind(admin_client, backup.url) == good
    drill = shown["last_restore_drill"]
    assert drill.value == "8 min" and drill.level == "ok"
    assert drill.note == "succeeded, 3 days ago; RTO 15 min"


def test_a_backup_older_than_the_rpo_and_a_failed_drill_are_alerts(
    admin_client, frozen, monkeypatch
):
    monkeypatch.setenv("LLMP_BACKUP_RPO_MINUTES", "30")
    _backup(Backup.State.SUCCEEDED, NOW - timedelta(minutes=42))
    _drill(finished=NOW - timedelta(days=1), seconds=40, result=RestoreDrill.Result.FAILED)

    shown = dashboard(admin_client)

    assert shown["last_good_backup"].level == "alert"
    assert shown["last_restore_drill"].level == "alert"


def test_without_any_backup_the_dashboard_says_so(admin_client, db):
    shown = dashboard(admin_client)

    assert shown["last_good_backup"].value == "none"
    assert shown["last_good_backup"].level == "alert"
    assert shown["last_restore_drill"].value == "none"


# --- Guards today -----------------------------------------------------------------------------


def _event(
    tenant, kind=SecurityEvent.Kind.PROMPT_INJECTION, action=SecurityEvent.Action.BLOCKED
) -> SecurityEvent:
    return SecurityEvent.objects.create(tenant=tenant, kind=kind, action=action, score=0.9)


def _usage(tenant, *, cost: str = "0", pii: int = 0) -> UsageRecord:
    return UsageRecord.objects.create(
        tenant=tenant,
        request_id="r",
        route="chat",
        status_code=200,
        cost=Decimal(cost),
        pii_redactions=pii,
    )


def test_injections_blocked_and_pii_redacted_today_link_to_todays_rows(
    admin_client, principals, frozen
):
    a, b = principals.tenant_a, principals.tenant_b
    blocked = {_event(a).pk, _event(b).pk}
    _event(a, action=SecurityEvent.Action.FLAGGED)  # served, not blocked
    _event(a, kind=SecurityEvent.Kind.SYSTEM_PROMPT_LEAK)  # not an injection
    at(NOW - timedelta(days=1), SecurityEvent, _event(a))  # yesterday
    redacted = {_usage(a, pii=2).pk, _usage(b, pii=3).pk}
    _usage(a, pii=0)
    at(NOW - timedelta(days=1), UsageRecord, _usage(a, pii=7))

    shown = dashboard(admin_client)

    assert shown["injections_blocked_today"].value == "2"
    assert rows_behind(admin_client, shown["injections_blocked_today"].url) == blocked
    assert shown["pii_redactions_today"].value == "5"
    assert shown["pii_redactions_today"].note == "in 2 requests"
    assert rows_behind(admin_client, shown["pii_redactions_today"].url) == redacted


# --- Spend against budgets --------------------------------------------------------------------


def test_spend_is_shown_against_each_tenants_budgets_with_links_to_its_usage(
    admin_client, principals, frozen
):
    a, b = principals.tenant_a, principals.tenant_b
    # Tenant A: the tier's budgets ($1 a day, $10 a month) with its own daily override of $2.
    tier = Tier.objects.create(
        name="metered", daily_budget=Decimal("1"), monthly_budget=Decimal("10")
    )
    TenantPlan.objects.filter(tenant=a).update(tier=tier, daily_budget=Decimal("2"))
    today_a = {_usage(a, cost="0.75").pk, _usage(a, cost="1.00").pk}
    earlier_a = _usage(a, cost="7.00")
    at(NOW - timedelta(days=3), UsageRecord, earlier_a)
    last_month = _usage(a, cost="100")
    at(NOW - timedelta(days=40), UsageRecord, last_month)
    # Tenant B: spends, on a tier without budgets.
    _usage(b, cost="0.50")
    # Tenant C: neither spends nor has a budget: not listed.
    gateway_services.tenant_create(
        actor=SYSTEM, name="Tenant C", slug="tenant-c", tier=Tier.objects.get(name="pro")
    )

    response = admin_client.get("/admin/")
    shown = figures(response)

    today, month = shown["spend_today_tenant-a"], shown["spend_month_tenant-a"]
    assert today.value == "$1.75 of $2.00" and today.level == "warn"  # 88 %
    assert month.value == "$8.75 of $10.00" and month.level == "warn"
    assert rows_behind(admin_client, today.url) == today_a
    assert rows_behind(admin_client, month.url) == today_a | {earlier_a.pk}
    assert shown["spend_today_tenant-b"].value == "$0.50"
    assert shown["spend_today_tenant-b"].note == "no budget"
    assert "spend_today_tenant-c" not in shown
    spend = next(p for p in response.context["dashboard_panels"] if p.key == "spend")
    assert [row.label for row in spend.rows] == ["Tenant A", "Tenant B"]  # nearest budget first


def test_a_tenant_over_its_budget_is_shown_as_an_alert(admin_client, principals, frozen):
    tier = Tier.objects.create(name="tiny", daily_budget=Decimal("1"))
    TenantPlan.objects.filter(tenant=principals.tenant_b).update(tier=tier)
    _usage(principals.tenant_b, cost="1.25")

    shown = dashboard(admin_client)

    assert shown["spend_today_tenant-b"].value == "$1.25 of $1.00"
    assert shown["spend_today_tenant-b"].level == "alert"


# --- Queries, access ----------------------------------------------------------------------------


def _populate(tenants: int) -> None:
    tier = Tier.objects.create(name=f"budgeted-{tenants}", daily_budget=Decimal("5"))
    for index in range(tenants):
        tenant = gateway_services.tenant_create(
            actor=SYSTEM, name=f"T{tenants}-{index}", slug=f"t{tenants}-{index}", tier=tier
        )
        _usage(tenant, cost="1", pii=1)
        _event(tenant)
        _request(tenant, due_in=-timedelta(days=1))
        route_alias(f"a{tenants}-{index}", "http://127.0.0.1:9/v1")


def test_the_dashboard_runs_a_fixed_number_of_queries(
    admin_client, principals, django_assert_max_num_queries
):
    _populate(2)
    admin_client.get("/admin/")  # warm: the session, content types
    with CaptureQueriesContext(connection) as few:
        admin_client.get("/admin/")
    _populate(8)

    with django_assert_max_num_queries(20), CaptureQueriesContext(connection) as many:
        response = admin_client.get("/admin/")

    assert response.status_code == 200
    assert len(many) == len(few)  # the same with four times the tenants, rows and breakers


def test_a_panel_that_fails_is_shown_as_unavailable_and_the_others_still_are(
    admin_client, db, monkeypatch
):
    def broken(request):
        raise RuntimeError("the source is down")

    monkeypatch.setitem(admin_dashboard._builders, "broken", broken)

    response = admin_client.get("/admin/")

    assert response.status_code == 200
    panel = next(p for p in response.context["dashboard_panels"] if p.key == "broken")
    assert "could not be computed (RuntimeError)" in panel.note
    assert "subject_requests_overdue" in figures(response)


def test_a_staff_session_without_the_second_factor_sees_no_figures(client, django_user_model):
    officer = django_user_model.objects.create_user(
        "officer", password="x-Pass-4821", is_staff=True, is_superuser=True
    )
    client.force_login(officer)

    response = client.get("/admin/")

    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_figures_link_only_to_lists_the_officer_may_view(client, django_user_model, principals):
    officer = django_user_model.objects.create_user("viewer", password="x-Pass-4821", is_staff=True)
    officer.user_permissions.add(Permission.objects.get(codename="view_subjectrequest"))
    device = TOTPDevice.objects.create(user=officer, name="phone", confirmed=True)
    client.force_login(officer)
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    session.save()
    _request(principals.tenant_a, due_in=-timedelta(days=1))

    shown = dashboard(client)

    assert shown["subject_requests_overdue"].value == "1"
    assert shown["subject_requests_overdue"].url is not None
    assert shown["injections_blocked_today"].url is None  # no view permission on events


# --- In a real browser --------------------------------------------------------------------------


def test_the_dashboard_renders_in_a_browser_and_a_figure_opens_its_list(
    live_server, admin_client, principals, page
):
    overdue = _request(principals.tenant_a, due_in=-timedelta(days=3))
    _request(principals.tenant_b, due_in=timedelta(days=30))
    session_id = admin_client.cookies["sessionid"].value
    page.context.add_cookies([{"name": "sessionid", "value": session_id, "url": live_server.url}])

    page.goto(f"{live_server.url}/admin/")

    tile = page.locator('[data-figure="subject_requests_overdue"]')
    assert tile.locator(".dashboard-value").inner_text() == "1"
    assert page.locator('[data-panel="spend"]').is_visible()
    tile.locator("a").click()
    page.wait_for_url("**/admin/privacy/subjectrequest/?deadline=overdue")
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 1
    assert f"#{overdue.pk}" in rows.first.inner_text()
    assert urlsplit(page.url).path == "/admin/privacy/subjectrequest/"
