"""Reading data-subject requests: the signed public ids that name them in the subject's URLs
(and the decoy ids for organisations that do not exist), the request behind an id, and the
requests the periodic resume task should (re)start."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core import signing
from django.db.models import Q
from django.utils import timezone

from privacy.models import SubjectRequest

if TYPE_CHECKING:
    from llmplatform.models import Tenant

State = SubjectRequest.State

# Automatic retries of a failed execution (each claim counts one); after that an officer
# approves it again.
MAX_EXECUTION_ATTEMPTS = 5

PUBLIC_ID_SALT = "privacy.subject-request.public-id"


def public_id(request: SubjectRequest) -> str:
    """The id in the subject's URLs: signed, so it cannot be guessed from the pk."""
    return signing.Signer(salt=PUBLIC_ID_SALT).sign_object(request.pk)


def _pk_of_public_id(value: str) -> Any:
    try:
        return signing.Signer(salt=PUBLIC_ID_SALT).unsign_object(value)
    except signing.BadSignature:
        return None


def request_for_public_id(value: str) -> SubjectRequest | None:
    """The request a public id names, whichever tenant's: the signed id is what the subject's
    pages hold, not a tenant."""
    pk = _pk_of_public_id(value)
    if pk is None:
        return None
    return SubjectRequest.objects.select_related("tenant", "subject").filter(pk=pk).first()


def tenant_request_for_public_id(tenant: Tenant | int, value: str) -> SubjectRequest | None:
    """One of the tenant's requests by its public id; None for another tenant's request, as for
    a missing one or an id that is not one."""
    pk = _pk_of_public_id(value)
    if pk is None:
        return None
    return (
        SubjectRequest.objects.for_tenant(tenant)
        .select_related("tenant", "subject")
        .filter(pk=pk)
        .first()
    )


DECOY_SALT = "privacy.decoy-request"


def decoy_public_id() -> str:
    """A code-page id for a request to an organisation that does not exist: signed like a real
    one (and as long), so the next page cannot tell the two apart."""
    latest = SubjectRequest.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    return signing.Signer(salt=DECOY_SALT).sign_object(latest + 1 + secrets.randbelow(3))


def is_decoy_public_id(value: str) -> bool:
    try:
        signing.Signer(salt=DECOY_SALT).unsign_object(value)
    except signing.BadSignature:
        return False
    return True


def claimable_q(now: datetime) -> Q:
    stalled_before = now - timedelta(minutes=settings.LLMP_PRIVACY_STALL_MINUTES)
    return (
        Q(state=State.APPROVED)
        | Q(state=State.FAILED, attempts__lt=MAX_EXECUTION_ATTEMPTS)
        | Q(state=State.IN_PROGRESS, started_at__lt=stalled_before)
    )


def claimable_request_ids(*, now: datetime | None = None, limit: int = 100) -> list[int]:
    """Requests the resume task should (re)start: approved ones whose task was lost, failed
    ones with retries left, and in-progress ones whose worker died."""
    return list(
        SubjectRequest.objects.filter(claimable_q(now or timezone.now()))
        .order_by("pk")
        .values_list("pk", flat=True)[:limit]
    )
