"""Carrying out approved data-subject requests: the claim (a conditional UPDATE, so a second or
resumed run does nothing), erasure through the data map with its receipt, the access export,
the opt-out, and the failed state with its error when a step raises."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from django.utils.crypto import salted_hmac

from llmplatform import datamap
from llmplatform.actors import SYSTEM
from llmplatform.audit import AuditAction, audit_record
from privacy import crypto, services
from privacy.models import ConsentRecord, ErasureReceipt, SubjectRequest
from privacy.subject_requests.export import build_export, export_aad, export_url
from privacy.subject_requests.mail import notify_on_commit, registered_email
from privacy.subject_requests.selectors import claimable_q
from privacy.subject_requests.services import SubjectRequestError, audit_snapshot

State = SubjectRequest.State
Kind = SubjectRequest.Kind
Source = SubjectRequest.Source


def subject_ref(tenant_id: int, external_id: str) -> str:
    """A keyed hash naming a subject in receipts without naming the person."""
    return salted_hmac(
        "privacy.subject-ref", f"{tenant_id}:{external_id}", algorithm="sha256"
    ).hexdigest()


@dataclass(frozen=True, slots=True)
class ExecutionOutcome:
    ran: bool
    state: str


def subject_request_execute(request_id: int) -> ExecutionOutcome:
    """Run an approved request. Claims it with a conditional UPDATE (approved, failed with
    retries left, or stalled in progress -> in_progress); if another run holds it or it is done,
    returns without doing anything."""
    now = timezone.now()
    # The claim and its audit row commit together: no run starts without its row, and a
    # failed audit write leaves the request claimable.
    with transaction.atomic():
        claimed = (
            SubjectRequest.objects.filter(pk=request_id)
            .filter(claimable_q(now))
            .update(
                state=State.IN_PROGRESS, started_at=now, attempts=F("attempts") + 1, last_error=""
            )
        )
        request = SubjectRequest.objects.select_related("tenant", "subject").get(pk=request_id)
        if not claimed:
            return ExecutionOutcome(ran=False, state=request.state)
        audit_record(
            actor=SYSTEM,
            action=AuditAction.SUBJECT_REQUEST_START,
            obj=request,
            after=audit_snapshot(request),
        )
    step = "start"
    try:
        if request.verified_at is None or request.subject is None:
            # The claim only takes approved requests, which only verified ones become; this
            # guards against a row changed by hand.
            raise SubjectRequestError("request is not verified")
        if request.kind == Kind.ERASURE:
            step = "erasure"
            _execute_erasure(request)
        elif request.kind == Kind.ACCESS:
            step = "export"
            _execute_access(request)
        else:
            step = "opt_out"
            _execute_opt_out(request)
    except ClaimLost:
        return ExecutionOutcome(ran=False, state=State.IN_PROGRESS)
    except Exception as exc:
        # The error's class and step only: messages may quote personal data.
        error = f"{step}: {type(exc).__name__}"[:300]
        with transaction.atomic():
            SubjectRequest.objects.filter(
                pk=request_id, state=State.IN_PROGRESS, started_at=request.started_at
            ).update(state=State.FAILED, last_error=error)
            request.refresh_from_db()
            audit_record(
                actor=SYSTEM,
                action=AuditAction.SUBJECT_REQUEST_FAIL,
                obj=request,
                after={**audit_snapshot(request), "error": error},
            )
        return ExecutionOutcome(ran=True, state=State.FAILED)
    return ExecutionOutcome(ran=True, state=State.COMPLETED)


def _complete(request: SubjectRequest, *, after: dict[str, Any] | None = None) -> None:
    """Mark a claimed request completed, inside the caller's transaction. If a resume took the
    request over meanwhile (this run was thought stalled), raise ClaimLost, which rolls this
    run's work back."""
    finished = timezone.now()
    updated = SubjectRequest.objects.filter(
        pk=request.pk, state=State.IN_PROGRESS, started_at=request.started_at
    ).update(state=State.COMPLETED, completed_at=finished)
    if updated != 1:
        raise ClaimLost()
    request.state, request.completed_at = State.COMPLETED, finished
    audit_record(
        actor=SYSTEM,
        action=AuditAction.SUBJECT_REQUEST_COMPLETE,
        obj=request,
        after={**audit_snapshot(request), **(after or {})},
    )


class ErasureIncomplete(Exception):
    """A data holder that erasure relies on is not registered in the data map."""


# The holders without which an erasure would leave readable records or a live key (registered
# by the privacy app; the gateway adds its response cache).
ERASURE_HOLDERS = ("privacy.conversations", "privacy.subject")


class ClaimLost(Exception):
    """Another run claimed the request meanwhile (this one was thought stalled)."""


def _execute_erasure(request: SubjectRequest) -> None:
    subject = request.subject
    assert subject is not None
    # Read the address before the key that encrypts it is destroyed.
    address = registered_email(subject)
    started = request.started_at or timezone.now()
    # One transaction: the conversation rows, the data key and the receipt go together, so a
    # crash leaves nothing half-done in the database and the rerun reports the real counts.
    # Cache entries live outside it; purging them again is harmless (their count is then 0).
    missing = set(ERASURE_HOLDERS) - {holder.name for holder in datamap.holders()}
    if missing:
        # Never report an erasure done when the holders of the records or the key are absent.
        raise ErasureIncomplete(", ".join(sorted(missing)))
    with transaction.atomic():
        counts = datamap.erase_all(subject.tenant_id, subject.external_id)
        receipt = ErasureReceipt.objects.create(
            request=request,
            tenant_id=subject.tenant_id,
            subject_ref=subject_ref(subject.tenant_id, subject.external_id),
            counts=counts,
            started_at=started,
            finished_at=timezone.now(),
        )
        _complete(request, after={"counts": counts, "receipt": receipt.pk})
        notify_on_commit(
            request,
            f"Your privacy request to {request.tenant.name} is complete",
            f"Your erasure request is complete: the data {request.tenant.name} held about you "
            f"through this service has been erased (receipt {receipt.pk}).",
            address=address,
        )


def _execute_opt_out(request: SubjectRequest) -> None:
    subject = request.subject
    assert subject is not None
    with transaction.atomic():
        # Withdrawing sale_sharing also sets do_not_sell (privacy.services.consent_set).
        services.consent_set(
            actor=SYSTEM,
            subject=subject,
            purpose=ConsentRecord.Purpose.SALE_SHARING,
            granted=False,
            source=_consent_source(request),
        )
        _complete(request, after={"do_not_sell": True})
        notify_on_commit(
            request,
            f"Your privacy request to {request.tenant.name} is complete",
            f"{request.tenant.name} will no longer sell or share your personal information "
            "through this service.",
        )


def _consent_source(request: SubjectRequest) -> str:
    return (
        ConsentRecord.Source.PUBLIC_PAGE
        if request.source == Source.PUBLIC_PAGE
        else ConsentRecord.Source.API
    )


def _execute_access(request: SubjectRequest) -> None:
    subject = request.subject
    assert subject is not None
    document = build_export(request)
    plaintext = json.dumps(document, default=str, sort_keys=True)
    ciphertext = crypto.encrypt(subject, plaintext, aad=export_aad(request))
    with transaction.atomic():
        SubjectRequest.objects.filter(pk=request.pk).update(
            export_ciphertext=ciphertext, export_downloaded_at=None
        )
        _complete(request, after={"export": "ready"})
        days = settings.LLMP_PRIVACY_EXPORT_LINK_DAYS
        notify_on_commit(
            request,
            f"Your data from {request.tenant.name} is ready",
            f"Download a copy of your data (JSON and CSV in a zip file) here:\n\n"
            f"{export_url(request)}\n\nThe link works once, for {days} days.",
        )
