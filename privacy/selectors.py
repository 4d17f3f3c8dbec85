"""Reads of privacy data that other code relies on."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, TypedDict

from llmplatform.tenancy import tenant_pk
from privacy.models import ConsentRecord, DataSubject, PrivacyPolicy

if TYPE_CHECKING:
    from llmplatform.models import Tenant

Purpose = ConsentRecord.Purpose


class ConsentState(TypedDict):
    """A purpose's current state (all None/False when the subject never decided)."""

    granted: bool
    policy_version: str | None
    source: str | None
    updated_at: str | None


class ConsentDecision(TypedDict):
    """One recorded consent decision, as exported."""

    purpose: str
    granted: bool
    policy_version: str
    source: str
    actor: str
    request_id: str
    at: str | None


def subject_for(tenant: Tenant | int, external_id: str) -> DataSubject | None:
    """The (not erased) data subject ``external_id`` of a tenant (or its id), or None."""
    return (
        DataSubject.objects.for_tenant(tenant)
        .select_related("tenant")
        .filter(external_id=external_id, erased_at__isnull=True)
        .first()
    )


def privacy_policy_for(tenant: Tenant | int) -> PrivacyPolicy:
    """The tenant's policy, or an unsaved one with the defaults if it has none yet."""
    policy = PrivacyPolicy.objects.for_tenant(tenant).first()
    return policy if policy is not None else PrivacyPolicy(tenant_id=tenant_pk(tenant))


def consent_latest(subject: DataSubject | None, purpose: str) -> ConsentRecord | None:
    if subject is None or subject.pk is None:
        return None
    return (
        ConsentRecord.objects.filter(subject=subject, purpose=purpose)
        .order_by("-created_at", "-id")
        .first()
    )


def consent_current(subject: DataSubject | None, purpose: str) -> bool:
    """Whether the subject's newest decision for ``purpose`` is a grant. No record means no
    consent."""
    record = consent_latest(subject, purpose)
    return bool(record and record.granted)


def consent_state(subject: DataSubject | None) -> dict[str, ConsentState]:
    """Each purpose's current state: granted, policy version, source and time of the newest
    decision (all None/False when there was none). One query."""
    state: dict[str, ConsentState] = {
        purpose: {"granted": False, "policy_version": None, "source": None, "updated_at": None}
        for purpose in Purpose.values
    }
    if subject is None or subject.pk is None:
        return state
    seen: set[str] = set()
    # Newest first; the first record of each purpose is its current state. PostgreSQL could do
    # DISTINCT ON, but a subject has a handful of records and this runs on SQLite too.
    for record in ConsentRecord.objects.filter(subject=subject).order_by("-created_at", "-id"):
        if record.purpose in seen or record.purpose not in state:
            continue
        seen.add(record.purpose)
        state[record.purpose] = {
            "granted": record.granted,
            "policy_version": record.policy_version,
            "source": record.source,
            "updated_at": _iso(record.created_at),
        }
        if len(seen) == len(state):
            break
    return state


def consent_history(subject: DataSubject) -> list[ConsentDecision]:
    """Every consent decision of the subject, oldest first (the proof of GDPR Art. 7(1))."""
    return [
        {
            "purpose": r.purpose,
            "granted": r.granted,
            "policy_version": r.policy_version,
            "source": r.source,
            "actor": r.actor,
            "request_id": r.request_id,
            "at": _iso(r.created_at),
        }
        for r in ConsentRecord.objects.filter(subject=subject).order_by("created_at", "id")
    ]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
