"""Every write of the gateway's governed data. Each takes the acting principal and writes the
audit row in the same transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from gateway import keys
from gateway.models import ApiKey, TenantPlan, Tier
from llmplatform.audit import actor_label, audit_record
from llmplatform.models import Tenant

DEFAULT_SCOPES = [ApiKey.Scope.CHAT.value, ApiKey.Scope.MODELS_READ.value]


def _key_state(key: ApiKey) -> dict[str, Any]:
    return {
        "name": key.name,
        "display": key.display,
        "scopes": key.scopes,
        "expires_at": key.expires_at.isoformat() if key.expires_at else None,
        "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
    }


def api_key_create(
    *,
    actor: Any,
    tenant: Tenant,
    name: str,
    scopes: list[str] | None = None,
    expires_at: datetime | None = None,
) -> tuple[ApiKey, str]:
    """Create a key; returns the row and the plaintext, which is never available again."""
    scopes = list(DEFAULT_SCOPES if scopes is None else scopes)
    unknown = set(scopes) - set(ApiKey.Scope.values)
    if unknown:
        raise ValueError(f"Unknown scopes: {', '.join(sorted(unknown))}")
    new = keys.generate()
    with transaction.atomic():
        key = ApiKey.objects.create(
            tenant=tenant,
            name=name,
            lookup=new.lookup,
            secret_hash=new.secret_hash,
            pepper_id=new.pepper_id,
            last_four=new.last_four,
            scopes=scopes,
            expires_at=expires_at,
            created_by=actor_label(actor),
        )
        audit_record(actor=actor, action="api_key.create", obj=key, after=_key_state(key))
    return key, new.plaintext


def api_key_revoke(*, actor: Any, key: ApiKey) -> ApiKey:
    with transaction.atomic():
        key = ApiKey.objects.select_for_update().get(pk=key.pk)
        if key.revoked_at is not None:
            return key
        before = _key_state(key)
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
        audit_record(
            actor=actor, action="api_key.revoke", obj=key, before=before, after=_key_state(key)
        )
    return key


def tenant_create(*, actor: Any, name: str, slug: str, tier: Tier) -> Tenant:
    with transaction.atomic():
        tenant = Tenant.objects.create(name=name, slug=slug)
        TenantPlan.objects.create(tenant=tenant, tier=tier)
        audit_record(
            actor=actor,
            action="tenant.create",
            obj=tenant,
            after={"name": name, "slug": slug, "tier": tier.name},
        )
    return tenant


def tenant_set_tier(*, actor: Any, tenant: Tenant, tier: Tier) -> TenantPlan:
    with transaction.atomic():
        plan, created = TenantPlan.objects.select_for_update().get_or_create(
            tenant=tenant, defaults={"tier": tier}
        )
        before = None if created else {"tier": plan.tier.name}
        if not created and plan.tier_id != tier.pk:
            plan.tier = tier
            plan.save(update_fields=["tier"])
        audit_record(
            actor=actor, action="tenant.set_tier", obj=tenant, before=before,
            after={"tier": tier.name},
        )
    return plan


def cache_invalidate_alias(*, actor: Any, alias_name: str) -> None:
    """Every tenant's cached answers for an alias stop being served (namespace bump)."""
    from gateway import cache

    with transaction.atomic():
        audit_record(actor=actor, action="cache.invalidate_alias",
                     object_type="gateway.ModelAlias", object_id=alias_name,
                     object_repr=alias_name)
        transaction.on_commit(lambda: cache.invalidate_alias(alias_name))


def cache_invalidate_tenant(*, actor: Any, tenant: Tenant, alias_name: str | None = None) -> None:
    """One tenant's cached answers (for one alias, or all) stop being served."""
    from gateway import cache

    with transaction.atomic():
        audit_record(actor=actor, action="cache.invalidate_tenant", obj=tenant,
                     after={"alias": alias_name})
        transaction.on_commit(lambda: cache.invalidate_tenant(tenant.pk, alias_name))
