"""The GDPR Art. 30 record of processing activities, generated from what is configured: the
controller (settings), the purposes and categories the platform's features imply, the
recipients (the enabled providers and their deployments), transfers (provider regions where
known), retention (the tenants' privacy policies) and the technical measures in force.

Nothing here is typed in by hand, so the record cannot drift from the running system; what
configuration cannot say (a provider's region when it is not set) is shown as unknown.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.db.models import Count, Q
from django.utils import timezone


@dataclasses.dataclass(frozen=True)
class Recipient:
    name: str
    kind: str
    endpoint: str
    models: list[str]
    location: str
    transfer: str


def _host(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


def _is_local(host: str) -> bool:
    if host in {"localhost", ""}:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host.endswith((".local", ".internal", ".svc", ".cluster.local"))
    return address.is_loopback or address.is_private or address.is_link_local


def _recipient(provider: Any) -> Recipient:
    from gateway.models import Provider
    from gateway.providers.kind_settings import DEFAULT_BASE_URLS, vertex_base_url

    models = [f"{d.name} ({d.model})" for d in provider.enabled_deployments]
    host = _host(provider.base_url)
    if provider.kind == Provider.Kind.BEDROCK:
        region = provider.region or settings.AWS_REGION
        endpoint = provider.base_url or f"AWS Bedrock, {region}"
        location = f"AWS region {region}"
    elif provider.kind == Provider.Kind.VERTEX:
        endpoint = provider.base_url or vertex_base_url(provider.region)
        location = f"Google Cloud location {provider.region}"
    elif provider.region:
        endpoint, location = provider.base_url, f"region {provider.region}"
    elif not provider.base_url and provider.kind in DEFAULT_BASE_URLS:
        # Anthropic's or Google's own API: where it processes is in their terms, not ours.
        endpoint = DEFAULT_BASE_URLS[provider.kind]
        location = "unknown: not configured (set the region)"
    elif host and _is_local(host):
        endpoint, location = provider.base_url, "this machine or the private network"
    else:
        endpoint, location = provider.base_url, "unknown: not configured (set the region)"
    if location == "this machine or the private network":
        transfer = "none: processed on the operator's own infrastructure"
    elif location.startswith("unknown"):
        transfer = "unknown: check the provider's data processing agreement"
    else:
        transfer = (
            f"to {location}; a transfer outside the EEA needs safeguards "
            "(Art. 46, e.g. standard contractual clauses)"
        )
    return Recipient(
        name=provider.name,
        kind=provider.get_kind_display(),
        endpoint=endpoint,
        models=models,
        location=location,
        transfer=transfer,
    )


def _backups() -> tuple[str, str | None]:
    """(retention, where the encrypted backups go) from the backups app's settings."""
    from django.core.exceptions import ImproperlyConfigured

    try:
        from deployments.backups import conf as backup_conf

        conf = backup_conf.get()
    except (ImportError, ImproperlyConfigured, AttributeError):
        return "see the backup settings", None
    if not conf.configured:
        return f"{conf.retention.days} days (backups are not configured)", None
    if conf.mode == "rds":
        return (
            f"{conf.retention.days} days (RDS snapshots of {conf.rds_instance})",
            f"RDS snapshots in AWS region {conf.region}",
        )
    host = _host(conf.endpoint_url or "")
    if not host:
        where = f"AWS S3, region {conf.region}"
    elif _is_local(host):
        where = "this machine or the private network"
    else:
        where = f"{host} (region {conf.region})"
    return (
        f"{conf.retention.days} days, encrypted, in bucket {conf.bucket}",
        f"encrypted database backups to {where}",
    )


def record_of_processing() -> dict[str, Any]:
    from django.db.models import Prefetch

    from gateway.models import Provider, ProviderDeployment, TenantPlan
    from llmplatform.models import Membership, Tenant
    from privacy.models import ConsentRecord, DataSubject, PrivacyPolicy

    providers = list(
        Provider.objects.filter(enabled=True)
        .prefetch_related(
            Prefetch(
                "deployments",
                queryset=ProviderDeployment.objects.filter(enabled=True),
                to_attr="enabled_deployments",
            )
        )
        .order_by("name")
    )
    recipients = [_recipient(p) for p in providers if p.enabled_deployments]
    disabled = list(
        Provider.objects.filter(enabled=False).order_by("name").values_list("name", flat=True)
    )

    tenants = list(Tenant.objects.filter(is_active=True).order_by("name"))
    policies = {p.tenant_id: p for p in PrivacyPolicy.objects.filter(tenant__in=tenants)}
    default_policy = PrivacyPolicy()
    retention = []
    for tenant in tenants:
        policy = policies.get(tenant.pk, default_policy)
        retention.append(
            {
                "tenant": tenant,
                "store_conversations": policy.store_conversations,
                "retention_days": policy.retention_days,
                "upstream_pii": policy.get_upstream_pii_display(),
                "block_pii_types": policy.block_pii_types,
                "default": tenant.pk not in policies,
            }
        )
    pii_modes = {
        mode: sum(1 for r in retention if r["upstream_pii"] == label)
        for mode, label in PrivacyPolicy.UpstreamPII.choices
    }

    subjects = DataSubject.objects.aggregate(
        total=Count("id"), erased=Count("id", filter=Q(erased_at__isnull=False))
    )
    flagged_text = TenantPlan.objects.filter(store_flagged_text=True).count()
    storing = [r for r in retention if r["store_conversations"]]

    categories_of_data = [
        (
            "End-user identifiers",
            "the `user` value tenants' apps send; kept with consent and "
            "requests, as a keyed hash in erasure receipts",
        ),
        (
            "Prompts and replies",
            "sent to the recipients below to answer the request; kept only "
            "as conversation records for subjects who consented to storage, redacted "
            "(emails, phone numbers, card numbers...) and encrypted"
            if storing
            else "sent to the recipients below; no tenant stores conversations",
        ),
        (
            "Contact emails",
            "registered for data-subject requests; encrypted, with a keyed hash to find them",
        ),
        ("Consent decisions", "purpose, grant or withdrawal, policy version, source, time"),
        ("Usage metadata", "time, tenant, key, model, tokens, cost, status; no content"),
        (
            "Security events",
            "a hash of blocked or flagged prompts; the text only for "
            f"{flagged_text} tenant plan(s) that opted in",
        ),
        (
            "Staff and tenant users",
            "username, email, sign-in times and addresses (audit log, "
            "lockouts), authenticator enrolment",
        ),
    ]
    purposes = [
        (
            "Answering the LLM requests of tenants' applications",
            "Art. 6(1)(b): the tenant's "
            "contract with its users; the platform acts on the tenant's instructions",
        ),
        (
            "Keeping conversation records",
            "Art. 6(1)(a): consent (store conversations), recorded with its history (Art. 7(1))",
        ),
        ("Metering, budgets and billing", "Art. 6(1)(b)/(f)"),
        (
            "Security: abuse limits, prompt-injection screening, audit log, sign-in protection",
            "Art. 6(1)(f) and Art. 32",
        ),
        (
            "Answering data-subject requests (access, erasure, opt-out)",
            "Art. 6(1)(c): legal obligation (Art. 12-22; CCPA)",
        ),
    ]
    consent_purposes = [label for _, label in ConsentRecord.Purpose.choices]

    key_provider = (
        "AWS KMS key " + str(settings.LLMP_KMS_KEY_ID)
        if settings.LLMP_KEY_PROVIDER == "kms"
        else "a local master key"
    )
    if getattr(settings, "SECURE_SSL_REDIRECT", False):
        in_transit = (
            f"HTTPS required, Secure cookies, HSTS {getattr(settings, 'SECURE_HSTS_SECONDS', 0)} s"
        )
    else:
        in_transit = f"HTTPS is not required by these settings (LLMP_ENV={settings.LLMP_ENV})"
    measures = [
        (
            "Encryption at rest",
            "conversation records and contact emails: AES-256-GCM with one "
            f"data key per data subject, wrapped by {key_provider}; erasure destroys the data key "
            "(crypto-shredding), backups included",
        ),
        ("Encryption in transit", in_transit),
        (
            "Pseudonymisation and minimisation",
            "PII redacted before storage; before prompts "
            f"reach a provider: {pii_modes.get('pseudonymize', 0)} tenant(s) pseudonymise, "
            f"{pii_modes.get('mask', 0)} mask, {pii_modes.get('off', 0)} send as is; keyed "
            "hashes (HMAC) instead of emails and subject ids where a lookup is needed",
        ),
        (
            "Access control",
            "API keys with scopes, expiry and IP ranges (only an HMAC "
            "stored); staff admin with password and "
            + (
                "a TOTP second factor"
                if settings.LLMP_ADMIN_REQUIRE_2FA
                else "NO second factor (LLMP_ADMIN_REQUIRE_2FA off)"
            )
            + f", sign-in lockout after {settings.AXES_FAILURE_LIMIT} failures; reading a "
            "conversation's plaintext needs its own permission and is audited",
        ),
        (
            "Accountability",
            "append-only audit log of every privileged action; live evidence "
            "of these measures on the compliance reports",
        ),
    ]
    backups_retention, backups_transfer = _backups()
    retention_general = [
        ("Audit log", "kept (append-only)"),
        ("Usage records and security events", "kept for billing and security review"),
        (
            "Completed access exports",
            f"deleted when downloaded or after {settings.LLMP_PRIVACY_EXPORT_LINK_DAYS} days",
        ),
        ("Database backups", backups_retention),
    ]
    return {
        "generated_at": timezone.now(),
        "controller": {
            "name": settings.LLMP_CONTROLLER_NAME,
            "contact": settings.LLMP_CONTROLLER_CONTACT,
            "dpo": settings.LLMP_DPO_CONTACT,
            "representative": settings.LLMP_EU_REPRESENTATIVE,
        },
        "purposes": purposes,
        "consent_purposes": consent_purposes,
        "subject_categories": [
            (
                "End users of the tenants' applications",
                f"{subjects['total']} data subject(s) known, {subjects['erased']} erased",
            ),
            (
                "Users of the tenants (tenant portal)",
                f"{Membership.objects.count()} membership(s) in {len(tenants)} active tenant(s)",
            ),
            ("Platform staff (admin)", "operators and compliance officers"),
        ],
        "data_categories": categories_of_data,
        "recipients": recipients,
        "disabled_providers": disabled,
        "retention": retention,
        "retention_general": retention_general,
        "backups_transfer": backups_transfer,
        "measures": measures,
    }
