"""Every write of the gateway's governed data. Each takes the acting principal and writes the
audit row in the same transaction."""

from __future__ import annotations

import ipaddress
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypedDict

import structlog
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from gateway import keys
from gateway.models import (
    ApiKey,
    GuardrailScanner,
    SecurityEvent,
    ServiceAccount,
    TenantPlan,
    Tier,
)
from llmplatform.actors import Actor
from llmplatform.audit import AuditAction, audit_record
from llmplatform.errors import Conflict, InvalidInput
from llmplatform.models import Tenant

if TYPE_CHECKING:
    from privacy.models import DataSubject

logger = structlog.get_logger("gateway.services")

DEFAULT_SCOPES = [
    ApiKey.Scope.CHAT.value,
    ApiKey.Scope.EMBEDDINGS.value,
    ApiKey.Scope.MODELS_READ.value,
    ApiKey.Scope.PRIVACY.value,
]
DEFAULT_ROTATION_OVERLAP = timedelta(hours=24)
MAX_ROTATION_OVERLAP = timedelta(days=30)


def normalize_ip_ranges(ranges: list[str] | None) -> list[str]:
    """CIDR ranges in canonical form (``10.0.0.7`` -> ``10.0.0.7/32``); InvalidInput on a bad
    one."""
    result = []
    for raw in ranges or []:
        text = str(raw).strip()
        if not text:
            continue
        try:
            result.append(str(ipaddress.ip_network(text, strict=False)))
        except ValueError as exc:
            raise InvalidInput(
                f"'{text}' is not an IP address or CIDR range", param="allowed_ips"
            ) from exc
    return result


def _check_scopes(scopes: list[str]) -> None:
    unknown = set(scopes) - set(ApiKey.Scope.values)
    if unknown:
        raise InvalidInput(f"Unknown scopes: {', '.join(sorted(unknown))}", param="scopes")


def _key_state(key: ApiKey) -> dict[str, Any]:
    return {
        "name": key.name,
        "display": key.display,
        "scopes": key.scopes,
        "expires_at": key.expires_at.isoformat() if key.expires_at else None,
        "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
        "allowed_ips": key.allowed_ips,
        "service_account": key.service_account.name if key.service_account is not None else None,
        "daily_budget": str(key.daily_budget) if key.daily_budget is not None else None,
        "monthly_budget": str(key.monthly_budget) if key.monthly_budget is not None else None,
    }


def api_key_create(
    *,
    actor: Actor,
    tenant: Tenant,
    name: str,
    scopes: list[str] | None = None,
    expires_at: datetime | None = None,
    service_account: ServiceAccount | None = None,
    allowed_ips: list[str] | None = None,
    daily_budget: Decimal | None = None,
    monthly_budget: Decimal | None = None,
) -> tuple[ApiKey, str]:
    """Create a key; returns the row and the plaintext, which is never available again."""
    scopes = list(DEFAULT_SCOPES if scopes is None else scopes)
    _check_scopes(scopes)
    allowed_ips = normalize_ip_ranges(allowed_ips)
    if service_account is not None:
        if service_account.tenant_id != tenant.pk:
            raise InvalidInput(
                "The service account belongs to another tenant", param="service_account"
            )
        if ServiceAccount.objects.filter(pk=service_account.pk, disabled_at__isnull=False).exists():
            raise Conflict("The service account is disabled", param="service_account")
    with transaction.atomic():
        key, plaintext = _new_key(
            tenant=tenant,
            name=name,
            scopes=scopes,
            expires_at=expires_at,
            service_account=service_account,
            allowed_ips=allowed_ips,
            daily_budget=daily_budget,
            monthly_budget=monthly_budget,
            actor=actor,
        )
        audit_record(actor=actor, action=AuditAction.API_KEY_CREATE, obj=key, after=_key_state(key))
    return key, plaintext


def _new_key(*, actor: Actor, **fields: Any) -> tuple[ApiKey, str]:
    new = keys.generate()
    key = ApiKey.objects.create(
        lookup=new.lookup,
        secret_hash=new.secret_hash,
        pepper_id=new.pepper_id,
        last_four=new.last_four,
        created_by=actor.label,
        **fields,
    )
    return key, new.plaintext


def api_key_rotate(
    *, actor: Actor, key: ApiKey, overlap: timedelta = DEFAULT_ROTATION_OVERLAP
) -> tuple[ApiKey, str]:
    """Replace a key with a new one of the same name, scopes, IP ranges, budgets and service
    account. The old key keeps working for ``overlap`` (so deployments can switch over), then
    expires. Returns the new key and its plaintext."""
    if overlap < timedelta(0) or overlap > MAX_ROTATION_OVERLAP:
        raise InvalidInput("The overlap must be between 0 and 30 days", param="overlap")
    with transaction.atomic():
        old = ApiKey.objects.select_for_update().get(pk=key.pk)
        now = timezone.now()
        if old.revoked_at is not None or (old.expires_at is not None and old.expires_at <= now):
            raise Conflict("A revoked or expired key cannot be rotated")
        if old.replaced_by_id is not None:
            raise Conflict("This key was already rotated")
        before = _key_state(old)
        new, plaintext = _new_key(
            tenant=old.tenant,
            name=old.name,
            scopes=old.scopes,
            expires_at=old.expires_at,
            service_account=old.service_account,
            allowed_ips=old.allowed_ips,
            daily_budget=old.daily_budget,
            monthly_budget=old.monthly_budget,
            actor=actor,
        )
        end = now + overlap
        old.expires_at = end if old.expires_at is None else min(old.expires_at, end)
        old.replaced_by = new
        old.save(update_fields=["expires_at", "replaced_by"])
        audit_record(
            actor=actor,
            action=AuditAction.API_KEY_ROTATE,
            obj=old,
            before=before,
            after={**_key_state(old), "replaced_by": new.display},
        )
        audit_record(
            actor=actor,
            action=AuditAction.API_KEY_CREATE,
            obj=new,
            after={**_key_state(new), "rotated_from": old.display},
        )
    return new, plaintext


def service_account_create(
    *, actor: Actor, tenant: Tenant, name: str, description: str = ""
) -> ServiceAccount:
    with transaction.atomic():
        account = ServiceAccount.objects.create(
            tenant=tenant, name=name, description=description, created_by=actor.label
        )
        audit_record(
            actor=actor,
            action=AuditAction.SERVICE_ACCOUNT_CREATE,
            obj=account,
            after={"name": name, "description": description},
        )
    return account


def service_account_disable(*, actor: Actor, account: ServiceAccount) -> ServiceAccount:
    """Disable a service account and revoke every key it holds."""
    with transaction.atomic():
        account = ServiceAccount.objects.select_for_update().get(pk=account.pk)
        if account.disabled_at is not None:
            return account
        now = timezone.now()
        account.disabled_at = now
        account.save(update_fields=["disabled_at"])
        revoked = account.api_keys.filter(revoked_at__isnull=True).update(revoked_at=now)
        audit_record(
            actor=actor,
            action=AuditAction.SERVICE_ACCOUNT_DISABLE,
            obj=account,
            after={"keys_revoked": revoked},
        )
    return account


def api_key_revoke(*, actor: Actor, key: ApiKey) -> ApiKey:
    with transaction.atomic():
        key = ApiKey.objects.select_for_update().get(pk=key.pk)
        if key.revoked_at is not None:
            return key
        before = _key_state(key)
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
        audit_record(
            actor=actor,
            action=AuditAction.API_KEY_REVOKE,
            obj=key,
            before=before,
            after=_key_state(key),
        )
    return key


def guardrail_scanner_set_enabled(
    *, actor: Actor, scanner: GuardrailScanner, enabled: bool
) -> GuardrailScanner:
    """Switch an external scanner on or off (every process follows within seconds: the routing
    snapshot is rebuilt on the save)."""
    with transaction.atomic():
        row = GuardrailScanner.objects.select_for_update().get(pk=scanner.pk)
        if row.enabled == enabled:
            return row
        row.enabled = enabled
        row.save(update_fields=["enabled", "updated_at"])
        audit_record(
            actor=actor,
            action=AuditAction.GUARDRAIL_SCANNER_ENABLE
            if enabled
            else AuditAction.GUARDRAIL_SCANNER_DISABLE,
            obj=row,
            before={"enabled": not enabled},
            after={"enabled": enabled},
        )
    return row


def tenant_create(*, actor: Actor, name: str, slug: str, tier: Tier) -> Tenant:
    with transaction.atomic():
        tenant = Tenant.objects.create(name=name, slug=slug)
        TenantPlan.objects.create(tenant=tenant, tier=tier)
        audit_record(
            actor=actor,
            action=AuditAction.TENANT_CREATE,
            obj=tenant,
            after={"name": name, "slug": slug, "tier": tier.name},
        )
    return tenant


def tenant_set_tier(*, actor: Actor, tenant: Tenant, tier: Tier) -> TenantPlan:
    with transaction.atomic():
        plan, created = TenantPlan.objects.select_for_update().get_or_create(
            tenant=tenant, defaults={"tier": tier}
        )
        before = None if created else {"tier": plan.tier.name}
        if not created and plan.tier_id != tier.pk:
            plan.tier = tier
            plan.save(update_fields=["tier"])
        audit_record(
            actor=actor,
            action=AuditAction.TENANT_SET_TIER,
            obj=tenant,
            before=before,
            after={"tier": tier.name},
        )
    return plan


def cache_invalidate_alias(*, actor: Actor, alias_name: str) -> None:
    """Every tenant's cached answers for an alias stop being served (namespace bump)."""
    from gateway import cache

    with transaction.atomic():
        audit_record(
            actor=actor,
            action=AuditAction.CACHE_INVALIDATE_ALIAS,
            object_type="gateway.ModelAlias",
            object_id=alias_name,
            object_repr=alias_name,
        )
        transaction.on_commit(lambda: cache.invalidate_alias(alias_name))


def cache_invalidate_tenant(*, actor: Actor, tenant: Tenant, alias_name: str | None = None) -> None:
    """One tenant's cached answers (for one alias, or all) stop being served."""
    from gateway import cache

    with transaction.atomic():
        audit_record(
            actor=actor,
            action=AuditAction.CACHE_INVALIDATE_TENANT,
            obj=tenant,
            after={"alias": alias_name},
        )
        transaction.on_commit(lambda: cache.invalidate_tenant(tenant.pk, alias_name))


class SecurityEventText(TypedDict, total=False):
    """The fields of a ``SecurityEvent`` that keep its flagged text (none when nothing is)."""

    subject: DataSubject
    text_ciphertext: bytes
    text: str
    text_expires_at: datetime


def security_event_text(tenant_id: int, user: str | None, text: str) -> SecurityEventText:
    """The fields that keep a flagged text: encrypted with the end user's data key when the
    request named one, else redacted of personal data; either way only for
    ``LLMP_SECURITY_TEXT_DAYS``. A detector that fails keeps nothing (fail closed)."""
    from privacy import crypto
    from privacy.pii import DetectorError, redact
    from privacy.services import subject_get_or_create

    expires = timezone.now() + timedelta(days=settings.LLMP_SECURITY_TEXT_DAYS)
    if user:
        subject = subject_get_or_create(tenant=Tenant.objects.get(pk=tenant_id), external_id=user)
        try:
            ciphertext = crypto.encrypt(
                subject, text, aad=crypto.record_aad(subject, "security_event")
            )
        except crypto.CryptoError:
            return {}  # a destroyed (erased) subject's key: keep nothing
        return {"subject": subject, "text_ciphertext": ciphertext, "text_expires_at": expires}
    try:
        return {"text": redact(text), "text_expires_at": expires}
    except DetectorError:
        logger.error("security_event_text_not_kept", reason="pii_detector_failed")
        return {}


def security_event_text_purge(*, now: datetime | None = None) -> int:
    """Forget the text kept with security events whose retention has passed (the event, its
    score and the hash of the text stay). Returns how many events lost their text."""
    now = now or timezone.now()
    return SecurityEvent.objects.filter(text_expires_at__lte=now).update(
        text="", text_ciphertext=None, subject=None, text_expires_at=None
    )


def security_events_find(tenant_id: int, external_id: str) -> list[dict[str, Any]]:
    """The subject's security events with the text kept for them, decrypted (data map)."""
    from privacy import crypto, selectors

    subject = selectors.subject_for(tenant_id, external_id)
    if subject is None:
        return []
    out: list[dict[str, Any]] = []
    for event in SecurityEvent.objects.filter(subject=subject).order_by("created_at", "id"):
        # An event keeps its subject only with the encrypted text (security_event_text).
        assert event.text_ciphertext is not None
        try:
            text = crypto.decrypt(
                subject,
                bytes(event.text_ciphertext),
                aad=crypto.record_aad(subject, "security_event"),
            )
        except crypto.CryptoError:
            text = None
        out.append(
            {
                "created_at": event.created_at.isoformat(),
                "kind": event.kind,
                "action": event.action,
                "request_id": event.request_id,
                "text": text,
            }
        )
    return out


def security_events_erase(tenant_id: int, external_id: str) -> int:
    """Erase the texts kept for the subject (the events stay, without text or subject)."""
    from privacy import selectors

    subject = selectors.subject_for(tenant_id, external_id)
    if subject is None:
        return 0
    return SecurityEvent.objects.filter(subject=subject).update(
        text="", text_ciphertext=None, subject=None, text_expires_at=None
    )
