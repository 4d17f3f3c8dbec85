"""State changes of data-subject requests, each with its audit row in one transaction: creating
a request, the one-time identity code and its check, the officers' approval, rejection and
extension, and closing public requests never verified."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from django.db import transaction
from django.utils import timezone
from django.utils.crypto import constant_time_compare, salted_hmac

from llmplatform.actors import SYSTEM, Actor
from llmplatform.audit import AuditAction, audit_record
from llmplatform.errors import DomainError
from llmplatform.models import Tenant
from privacy import crypto, services
from privacy.models import DataSubject, SubjectRequest
from privacy.subject_requests.deadlines import (
    GDPR_MAX_EXTENSION_MONTHS,
    OPEN_STATES,
    add_months,
    deadlines,
    effective_due,
)
from privacy.subject_requests.mail import (
    kind_phrase,
    notify,
    notify_on_commit,
    registered_email,
)

State = SubjectRequest.State
Kind = SubjectRequest.Kind
Law = SubjectRequest.Law
Source = SubjectRequest.Source

CODE_DIGITS = 6
CODE_LIFETIME = timedelta(minutes=15)
MAX_CODE_ATTEMPTS = 5
# A public request whose code was never entered is closed this long after the code expired.
UNVERIFIED_GRACE = timedelta(hours=24)

REJECTABLE_STATES = (State.RECEIVED, State.VERIFIED, State.APPROVED, State.FAILED)
APPROVABLE_STATES = (State.VERIFIED, State.FAILED)


class SubjectRequestError(DomainError):
    """A request cannot make the asked transition (wrong state, missing reason, ...); the
    message is shown to the officer, or to the app that asked."""

    code = "invalid_value"


def _code_hash(request: SubjectRequest, code: str) -> str:
    return salted_hmac(
        "privacy.subject-request.code", f"{request.pk}:{code}", algorithm="sha256"
    ).hexdigest()


def audit_snapshot(request: SubjectRequest) -> dict[str, Any]:
    """What audit rows record of a request: state and dates, no personal data."""

    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {
        "kind": request.kind,
        "law": request.law,
        "source": request.source,
        "state": request.state,
        "due_at": iso(request.due_at),
        "extended_due_at": iso(request.extended_due_at),
        "attempts": request.attempts,
    }


# --- Creating and verifying -----------------------------------------------------------------


def subject_request_create(
    *,
    tenant: Tenant,
    kind: str,
    law: str,
    source: str,
    external_id: str | None = None,
    email: str | None = None,
    actor: Actor,
) -> SubjectRequest:
    """Record a request.

    From the API (``external_id`` given by the tenant's authenticated app): verified at once,
    see the module docstring. From the public page (``email`` given): ``received``, and a code
    goes to the email if it is registered for a subject of the tenant. The caller shows the same
    answer either way; for an unknown email a code is made but sent nowhere, so the request
    behaves the same and can never be verified.
    """
    if kind not in Kind.values or law not in Law.values or source not in Source.values:
        raise SubjectRequestError("unknown kind, law or source")
    now = timezone.now()
    with transaction.atomic():
        subject: DataSubject | None
        email_hmac = ""
        if source == Source.API:
            if not external_id:
                raise SubjectRequestError("a request from the API names the subject")
            subject = services.subject_get_or_create(tenant=tenant, external_id=external_id)
        else:
            if not email:
                raise SubjectRequestError("a request from the public page gives an email")
            email_hmac = crypto.hmac_email(email)
            subject = (
                DataSubject.objects.filter(
                    tenant=tenant, email_hmac=email_hmac, erased_at__isnull=True
                )
                .order_by("pk")
                .first()
            )
        request = SubjectRequest.objects.create(
            tenant=tenant,
            subject=subject,
            kind=kind,
            law=law,
            source=source,
            email_hmac=email_hmac,
        )
        request.acknowledge_by, request.due_at = deadlines(law, request.received_at)
        if source == Source.API:
            request.state, request.verified_at = State.VERIFIED, now
        request.save(update_fields=["acknowledge_by", "due_at", "state", "verified_at"])
        audit_record(
            actor=actor,
            action=AuditAction.SUBJECT_REQUEST_CREATE,
            obj=request,
            after=audit_snapshot(request),
        )
        if source == Source.PUBLIC_PAGE:
            subject_request_send_code(request=request)
    return request


def subject_request_send_code(*, request: SubjectRequest) -> None:
    """Queue the one-time code for a public request (Celery, after commit).

    The page's POST does the same work whether or not the address is registered: it queues
    this one task. Whether a code goes out, and the decryption and SMTP round trip that sending
    costs, happen in the worker (``subject_request_issue_code``), so neither the answer nor its
    timing tells who is registered."""
    if request.state != State.RECEIVED:
        raise SubjectRequestError("only a request awaiting verification gets a code")
    from privacy.request_tasks import send_request_code

    request_id = request.pk
    transaction.on_commit(lambda: send_request_code.delay(request_id))


def subject_request_issue_code(request_id: int) -> bool:
    """Make a new one-time code, store its hash and email it to the subject's registered
    address when the request's email is that address. Returns whether an email went out.
    Wrong attempts are not reset by a new code. Run by the worker (see above)."""
    request = (
        SubjectRequest.objects.select_related("subject", "tenant").filter(pk=request_id).first()
    )
    if request is None or request.state != State.RECEIVED:
        return False
    code = f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
    subject = request.subject
    registered = (
        subject is not None
        and bool(request.email_hmac)
        and constant_time_compare(subject.email_hmac, request.email_hmac)
    )
    address = registered_email(subject) if registered else None
    with transaction.atomic():
        request.code_hash = _code_hash(request, code)
        request.code_expires_at = timezone.now() + CODE_LIFETIME
        request.save(update_fields=["code_hash", "code_expires_at"])
        # The audit row does not say whether a code went out: that would tell who is registered
        # to anyone who can read the tenant's audit log, which the officers do not need.
        audit_record(
            actor=SYSTEM,
            action=AuditAction.SUBJECT_REQUEST_CODE_ISSUED,
            obj=request,
            after={"expires_at": request.code_expires_at.isoformat()},
        )
    if not address:
        return False
    minutes = int(CODE_LIFETIME.total_seconds() // 60)
    return notify(
        address,
        f"Your code for your privacy request to {request.tenant.name}",
        f"Your code is {code}. It expires in {minutes} minutes.\n\n"
        f"Enter it on the page where you made your {kind_phrase(request)} request. "
        "If you did not make this request, ignore this email.",
    )


class VerifyResult(Enum):
    VERIFIED = "verified"
    WRONG = "wrong"  # wrong or expired code: the page says the same for both
    LOCKED = "locked"  # too many wrong codes: the request is closed
    NOT_PENDING = "not_pending"  # already verified, or closed


def subject_request_verify(*, request: SubjectRequest, code: str) -> VerifyResult:
    """Check a code (hashed, compared in constant time). After MAX_CODE_ATTEMPTS wrong codes
    the request is rejected and the subject starts again (with a new, rate-limited request)."""
    with transaction.atomic():
        locked = _locked(request)
        if locked.state != State.RECEIVED:
            return VerifyResult.NOT_PENDING
        now = timezone.now()
        matches = bool(locked.code_hash) and constant_time_compare(
            _code_hash(locked, (code or "").strip()), locked.code_hash
        )
        fresh = locked.code_expires_at is not None and now < locked.code_expires_at
        if matches and fresh and locked.subject_id is not None:
            before = audit_snapshot(locked)
            locked.state, locked.verified_at, locked.code_hash = State.VERIFIED, now, ""
            locked.save(update_fields=["state", "verified_at", "code_hash"])
            audit_record(
                actor=SYSTEM,
                action=AuditAction.SUBJECT_REQUEST_VERIFY,
                obj=locked,
                before=before,
                after=audit_snapshot(locked),
            )
            # The acknowledgement (CCPA: within 10 business days) with the date of the answer.
            notify_on_commit(
                locked,
                f"Your privacy request to {locked.tenant.name} is confirmed",
                f"We confirmed your {kind_phrase(locked)} request. "
                f"We will answer by {effective_due(locked):%Y-%m-%d}.",
            )
            result = VerifyResult.VERIFIED
        else:
            locked.code_attempts += 1
            fields = ["code_attempts"]
            result = VerifyResult.WRONG
            if locked.code_attempts >= MAX_CODE_ATTEMPTS:
                locked.state, locked.code_hash = State.REJECTED, ""
                locked.rejection_reason = "too many wrong identity codes"
                locked.decided_by = SYSTEM.label
                fields += ["state", "code_hash", "rejection_reason", "decided_by"]
                result = VerifyResult.LOCKED
            locked.save(update_fields=fields)
            audit_record(
                actor=SYSTEM,
                action=AuditAction.SUBJECT_REQUEST_VERIFY_FAILED,
                obj=locked,
                after={"attempts": locked.code_attempts, "state": locked.state},
            )
    request.refresh_from_db()
    return result


# --- Officers' decisions --------------------------------------------------------------------


def _locked(request: SubjectRequest) -> SubjectRequest:
    # Only the request row is locked (PostgreSQL refuses FOR UPDATE on the nullable subject).
    return (
        SubjectRequest.objects.select_for_update(of=("self",))
        .select_related("tenant", "subject")
        .get(pk=request.pk)
    )


def subject_request_approve(
    *, actor: Actor, request: SubjectRequest, reason: str = ""
) -> SubjectRequest:
    """Approve a verified request (or approve a failed one again) and enqueue its execution."""
    from privacy.request_tasks import execute_subject_request

    with transaction.atomic():
        locked = _locked(request)
        if locked.state not in APPROVABLE_STATES:
            raise SubjectRequestError(
                f"only a verified (or failed) request can be approved, not a {locked.state} one"
            )
        before = audit_snapshot(locked)
        locked.state, locked.attempts, locked.last_error = State.APPROVED, 0, ""
        locked.decided_by = actor.label
        locked.save(update_fields=["state", "attempts", "last_error", "decided_by"])
        audit_record(
            actor=actor,
            action=AuditAction.SUBJECT_REQUEST_APPROVE,
            obj=locked,
            before=before,
            after={**audit_snapshot(locked), "reason": reason},
        )
        request_id = locked.pk
        transaction.on_commit(lambda: execute_subject_request.delay(request_id))
    request.refresh_from_db()
    return request


def subject_request_reject(*, actor: Actor, request: SubjectRequest, reason: str) -> SubjectRequest:
    """Refuse a request with a reason, which the subject is told (GDPR Art. 12(4))."""
    reason = (reason or "").strip()
    if not reason:
        raise SubjectRequestError("a rejection needs a reason")
    with transaction.atomic():
        locked = _locked(request)
        if locked.state not in REJECTABLE_STATES:
            raise SubjectRequestError(f"a {locked.state} request cannot be rejected")
        before = audit_snapshot(locked)
        locked.state, locked.rejection_reason = State.REJECTED, reason
        locked.decided_by, locked.code_hash = actor.label, ""
        locked.save(update_fields=["state", "rejection_reason", "decided_by", "code_hash"])
        audit_record(
            actor=actor,
            action=AuditAction.SUBJECT_REQUEST_REJECT,
            obj=locked,
            before=before,
            after={**audit_snapshot(locked), "reason": reason},
        )
        if locked.verified_at:  # an unverified requester is not told anything about the subject
            notify_on_commit(
                locked,
                f"Your privacy request to {locked.tenant.name} was refused",
                f"Your {kind_phrase(locked)} request was refused for this reason:\n\n{reason}\n\n"
                "You may lodge a complaint with a supervisory authority.",
            )
    request.refresh_from_db()
    return request


def subject_request_extend(
    *, actor: Actor, request: SubjectRequest, reason: str, months: int = GDPR_MAX_EXTENSION_MONTHS
) -> SubjectRequest:
    """GDPR Art. 12(3): extend the one-month deadline once, by at most two further months,
    with a reason, before the first month has passed. CCPA requests are not extended here."""
    reason = (reason or "").strip()
    if not reason:
        raise SubjectRequestError("an extension needs a reason")
    if not 1 <= months <= GDPR_MAX_EXTENSION_MONTHS:
        raise SubjectRequestError(f"an extension is 1 to {GDPR_MAX_EXTENSION_MONTHS} months")
    with transaction.atomic():
        locked = _locked(request)
        if locked.law != Law.GDPR:
            raise SubjectRequestError("only GDPR requests can be extended")
        if locked.extended_due_at is not None:
            raise SubjectRequestError("a request can be extended only once")
        if locked.state not in OPEN_STATES:
            raise SubjectRequestError(f"a {locked.state} request cannot be extended")
        if locked.due_at is None or timezone.now() >= locked.due_at:
            raise SubjectRequestError("the extension must be decided before the deadline")
        before = audit_snapshot(locked)
        locked.extended_due_at = add_months(locked.due_at, months)
        locked.extension_reason = reason
        locked.save(update_fields=["extended_due_at", "extension_reason"])
        audit_record(
            actor=actor,
            action=AuditAction.SUBJECT_REQUEST_EXTEND,
            obj=locked,
            before=before,
            after={**audit_snapshot(locked), "reason": reason},
        )
        if locked.verified_at:
            notify_on_commit(
                locked,
                f"Your privacy request to {locked.tenant.name} needs more time",
                f"We need more time for your {kind_phrase(locked)} request. We will answer by "
                f"{locked.extended_due_at:%Y-%m-%d}. The reason:\n\n{reason}",
            )
    request.refresh_from_db()
    return request


def subject_requests_close_unverified(*, now: datetime | None = None) -> int:
    """Reject public requests whose code was never entered (GDPR Art. 12(2): the controller
    could not identify the requester). Returns how many were closed."""
    cutoff = (now or timezone.now()) - UNVERIFIED_GRACE
    closed = 0
    stale = SubjectRequest.objects.filter(state=State.RECEIVED, code_expires_at__lt=cutoff)
    for request in stale.only("pk"):
        with transaction.atomic():
            updated = SubjectRequest.objects.filter(
                pk=request.pk, state=State.RECEIVED, code_expires_at__lt=cutoff
            ).update(
                state=State.REJECTED,
                code_hash="",
                decided_by=SYSTEM.label,
                rejection_reason="identity was not verified in time",
            )
            if updated:
                closed += 1
                audit_record(
                    actor=SYSTEM,
                    action=AuditAction.SUBJECT_REQUEST_EXPIRE,
                    obj=SubjectRequest.objects.get(pk=request.pk),
                    after={"state": State.REJECTED},
                )
    return closed
