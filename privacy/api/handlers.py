"""The privacy API for tenants' apps, as framework-free functions. The gateway's API layer
authenticates the tenant's API key and calls these with the key's tenant (privacy does not
import the gateway); it maps their refusals (``llmplatform.errors``: ``InvalidInput`` is a 400)
to its error JSON, with the message.

Routes (served by the gateway):

``GET /v1/privacy/subjects/<user>/consent`` -> ``get_consent``::

    {"user": "u-123",
     "do_not_sell": false,             # CCPA opt-out (sale_sharing withdrawn, or Sec-GPC: 1)
     "email_registered": true,
     "policy_version": "3",            # the tenant's current privacy-policy version
     "consent": {
        "store_conversations": {"granted": true, "policy_version": "3", "source": "api",
                                "updated_at": "2026-11-27T10:00:00+00:00"},
        "analytics":    {"granted": false, "policy_version": null, "source": null,
                         "updated_at": null},           # no decision yet: not granted
        "sale_sharing": {...}}}

``POST /v1/privacy/subjects/<user>/consent`` -> ``set_consent``; one purpose::

    {"purpose": "store_conversations", "granted": true,
     "policy_version": "3",     # optional: the tenant's current version
     "source": "api"}           # optional; only "api": consent recorded through the API is
                                # recorded as such (the platform's own portal and public page
                                # record theirs themselves)

or several at once (each is its own record in the history)::

    {"consents": {"store_conversations": true, "analytics": false}, "policy_version": "3"}

Withdrawing is the same call with ``false``. The reply is the ``GET`` shape. With the request
header ``Sec-GPC: 1`` (``gpc=True``) the sale/sharing opt-out is recorded (once), and a grant of
``sale_sharing`` in the same request is refused.

``PUT /v1/privacy/subjects/<user>`` -> ``register_subject``::

    {"email": "person@example.org"}   ->   {"user": "u-123", "email_registered": true}

The email is stored encrypted with the subject's data key; the reply never echoes it.
"""

from __future__ import annotations

from typing import Any

from llmplatform.actors import Actor
from llmplatform.errors import InvalidInput
from llmplatform.models import Tenant
from privacy import selectors, services
from privacy.models import ConsentRecord

Purpose = ConsentRecord.Purpose
Source = ConsentRecord.Source
# What a tenant's app may say of where consent came from: only that it came through the API. A
# tenant cannot make a decision look as if the subject had made it on the platform's own portal
# or public page.
API_SOURCES = (Source.API,)


def _tenant(tenant_id: int) -> Tenant:
    return Tenant.objects.get(pk=tenant_id)


def _body(body: Any, allowed: set[str]) -> dict:
    if not isinstance(body, dict):
        raise InvalidInput("the request body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise InvalidInput(f"unknown field(s): {', '.join(unknown)}")
    return body


def get_consent(tenant_id: int, external_id: str) -> dict:
    """The subject's current consent (see the module docstring). Creates nothing."""
    services.check_external_id(external_id)
    subject = selectors.subject_for(tenant_id, external_id)
    return {
        "user": external_id,
        "do_not_sell": bool(subject and subject.do_not_sell),
        "email_registered": bool(subject and subject.email_ciphertext is not None),
        "policy_version": selectors.privacy_policy_for(tenant_id).policy_version,
        "consent": selectors.consent_state(subject),
    }


def _decisions(body: dict) -> list[tuple[str, bool]]:
    if "consents" in body:
        if "purpose" in body or "granted" in body:
            raise InvalidInput("give either purpose and granted, or consents, not both")
        consents = body["consents"]
        if not isinstance(consents, dict) or not consents:
            raise InvalidInput("consents must be a non-empty object of purpose: true/false")
        decisions = list(consents.items())
    else:
        if "purpose" not in body or "granted" not in body:
            raise InvalidInput("purpose and granted are required")
        decisions = [(body["purpose"], body["granted"])]
    for purpose, granted in decisions:
        if purpose not in Purpose.values:
            raise InvalidInput(f"unknown purpose {purpose!r}; one of {', '.join(Purpose.values)}")
        if not isinstance(granted, bool):
            raise InvalidInput(f"granted for {purpose} must be true or false")
    return decisions


def set_consent(
    tenant_id: int, external_id: str, body: Any, *, actor: Actor, gpc: bool, request_id: str = ""
) -> dict:
    """Record consent decisions for the subject (see the module docstring)."""
    body = _body(body, {"purpose", "granted", "consents", "policy_version", "source"})
    decisions = _decisions(body)
    source = body.get("source", Source.API)
    if source not in API_SOURCES:
        raise InvalidInput(
            'source must be "api": consent recorded through the API is recorded as '
            "coming from the API"
        )
    policy_version = body.get("policy_version")
    if policy_version is not None and (
        not isinstance(policy_version, str) or not 0 < len(policy_version) <= 32
    ):
        raise InvalidInput("policy_version must be a string of 1 to 32 characters")
    if gpc and (Purpose.SALE_SHARING, True) in decisions:
        raise InvalidInput("granting sale_sharing conflicts with the request's Sec-GPC: 1 signal")
    subject = services.subject_get_or_create(tenant=_tenant(tenant_id), external_id=external_id)
    for purpose, granted in decisions:
        services.consent_set(
            actor=actor,
            subject=subject,
            purpose=purpose,
            granted=granted,
            source=source,
            policy_version=policy_version,
            request_id=request_id,
        )
    if gpc:
        services.consent_apply_gpc(subject=subject, request_id=request_id)
    return get_consent(tenant_id, external_id)


def register_subject(tenant_id: int, external_id: str, body: Any, *, actor: Actor) -> dict:
    """Register the subject's contact email (see the module docstring)."""
    body = _body(body, {"email"})
    if "email" not in body:
        raise InvalidInput("email is required")
    services.subject_register_email(
        actor=actor, tenant=_tenant(tenant_id), external_id=external_id, email=body["email"]
    )
    return {"user": external_id, "email_registered": True}
