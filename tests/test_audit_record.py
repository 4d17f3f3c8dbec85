"""What the audit log records of who acted: a person, an API key, a visitor or the platform,
each under the label officers have always searched for; and who may not be recorded at all."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import AnonymousUser
from django.db import transaction

from gateway import services
from gateway.models import ApiKey
from llmplatform.actors import SYSTEM, Actor, ActorKind
from llmplatform.audit import AuditAction, AuditOutsideTransaction, audit_record
from llmplatform.models import AuditEvent


@pytest.mark.django_db
def test_the_audit_log_names_each_kind_of_actor_as_before(principals, key_a):
    key = ApiKey.objects.get(name="a-key")
    actors = [
        Actor.for_user(principals.alice),
        Actor.for_api_key(key_id=key.pk, name=key.name),
        Actor.anonymous("public_page"),
        Actor.system("command:run_backup"),
        SYSTEM,
    ]
    for actor in actors:
        services.cache_invalidate_tenant(actor=actor, tenant=principals.tenant_a)
    recorded = AuditEvent.objects.filter(action="cache.invalidate_tenant").order_by("id")
    assert [event.actor for event in recorded] == [
        "user:alice",
        f"api_key:a-key#{key.pk}",
        "public_page",
        "command:run_backup",
        "system",
    ]
    assert [actor.kind for actor in actors] == [
        ActorKind.USER,
        ActorKind.API_KEY,
        ActorKind.ANONYMOUS,
        ActorKind.SYSTEM,
        ActorKind.SYSTEM,
    ]


@pytest.mark.django_db
def test_a_visitor_who_is_not_signed_in_cannot_act_as_a_user():
    with pytest.raises(TypeError, match="signed-in"):
        Actor.for_user(AnonymousUser())


@pytest.mark.django_db
def test_only_a_person_holds_permissions(principals, django_user_model):
    root = django_user_model.objects.create_superuser("root", password="x-unused-9")
    permission = "privacy.read_conversation_plaintext"
    assert Actor.for_user(root).has_perm(permission)
    assert not Actor.for_user(principals.bob).has_perm(permission)
    assert not Actor.system().has_perm(permission)
    assert not Actor.for_api_key(key_id=1, name="k").has_perm(permission)


@pytest.mark.django_db
def test_an_actor_given_as_a_bare_user_or_string_is_refused(principals):
    before = AuditEvent.objects.count()
    for actor in (principals.alice, "user:alice", None):
        with pytest.raises(TypeError, match="Actor"), transaction.atomic():
            audit_record(actor=actor, action=AuditAction.TENANT_CREATE, obj=principals.tenant_a)
    assert AuditEvent.objects.count() == before


@pytest.mark.django_db
def test_an_action_that_is_not_an_audit_action_is_refused(principals):
    before = AuditEvent.objects.count()
    for action in ("tenant.create", "tenant.renamed", None):
        with pytest.raises(TypeError, match="AuditAction"), transaction.atomic():
            audit_record(actor=SYSTEM, action=action, obj=principals.tenant_a)
    assert AuditEvent.objects.count() == before


def test_every_audited_admin_names_only_audit_actions():
    from django.contrib import admin

    from llmplatform.admin.audit import AuditedModelAdmin

    audited = [m for m in admin.site._registry.values() if isinstance(m, AuditedModelAdmin)]
    assert audited
    assert [message for model_admin in audited for message in model_admin.check()] == []


def test_an_audited_admin_with_an_action_missing_from_the_enum_fails_the_system_check():
    from django.contrib import admin
    from django.contrib.admin.models import LogEntry

    from llmplatform.admin.audit import AuditedModelAdmin

    class LogEntryAdmin(AuditedModelAdmin):
        pass

    errors = LogEntryAdmin(LogEntry, admin.site).check()
    assert [e.id for e in errors] == ["llmplatform.E003"]
    assert "admin.logentry.add" in errors[0].msg


@pytest.mark.django_db(transaction=True)
def test_an_audit_row_outside_a_transaction_is_refused(principals):
    before = AuditEvent.objects.count()
    with pytest.raises(AuditOutsideTransaction, match=r"transaction\.atomic"):
        audit_record(actor=SYSTEM, action=AuditAction.TENANT_CREATE, obj=principals.tenant_a)
    assert AuditEvent.objects.count() == before
    with transaction.atomic():
        audit_record(actor=SYSTEM, action=AuditAction.TENANT_CREATE, obj=principals.tenant_a)
    assert AuditEvent.objects.count() == before + 1


@pytest.mark.django_db
def test_the_test_cases_own_transaction_does_not_count_as_the_callers(principals):
    # The db fixture wraps the test in a transaction; a service that forgot its own would
    # still fail here, as it would in production.
    with pytest.raises(AuditOutsideTransaction):
        audit_record(actor=SYSTEM, action=AuditAction.TENANT_CREATE, obj=principals.tenant_a)
