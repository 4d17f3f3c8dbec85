"""Deployment checklists: the default template copied into each rollout, sign-offs by N distinct
people, automatic items computed from usage records, and the gate that holds a canary at its
first stage until the pre-deployment items are done (or an officer overrides, audited)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from deployments.rollouts import checks, services
from deployments.rollouts.models import (
    AutomaticCheck,
    Checklist,
    ChecklistItem,
    Phase,
    Rollout,
    RolloutStep,
)
from llmplatform.actors import Actor
from llmplatform.models import AuditEvent

from .rollouts_support import (  # noqa: F401 - fast_password_hashing is an autouse fixture
    alias_with_two_versions,
    default_template,
    fast_password_hashing,
    grant,
    usage_rows,
    weights,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def people(django_user_model):
    """Two engineers who may sign off, and an officer who may also override the gate."""
    ada = django_user_model.objects.create_user("ada", email="ada@example.org")
    ben = django_user_model.objects.create_user("ben", email="ben@example.org")
    olivia = django_user_model.objects.create_user("olivia", email="olivia@example.org")
    for user in (ada, ben):
        grant(user, "add_signoff", "change_rollout")
    grant(olivia, "add_signoff", "change_rollout", "override_checklist_gate")
    return ada, ben, olivia


@pytest.fixture
def rollout(principals, people, django_capture_on_commit_callbacks) -> Rollout:
    default_template()
    alias, v1, v2 = alias_with_two_versions("http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1")
    created = services.rollout_create(
        actor=Actor.for_user(people[2]),
        alias=alias,
        stable_version=v1,
        candidate_version=v2,
        min_requests=10,
    )
    with django_capture_on_commit_callbacks(execute=True):
        services.rollout_start(actor=Actor.for_user(people[2]), rollout=created)
    return created


def item(rollout: Rollout, text_start: str) -> ChecklistItem:
    return rollout.checklist.items.get(text__startswith=text_start)


def status(rollout: Rollout, text_start: str) -> checks.ItemStatus:
    found = [
        s
        for s in checks.checklist_status(Checklist.objects.get(rollout=rollout))
        if s.item.text.startswith(text_start)
    ]
    assert len(found) == 1
    return found[0]


def sign_all_pre_items(rollout: Rollout, people) -> None:
    ada, ben, _ = people
    for entry in rollout.checklist.items.filter(phase=Phase.PRE, automatic_check=""):
        for person in (ada, ben)[: entry.required_signoffs]:
            services.checklist_item_sign_off(actor=Actor.for_user(person), item=entry)
    services.checklist_record_load_test(
        actor=Actor.for_user(ada),
        checklist=rollout.checklist,
        passed=True,
        summary="k6, 2x peak (400 rps) for 10 min, p95 1.2 s",
    )


def test_a_rollout_gets_a_copy_of_the_seed_checklist(rollout):
    items = list(rollout.checklist.items.order_by("position"))
    assert [i.phase for i in items] == [Phase.PRE] * 7 + [Phase.DEPLOY] * 5 + [Phase.POST] * 6
    assert items[0].text == "Code reviewed by 2 engineers" and items[0].required_signoffs == 2
    automatic = {i.text: i.automatic_check for i in items if i.automatic_check}
    assert automatic["Monitor error rates (target < 0.5%)"] == AutomaticCheck.ERROR_RATE_BELOW
    assert automatic["Monitor latency (target < 5s P95)"] == AutomaticCheck.P95_LATENCY_BELOW
    assert (
        automatic["Load test passed (can handle 2x peak traffic)"]
        == AutomaticCheck.LOAD_TEST_RECORDED
    )
    # Editing the template later does not change the rollout's copy.
    template = default_template()
    template.items.filter(text__startswith="Code reviewed").update(text="Reviewed once")
    assert item(rollout, "Code reviewed by 2 engineers")


def test_an_item_needs_two_distinct_people_and_the_same_person_counts_once(rollout, people):
    ada, ben, _ = people
    review = item(rollout, "Code reviewed")
    assert services.checklist_item_sign_off(actor=Actor.for_user(ada), item=review) is True
    assert services.checklist_item_sign_off(actor=Actor.for_user(ada), item=review) is False
    assert review.signoffs.count() == 1
    assert not status(rollout, "Code reviewed").done
    assert (
        services.checklist_item_sign_off(actor=Actor.for_user(ben), item=review, note="LGTM")
        is True
    )
    done = status(rollout, "Code reviewed")
    assert done.done and done.signers == ["ada", "ben"] and done.detail == "2 of 2 sign-off(s)"
    assert AuditEvent.objects.filter(action="rollout.signed_off").count() == 2


def test_automatic_items_cannot_be_signed_by_hand(rollout, people):
    with pytest.raises(services.RolloutError, match="computed"):
        services.checklist_item_sign_off(
            actor=Actor.for_user(people[0]), item=item(rollout, "Monitor error")
        )


def test_open_pre_deployment_items_hold_a_canary_at_its_first_stage(rollout, people):
    ada, _ben, olivia = people
    with pytest.raises(services.RolloutGated) as gated:
        services.rollout_advance(actor=Actor.for_user(ada), rollout=rollout)
    assert "Code reviewed by 2 engineers" in str(gated.value)
    assert len(gated.value.open_items) == 6  # the optional maintenance window does not hold
    rollout.refresh_from_db()
    assert rollout.candidate_percent == 5 and weights(rollout.alias) == {"v1": 95, "v2": 5}
    # Overriding needs the permission and a reason.
    with pytest.raises(services.RolloutError, match="permission"):
        services.rollout_advance(
            actor=Actor.for_user(ada), rollout=rollout, override_reason="urgent fix"
        )
    with pytest.raises(services.RolloutGated):
        services.rollout_advance(
            actor=Actor.for_user(olivia), rollout=rollout, override_reason="   "
        )
    services.rollout_advance(
        actor=Actor.for_user(olivia),
        rollout=rollout,
        override_reason="Security fix; review done in the incident call",
    )
    rollout.refresh_from_db()
    assert rollout.candidate_percent == 25
    assert rollout.gate_overridden_by == "user:olivia"
    override = rollout.steps.get(action=RolloutStep.Action.GATE_OVERRIDDEN)
    assert override.reason.startswith("Security fix") and len(override.figures["open_items"]) == 6
    event = AuditEvent.objects.get(action="rollout.gate_overridden")
    assert event.actor == "user:olivia" and event.after["reason"].startswith("Security fix")


def test_a_canary_advances_once_the_pre_deployment_items_are_done(rollout, people):
    sign_all_pre_items(rollout, people)
    services.rollout_advance(actor=Actor.for_user(people[0]), rollout=rollout)
    rollout.refresh_from_db()
    assert rollout.candidate_percent == 25 and not rollout.gate_overridden_by


def test_a_failed_load_test_keeps_its_item_open(rollout, people):
    services.checklist_record_load_test(
        actor=Actor.for_user(people[0]),
        checklist=rollout.checklist,
        passed=False,
        summary="fell over at 1.4x peak",
    )
    load = status(rollout, "Load test passed")
    assert not load.done and "FAILED" in load.detail and "1.4x" in load.detail


def test_a_blue_green_switch_is_gated_like_a_second_stage(principals, people):
    default_template()
    alias, v1, v2 = alias_with_two_versions("http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1")
    rollout = services.rollout_create(
        actor=Actor.for_user(people[2]),
        alias=alias,
        stable_version=v1,
        candidate_version=v2,
        strategy="blue_green",
    )
    with pytest.raises(services.RolloutGated):
        services.rollout_start(actor=Actor.for_user(people[0]), rollout=rollout)
    assert Rollout.objects.get(pk=rollout.pk).state == Rollout.State.PENDING


def test_error_rate_and_latency_items_are_computed_from_usage_records(rollout, principals):
    tenant = principals.tenant_a
    assert status(rollout, "Monitor error rates").detail == "0 of at least 10 requests measured"
    usage_rows(tenant, "default", "v2", 299, latency_ms=1200)
    usage_rows(tenant, "default", "v2", 1, status=502, latency_ms=300)
    usage_rows(tenant, "default", "v1", 50, status=502)  # the stable version's errors: not ours
    errors, latency = status(rollout, "Monitor error rates"), status(rollout, "Monitor latency")
    assert errors.done and errors.detail.startswith("0.33% (1 of 300 requests")
    assert latency.done and "P95 1200 ms" in latency.detail
    usage_rows(tenant, "default", "v2", 1, status=504)
    failing = status(rollout, "Monitor error rates")
    assert not failing.done and failing.detail.startswith("0.66%")  # 2 of 301
    usage_rows(tenant, "default", "v2", 20, latency_ms=6500)
    assert not status(rollout, "Monitor latency").done


def test_cost_per_hour_is_compared_with_the_same_hours_a_week_before(
    rollout, principals, time_machine
):
    tenant = principals.tenant_a
    cost = status(rollout, "Monitor costs")
    assert not cost.done and "waiting" in cost.detail
    time_machine.move_to(timezone.now() + timedelta(hours=2))
    now = timezone.now()
    usage_rows(tenant, "default", "v2", 10, cost="0.10", at=now - timedelta(minutes=30))
    usage_rows(tenant, "default", "v1", 8, cost="0.10", at=now - timedelta(days=7, minutes=30))
    within = status(rollout, "Monitor costs")
    assert within.done and "+25%" in within.detail  # $1.00/h against $0.80/h
    usage_rows(tenant, "default", "v2", 10, cost="0.10", at=now - timedelta(minutes=20))
    spike = status(rollout, "Monitor costs")
    assert not spike.done and "+150%" in spike.detail


def test_deployment_items_follow_the_rollout(rollout, people, time_machine):
    assert status(rollout, "Deploy to canary").done
    assert not status(rollout, "Monitor for 30 minutes").done
    assert not status(rollout, "Gradually roll out").done
    time_machine.move_to(timezone.now() + timedelta(minutes=31))
    assert status(rollout, "Monitor for 30 minutes").done


# --- the admin page --------------------------------------------------------------------------


def test_the_rollout_page_shows_the_checklist_and_takes_sign_offs(admin_client, rollout):
    url = f"/admin/rollouts/rollout/{rollout.pk}/change/"
    page = admin_client.get(url).content.decode()
    assert "Deployment checklist" in page and "Code reviewed by 2 engineers" in page
    assert "0 of 2 sign-off(s)" in page and "Held at the first stage" in page
    review = item(rollout, "Code reviewed")
    sign = f"/admin/rollouts/rollout/{rollout.pk}/sign-off/{review.pk}/"
    assert "Signed off" in admin_client.post(sign, follow=True).content.decode()
    again = admin_client.post(sign, follow=True).content.decode()
    assert "counts once" in again and "1 of 2 sign-off(s)" in again
    assert review.signoffs.count() == 1


def test_an_officer_overrides_the_gate_with_a_reason_from_the_page(admin_client, rollout):
    act = f"/admin/rollouts/rollout/{rollout.pk}/act/advance/"
    refused = admin_client.post(act, follow=True).content.decode()
    assert "required pre-deployment item(s) are open" in refused
    assert Rollout.objects.get(pk=rollout.pk).candidate_percent == 5
    done = admin_client.post(
        act, {"reason": "Hotfix approved by the CTO"}, follow=True
    ).content.decode()
    assert "Advanced" in done and "Checklist gate overridden by user:admin" in done
    assert Rollout.objects.get(pk=rollout.pk).candidate_percent == 25


def test_the_load_test_result_is_attached_on_the_page(admin_client, rollout):
    response = admin_client.post(
        f"/admin/rollouts/rollout/{rollout.pk}/load-test/",
        {"passed": "1", "summary": "locust 2x peak, 0 errors"},
        follow=True,
    )
    assert "Load test result recorded" in response.content.decode()
    assert status(rollout, "Load test passed").done


def test_the_template_is_edited_in_the_admin_and_audited(admin_client):
    template = default_template()
    page = admin_client.get(f"/admin/rollouts/checklisttemplate/{template.pk}/change/")
    assert page.status_code == 200 and "Code reviewed by 2 engineers" in page.content.decode()
    response = admin_client.post(
        "/admin/rollouts/checklisttemplate/add/",
        {
            "name": "Hotfix",
            "description": "",
            "is_default": "",
            "items-TOTAL_FORMS": "1",
            "items-INITIAL_FORMS": "0",
            "items-MIN_NUM_FORMS": "0",
            "items-MAX_NUM_FORMS": "1000",
            "items-0-position": "10",
            "items-0-phase": "pre",
            "items-0-text": "Incident ticket linked",
            "items-0-required": "on",
            "items-0-required_signoffs": "1",
            "items-0-automatic_check": "",
            "items-0-check_params": "{}",
        },
    )
    assert response.status_code == 302
    assert AuditEvent.objects.filter(action="admin.checklisttemplate.add").exists()
    assert AuditEvent.objects.filter(action="admin.checklisttemplateitem.add").exists()
