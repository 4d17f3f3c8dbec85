"""Tenant scoping: a tenant's rows are read through ``Model.objects.for_tenant(tenant)``, the one
place that filters by tenant, instead of each view and selector remembering its own
``filter(tenant_id=...)`` or fetching by pk and comparing ``obj.tenant_id`` afterwards.

A model whose rows belong to a tenant subclasses ``TenantOwned`` and declares its own ``tenant``
field, a foreign key or one-to-one field to ``Tenant``: the base does not declare it because the
models differ in what it must be (a receipt protects its tenant, an audit row outlives it, a
plan is one per tenant) and each keeps its column, related name and ``on_delete``. The system
check below holds the two together: a ``TenantOwned`` model without such a field, and a model
with one that is not ``TenantOwned``, are errors of ``manage.py check``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Self, TypeVar

from django.apps import apps
from django.core import checks
from django.db import models

if TYPE_CHECKING:
    from llmplatform.models import Tenant

_Owned = TypeVar("_Owned", bound="TenantOwned")


def tenant_pk(tenant: Tenant | int) -> int:
    """The id of ``tenant``, a saved Tenant or its id. Anything else (None above all) raises
    TypeError: a scope that quietly became no filter, or "rows without a tenant", would hand one
    tenant another's data."""
    from llmplatform.models import Tenant  # llmplatform.models imports this module

    if isinstance(tenant, Tenant):
        if tenant.pk is None:
            raise TypeError("for_tenant() needs a saved Tenant; this one has no id yet")
        return int(tenant.pk)
    if isinstance(tenant, int) and not isinstance(tenant, bool):
        return tenant
    raise TypeError(
        f"for_tenant() needs a Tenant or its id, not {type(tenant).__name__}: refusing to "
        "read tenant data without a tenant"
    )


class TenantOwnedQuerySet(models.QuerySet[_Owned]):
    def for_tenant(self, tenant: Tenant | int) -> Self:
        """Only ``tenant``'s rows. An object is looked up in them
        (``for_tenant(t).get(pk=...)``), so another tenant's raises ``DoesNotExist`` exactly as
        a missing one does."""
        return self.filter(tenant_id=tenant_pk(tenant))


class TenantOwned(models.Model):
    """Base of every model whose rows belong to one tenant (see the module docstring)."""

    objects = TenantOwnedQuerySet.as_manager()

    class Meta:
        abstract = True


def tenant_owned_models() -> list[type[TenantOwned]]:
    """Every installed concrete ``TenantOwned`` model (proxies share their model's rows)."""
    return [
        model
        for model in apps.get_models()
        if issubclass(model, TenantOwned) and not model._meta.proxy
    ]


def _has_tenant_relation(model: type[models.Model]) -> bool:
    from llmplatform.models import Tenant

    return any(
        field.name == "tenant"
        and field.concrete
        and (field.many_to_one or field.one_to_one)
        and field.related_model is Tenant
        for field in model._meta.get_fields()
    )


def tenant_scope_errors(model: type[models.Model]) -> list[checks.CheckMessage]:
    """What ``manage.py check`` says of ``model``: a ``TenantOwned`` model needs its
    ``tenant`` field, and a model with one must be ``TenantOwned``."""
    owned, has_tenant = issubclass(model, TenantOwned), _has_tenant_relation(model)
    if owned and not has_tenant:
        return [
            checks.Error(
                f"{model._meta.label} is TenantOwned but has no 'tenant' foreign key or "
                "one-to-one field to llmplatform.Tenant, so for_tenant() cannot scope it.",
                obj=model,
                id="llmplatform.E001",
            )
        ]
    if has_tenant and not owned:
        return [
            checks.Error(
                f"{model._meta.label} has a 'tenant' field to llmplatform.Tenant but does not "
                "subclass llmplatform.tenancy.TenantOwned, so its rows cannot be read through "
                "the tenant scope.",
                hint="Subclass TenantOwned and read it with Model.objects.for_tenant(tenant).",
                obj=model,
                id="llmplatform.E002",
            )
        ]
    return []


@checks.register(checks.Tags.models)
def check_tenant_owned_models(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    installed = (
        apps.get_models()
        if app_configs is None
        else [model for config in app_configs for model in config.get_models()]
    )
    return [
        error
        for model in installed
        if not model._meta.proxy
        for error in tenant_scope_errors(model)
    ]
