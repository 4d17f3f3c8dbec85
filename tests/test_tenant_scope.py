"""Tenant scoping in the kernel: every model whose rows belong to a tenant is ``TenantOwned``,
and ``Model.objects.for_tenant(tenant)`` gives that tenant's rows and none of another's. It
refuses to run without a tenant rather than read every tenant's rows.

The models are discovered from the app registry, so a new tenant-owned model is tried here as
soon as it exists (and fails until ``ROWS`` says how to make one of its rows)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from django.apps import apps
from django.contrib.auth import get_user_model
from django.db import models, transaction
from django.test.utils import isolate_apps
from django.utils import timezone

from gateway import services as gateway_services
from gateway.models import ApiKey, GuardrailScanner, SecurityEvent, TenantPlan, UsageRecord
from llmplatform.actors import Actor
from llmplatform.audit import audit_record
from llmplatform.audit_actions import AuditAction
from llmplatform.models import AuditEvent, Membership, Tenant
from llmplatform.tenancy import (
    TenantOwned,
    check_tenant_owned_models,
    tenant_owned_models,
    tenant_scope_errors,
)
from privacy import services as privacy_services
from privacy.models import Conversation, ErasureReceipt
from privacy.subject_requests import services as request_services

TEST_ACTOR = Actor.system("test")

pytestmark = pytest.mark.django_db

SUBJECT = "u-same-id-in-both-tenants"


def _subject_request(tenant: Tenant):
    return request_services.subject_request_create(
        tenant=tenant,
        kind="erasure",
        law="gdpr",
        source="api",
        external_id=SUBJECT,
        actor=TEST_ACTOR,
    )


def _conversation(tenant: Tenant) -> Conversation:
    return Conversation.objects.create(
        tenant=tenant,
        subject=privacy_services.subject_get_or_create(tenant=tenant, external_id=SUBJECT),
        alias="default",
        request_id="req_scope",
        prompt_ciphertext=b"not read here",
        response_ciphertext=b"not read here",
        key_id="k",
        expires_at=timezone.now() + timedelta(days=1),
    )


def _api_key(tenant: Tenant) -> ApiKey:
    key, _ = gateway_services.api_key_create(actor=TEST_ACTOR, tenant=tenant, name="k")
    return key


def _erasure_receipt(tenant: Tenant) -> ErasureReceipt:
    now = timezone.now()
    return ErasureReceipt.objects.create(
        request=_subject_request(tenant),
        tenant=tenant,
        subject_ref="ref",
        started_at=now,
        finished_at=now,
    )


# How to make a row of a tenant, for each TenantOwned model (by label). Rows of both tenants
# share their names and ids where they have one, as real tenants' rows do.
def _audit_row(tenant: Tenant) -> AuditEvent:
    with transaction.atomic():
        return audit_record(actor=TEST_ACTOR, action=AuditAction.TENANT_CREATE, obj=tenant)


ROWS: dict[str, Callable[[Tenant], models.Model]] = {
    "llmplatform.Membership": lambda t: Membership.objects.create(
        user=get_user_model().objects.create_user(f"member-of-{t.slug}"), tenant=t
    ),
    "llmplatform.AuditEvent": _audit_row,
    "gateway.TenantPlan": lambda t: TenantPlan.objects.get(tenant=t),  # tenant_create made it
    "gateway.ServiceAccount": lambda t: gateway_services.service_account_create(
        actor=TEST_ACTOR, tenant=t, name="etl"
    ),
    "gateway.ApiKey": _api_key,
    "gateway.UsageRecord": lambda t: UsageRecord.objects.create(
        tenant=t, request_id="req_scope", route="chat.completions", status_code=200
    ),
    "gateway.SecurityEvent": lambda t: SecurityEvent.objects.create(
        tenant=t, kind="prompt_injection", action="blocked", score=0.9
    ),
    "gateway.GuardrailScanner": lambda t: GuardrailScanner.objects.create(
        name=f"scanner-{t.slug}", kind="http", tenant=t, url="http://127.0.0.1:9/scan"
    ),
    "privacy.PrivacyPolicy": lambda t: privacy_services.privacy_policy_get_or_create(tenant=t),
    "privacy.DataSubject": lambda t: privacy_services.subject_get_or_create(
        tenant=t, external_id=SUBJECT
    ),
    "privacy.Conversation": _conversation,
    "privacy.SubjectRequest": _subject_request,
    "privacy.ErasureReceipt": _erasure_receipt,
}


def _label(model: type[models.Model]) -> str:
    return model._meta.label


def _rows_of(model: type[models.Model], tenant: Tenant) -> set[int]:
    """The pks of the tenant's rows, found without for_tenant."""
    return {
        pk
        for pk, tenant_id in model._default_manager.values_list("pk", "tenant_id")
        if tenant_id == tenant.pk
    }


@pytest.mark.parametrize("model", tenant_owned_models(), ids=_label)
def test_for_tenant_gives_a_tenant_its_rows_and_none_of_anothers(principals, model):
    make = ROWS.get(_label(model))
    assert make is not None, f"say in ROWS how to make a row of {_label(model)}"
    a, b = principals.tenant_a, principals.tenant_b
    a_row, b_row = make(a), make(b)

    scoped = model.objects.for_tenant(a)
    assert set(scoped.values_list("pk", flat=True)) == _rows_of(model, a)
    assert a_row.pk in _rows_of(model, a) and b_row.pk in _rows_of(model, b)
    assert set(model.objects.for_tenant(a.pk).values_list("pk", flat=True)) == _rows_of(model, a)
    # A lookup by pk in the scope finds the tenant's own row, and another's is missing.
    assert scoped.get(pk=a_row.pk) == a_row
    with pytest.raises(model.DoesNotExist):
        scoped.get(pk=b_row.pk)


def test_audit_rows_of_no_tenant_are_not_any_tenants(principals):
    with transaction.atomic():
        platform_row = audit_record(
            actor=Actor.system("officer"), action=AuditAction.ADMIN_PROVIDER_CHANGE
        )
    assert platform_row.tenant_id is None
    for tenant in (principals.tenant_a, principals.tenant_b):
        assert not AuditEvent.objects.for_tenant(tenant).filter(pk=platform_row.pk).exists()


def test_the_scope_narrows_a_query_already_made(principals):
    a, b = principals.tenant_a, principals.tenant_b
    gateway_services.api_key_create(actor=TEST_ACTOR, tenant=a, name="same-name")
    b_key, _ = gateway_services.api_key_create(actor=TEST_ACTOR, tenant=b, name="same-name")
    named = ApiKey.objects.filter(name="same-name")
    assert list(named.for_tenant(b)) == [b_key]


@pytest.mark.parametrize(
    "not_a_tenant",
    [None, Tenant(name="Unsaved", slug="unsaved"), "1", True],
    ids=["None", "an unsaved tenant", "an id as text", "a bool"],
)
def test_for_tenant_refuses_to_read_without_a_tenant(principals, not_a_tenant):
    with pytest.raises(TypeError, match=r"for_tenant\(\) needs"):
        Membership.objects.for_tenant(not_a_tenant)
    with pytest.raises(TypeError, match=r"for_tenant\(\) needs"):
        AuditEvent.objects.filter(action="tenant.create").for_tenant(not_a_tenant)


def test_for_tenant_refuses_another_models_object(principals):
    # A subject (or a key) whose pk happens to be a tenant's must not pass for that tenant.
    subject = privacy_services.subject_get_or_create(tenant=principals.tenant_b, external_id="u")
    with pytest.raises(TypeError, match="DataSubject"):
        Membership.objects.for_tenant(subject)


def test_every_model_with_a_tenant_field_is_tenant_owned():
    with_tenant = {
        model
        for model in apps.get_models()
        if not model._meta.proxy
        and any(
            f.name == "tenant" and f.is_relation and f.related_model is Tenant
            for f in model._meta.fields
        )
    }
    assert with_tenant, "the registry has models with a tenant"
    assert with_tenant == set(tenant_owned_models())
    assert check_tenant_owned_models() == []


@isolate_apps("llmplatform")
def test_the_check_refuses_a_tenant_owned_model_without_a_tenant_field():
    class Orphan(TenantOwned):
        name = models.CharField(max_length=10)

        class Meta:
            app_label = "llmplatform"

    class PointsElsewhere(TenantOwned):
        tenant = models.ForeignKey(Orphan, on_delete=models.CASCADE)

        class Meta:
            app_label = "llmplatform"

    for model in (Orphan, PointsElsewhere):
        assert [e.id for e in tenant_scope_errors(model)] == ["llmplatform.E001"]


@isolate_apps("llmplatform")
def test_the_check_refuses_a_tenant_field_on_a_model_that_is_not_tenant_owned():
    class Unscoped(models.Model):  # noqa: DJ008 - a throwaway model, never shown
        tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")

        class Meta:
            app_label = "llmplatform"

    class Scoped(TenantOwned):
        tenant = models.OneToOneField(Tenant, on_delete=models.CASCADE, related_name="+")

        class Meta:
            app_label = "llmplatform"

    assert [e.id for e in tenant_scope_errors(Unscoped)] == ["llmplatform.E002"]
    assert tenant_scope_errors(Scoped) == []
