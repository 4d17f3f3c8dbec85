"""Data-subject requests (GDPR Art. 12, 15, 17, 20; CCPA): access (export), erasure, opt-out.

Life of a request::

    received --verify--> verified --approve--> approved --execute--> in_progress --> completed
        \\-------------------\\----------reject-----/                          \\--> failed
                                                                           (retried, resumed)

* Identity first: nothing is approved or executed before the request is ``verified`` (Fides
  advisory GHSA-qx5f-ghc2-7g5c). A request from the public page is verified by a one-time code
  sent to the email registered for the subject. A request that the tenant's app makes through
  the API, authenticated with the tenant's key, on behalf of one of its own users
  (``external_id``) counts as verified by the tenant: the tenant has authenticated its user and
  answers for that, as a controller does for its processor (the gateway).
* Deadlines are computed when the request is received: GDPR one calendar month (Art. 12(3)),
  extendable once by up to two further months with a recorded reason before the month ends;
  CCPA 45 days, acknowledged within 10 business days.
* Execution runs in a Celery task (``privacy.request_tasks``): the request is claimed with a
  conditional UPDATE, so a second run of the same task does nothing, and a run that crashed (a
  request left ``in_progress`` for ``LLMP_PRIVACY_STALL_MINUTES``) is claimed again by the
  periodic resume task. Erasure runs the data map and writes its receipt and the final state in
  one transaction, so a crash leaves either nothing done in the database or everything.
* Every step writes an audit row; audit rows, receipts, ``last_error`` and emails carry no
  personal data beyond what the subject must be told.
"""

from __future__ import annotations

import calendar
import csv
import io
import json
import secrets
import zipfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from django.conf import settings
from django.core import signing
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import F, Q
from django.db.models.functions import Coalesce
from django.urls import reverse
from django.utils import timezone
from django.utils.crypto import constant_time_compare, salted_hmac

from llmplatform import datamap
from llmplatform.audit import SYSTEM_ACTOR, audit_record
from llmplatform.models import Tenant
from privacy import crypto, services
from privacy.models import ConsentRecord, DataSubject, ErasureReceipt, SubjectRequest

State = SubjectRequest.State
Kind = SubjectRequest.Kind
Law = SubjectRequest.Law
Source = SubjectRequest.Source

CODE_DIGITS = 6
CODE_LIFETIME = timedelta(minutes=15)
MAX_CODE_ATTEMPTS = 5
# Automatic retries of a failed execution (each claim counts one); after that an officer
# approves it again.
MAX_EXECUTION_ATTEMPTS = 5
GDPR_MAX_EXTENSION_MONTHS = 2
CCPA_DAYS = 45
CCPA_ACKNOWLEDGE_BUSINESS_DAYS = 10
# A public request whose code was never entered is closed this long after the code expired.
UNVERIFIED_GRACE = timedelta(hours=24)

OPEN_STATES = (State.RECEIVED, State.VERIFIED, State.APPROVED, State.IN_PROGRESS, State.FAILED)
REJECTABLE_STATES = (State.RECEIVED, State.VERIFIED, State.APPROVED, State.FAILED)
APPROVABLE_STATES = (State.VERIFIED, State.FAILED)

PUBLIC_ID_SALT = "privacy.subject-request.public-id"
EXPORT_LINK_SALT = "privacy.subject-request.export-link"
EXPORT_FORMAT = "llmplatform.subject-export/1"


class SubjectRequestError(ValidationError):
    """A request cannot make the asked transition (wrong state, missing reason, ...)."""


# --- Deadlines ------------------------------------------------------------------------------


def add_months(moment: datetime, months: int) -> datetime:
    """The same day ``months`` calendar months later, or that month's last day if it is shorter
    (31 January + 1 month = 28/29 February), as EU Regulation 1182/71 counts a month."""
    index = moment.month - 1 + months
    year, month = moment.year + index // 12, index % 12 + 1
    return moment.replace(
        year=year, month=month, day=min(moment.day, calendar.monthrange(year, month)[1])
    )


def add_business_days(moment: datetime, days: int) -> datetime:
    """``days`` weekdays (Monday to Friday) later; public holidays are not counted out."""
    while days > 0:
        moment += timedelta(days=1)
        if moment.weekday() < 5:
            days -= 1
    return moment


def deadlines(law: str, received_at: datetime) -> tuple[datetime | None, datetime]:
    """(acknowledge_by, due_at) for a request received at ``received_at``."""
    if law == Law.CCPA:
        return (
            add_business_days(received_at, CCPA_ACKNOWLEDGE_BUSINESS_DAYS),
            received_at + timedelta(days=CCPA_DAYS),
        )
    return None, add_months(received_at, 1)


def effective_due(request: SubjectRequest) -> datetime | None:
    return request.extended_due_at or request.due_at


def effective_due_expression() -> Coalesce:
    """The effective due date in queries (admin filters and ordering)."""
    return Coalesce("extended_due_at", "due_at")


def is_overdue(request: SubjectRequest, *, now: datetime | None = None) -> bool:
    due = effective_due(request)
    return request.state in OPEN_STATES and due is not None and due < (now or timezone.now())


def overdue_q(now: datetime | None = None) -> Q:
    return Q(state__in=OPEN_STATES, effective_due__lt=now or timezone.now())


def due_soon_q(days: int = 7, now: datetime | None = None) -> Q:
    now = now or timezone.now()
    return Q(
        state__in=OPEN_STATES, effective_due__gte=now, effective_due__lt=now + timedelta(days=days)
    )


# --- Identifiers ----------------------------------------------------------------------------


def public_id(request: SubjectRequest) -> str:
    """The id in the subject's URLs: signed, so it cannot be guessed from the pk."""
    return signing.Signer(salt=PUBLIC_ID_SALT).sign_object(request.pk)


def request_for_public_id(value: str) -> SubjectRequest | None:
    try:
        pk = signing.Signer(salt=PUBLIC_ID_SALT).unsign_object(value)
    except signing.BadSignature:
        return None
    return SubjectRequest.objects.select_related("tenant", "subject").filter(pk=pk).first()


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


def subject_ref(tenant_id: int, external_id: str) -> str:
    """A keyed hash naming a subject in receipts without naming the person."""
    return salted_hmac(
        "privacy.subject-ref", f"{tenant_id}:{external_id}", algorithm="sha256"
    ).hexdigest()


def _code_hash(request: SubjectRequest, code: str) -> str:
    return salted_hmac(
        "privacy.subject-request.code", f"{request.pk}:{code}", algorithm="sha256"
    ).hexdigest()


def _snapshot(request: SubjectRequest) -> dict[str, Any]:
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


# --- Emails ---------------------------------------------------------------------------------


def _registered_email(subject: DataSubject | None) -> str | None:
    """The subject's contact address, decrypted, or None (none registered, or key destroyed)."""
    if subject is None or not subject.email_ciphertext:
        return None
    try:
        return crypto.decrypt(
            subject, bytes(subject.email_ciphertext), aad=crypto.record_aad(subject, "email")
        )
    except Exception:
        return None


def _notify(address: str | None, subject_line: str, body: str) -> bool:
    """Send one email to the subject. A failed send is not a failed request: the audit row says
    whether the subject was told."""
    if not address:
        return False
    try:
        send_mail(subject_line, body, settings.DEFAULT_FROM_EMAIL, [address])
    except Exception:
        return False
    return True


def _notify_on_commit(
    request: SubjectRequest, subject_line: str, body: str, address: str | None = None
) -> None:
    """Email after the transaction commits (never for a change that was rolled back); the
    address is read now, while the subject's key is sure to exist."""
    address = address or _registered_email(request.subject)
    if address:
        transaction.on_commit(lambda: _notify(address, subject_line, body))


def _kind_phrase(request: SubjectRequest) -> str:
    phrases: dict[str, str] = {
        Kind.ACCESS: "access (copy of your data)",
        Kind.ERASURE: "erasure",
        Kind.OPT_OUT: "opt-out of sale or sharing",
    }
    return phrases[request.kind]


# --- Creating and verifying -----------------------------------------------------------------


def subject_request_create(
    *,
    tenant: Tenant,
    kind: str,
    law: str,
    source: str,
    external_id: str | None = None,
    email: str | None = None,
    actor: Any,
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
            actor=actor, action="subject_request.create", obj=request, after=_snapshot(request)
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
    address = _registered_email(subject) if registered else None
    with transaction.atomic():
        request.code_hash = _code_hash(request, code)
        request.code_expires_at = timezone.now() + CODE_LIFETIME
        request.save(update_fields=["code_hash", "code_expires_at"])
        # The audit row does not say whether a code went out: that would tell who is registered
        # to anyone who can read the tenant's audit log, which the officers do not need.
        audit_record(
            actor=SYSTEM_ACTOR,
            action="subject_request.code_issued",
            obj=request,
            after={"expires_at": request.code_expires_at.isoformat()},
        )
    if not address:
        return False
    minutes = int(CODE_LIFETIME.total_seconds() // 60)
    return _notify(
        address,
        f"Your code for your privacy request to {request.tenant.name}",
        f"Your code is {code}. It expires in {minutes} minutes.\n\n"
        f"Enter it on the page where you made your {_kind_phrase(request)} request. "
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
            before = _snapshot(locked)
            locked.state, locked.verified_at, locked.code_hash = State.VERIFIED, now, ""
            locked.save(update_fields=["state", "verified_at", "code_hash"])
            audit_record(
                actor=SYSTEM_ACTOR,
                action="subject_request.verify",
                obj=locked,
                before=before,
                after=_snapshot(locked),
            )
            # The acknowledgement (CCPA: within 10 business days) with the date of the answer.
            _notify_on_commit(
                locked,
                f"Your privacy request to {locked.tenant.name} is confirmed",
                f"We confirmed your {_kind_phrase(locked)} request. "
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
                locked.decided_by = SYSTEM_ACTOR
                fields += ["state", "code_hash", "rejection_reason", "decided_by"]
                result = VerifyResult.LOCKED
            locked.save(update_fields=fields)
            audit_record(
                actor=SYSTEM_ACTOR,
                action="subject_request.verify_failed",
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
    *, actor: Any, request: SubjectRequest, reason: str = ""
) -> SubjectRequest:
    """Approve a verified request (or approve a failed one again) and enqueue its execution."""
    from privacy.request_tasks import execute_subject_request

    with transaction.atomic():
        locked = _locked(request)
        if locked.state not in APPROVABLE_STATES:
            raise SubjectRequestError(
                f"only a verified (or failed) request can be approved, not a {locked.state} one"
            )
        before = _snapshot(locked)
        locked.state, locked.attempts, locked.last_error = State.APPROVED, 0, ""
        locked.decided_by = audit_actor(actor)
        locked.save(update_fields=["state", "attempts", "last_error", "decided_by"])
        audit_record(
            actor=actor,
            action="subject_request.approve",
            obj=locked,
            before=before,
            after={**_snapshot(locked), "reason": reason},
        )
        request_id = locked.pk
        transaction.on_commit(lambda: execute_subject_request.delay(request_id))
    request.refresh_from_db()
    return request


def subject_request_reject(*, actor: Any, request: SubjectRequest, reason: str) -> SubjectRequest:
    """Refuse a request with a reason, which the subject is told (GDPR Art. 12(4))."""
    reason = (reason or "").strip()
    if not reason:
        raise SubjectRequestError("a rejection needs a reason")
    with transaction.atomic():
        locked = _locked(request)
        if locked.state not in REJECTABLE_STATES:
            raise SubjectRequestError(f"a {locked.state} request cannot be rejected")
        before = _snapshot(locked)
        locked.state, locked.rejection_reason = State.REJECTED, reason
        locked.decided_by, locked.code_hash = audit_actor(actor), ""
        locked.save(update_fields=["state", "rejection_reason", "decided_by", "code_hash"])
        audit_record(
            actor=actor,
            action="subject_request.reject",
            obj=locked,
            before=before,
            after={**_snapshot(locked), "reason": reason},
        )
        if locked.verified_at:  # an unverified requester is not told anything about the subject
            _notify_on_commit(
                locked,
                f"Your privacy request to {locked.tenant.name} was refused",
                f"Your {_kind_phrase(locked)} request was refused for this reason:\n\n{reason}\n\n"
                "You may lodge a complaint with a supervisory authority.",
            )
    request.refresh_from_db()
    return request


def subject_request_extend(
    *, actor: Any, request: SubjectRequest, reason: str, months: int = GDPR_MAX_EXTENSION_MONTHS
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
        before = _snapshot(locked)
        locked.extended_due_at = add_months(locked.due_at, months)
        locked.extension_reason = reason
        locked.save(update_fields=["extended_due_at", "extension_reason"])
        audit_record(
            actor=actor,
            action="subject_request.extend",
            obj=locked,
            before=before,
            after={**_snapshot(locked), "reason": reason},
        )
        if locked.verified_at:
            _notify_on_commit(
                locked,
                f"Your privacy request to {locked.tenant.name} needs more time",
                f"We need more time for your {_kind_phrase(locked)} request. We will answer by "
                f"{locked.extended_due_at:%Y-%m-%d}. The reason:\n\n{reason}",
            )
    request.refresh_from_db()
    return request


def audit_actor(actor: Any) -> str:
    from llmplatform.audit import actor_label

    return actor_label(actor)[:200]


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
                decided_by=SYSTEM_ACTOR,
                rejection_reason="identity was not verified in time",
            )
            if updated:
                closed += 1
                audit_record(
                    actor=SYSTEM_ACTOR,
                    action="subject_request.expire",
                    obj=SubjectRequest.objects.get(pk=request.pk),
                    after={"state": State.REJECTED},
                )
    return closed


# --- Execution ------------------------------------------------------------------------------


def _claimable(now: datetime) -> Q:
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
        SubjectRequest.objects.filter(_claimable(now or timezone.now()))
        .order_by("pk")
        .values_list("pk", flat=True)[:limit]
    )


@dataclass(frozen=True, slots=True)
class ExecutionOutcome:
    ran: bool
    state: str


def subject_request_execute(request_id: int) -> ExecutionOutcome:
    """Run an approved request. Claims it with a conditional UPDATE (approved, failed with
    retries left, or stalled in progress -> in_progress); if another run holds it or it is done,
    returns without doing anything."""
    now = timezone.now()
    claimed = (
        SubjectRequest.objects.filter(pk=request_id)
        .filter(_claimable(now))
        .update(state=State.IN_PROGRESS, started_at=now, attempts=F("attempts") + 1, last_error="")
    )
    request = SubjectRequest.objects.select_related("tenant", "subject").get(pk=request_id)
    if not claimed:
        return ExecutionOutcome(ran=False, state=request.state)
    audit_record(
        actor=SYSTEM_ACTOR, action="subject_request.start", obj=request, after=_snapshot(request)
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
                actor=SYSTEM_ACTOR,
                action="subject_request.fail",
                obj=request,
                after={**_snapshot(request), "error": error},
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
        actor=SYSTEM_ACTOR,
        action="subject_request.complete",
        obj=request,
        after={**_snapshot(request), **(after or {})},
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
    address = _registered_email(subject)
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
        _notify_on_commit(
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
            actor=SYSTEM_ACTOR,
            subject=subject,
            purpose=ConsentRecord.Purpose.SALE_SHARING,
            granted=False,
            source=_consent_source(request),
        )
        _complete(request, after={"do_not_sell": True})
        _notify_on_commit(
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


# --- Access: the export ---------------------------------------------------------------------


def export_aad(request: SubjectRequest) -> bytes:
    """Binds an export's ciphertext to its subject and request, so it cannot be served for
    another."""
    assert request.subject is not None
    return crypto.record_aad(request.subject, f"export:{request.pk}")


def build_export(request: SubjectRequest) -> dict[str, Any]:
    subject = request.subject
    assert subject is not None
    requests = [
        {"kind": r.kind, "law": r.law, "state": r.state, "received_at": r.received_at.isoformat()}
        for r in subject.requests.order_by("received_at", "id")
    ]
    return {
        "format": EXPORT_FORMAT,
        "generated_at": timezone.now().isoformat(),
        "controller": {"tenant": request.tenant.slug, "name": request.tenant.name},
        "user": subject.external_id,
        "requests": requests,
        # Every holder in the data map: the subject's record (contact email, opt-out, consent
        # history), the stored conversations, and what each other holder reports.
        "data": datamap.find_all(subject.tenant_id, subject.external_id),
    }


# A cell a spreadsheet would read as a formula (OWASP's CSV injection list): prompts are the
# subject's own text, and a subject's export is opened in a spreadsheet by someone.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def _cell(value: Any) -> Any:
    """``value`` as a spreadsheet shows it as text: a string that would start a formula gets a
    leading apostrophe (numbers stay numbers)."""
    if isinstance(value, str) and value.lstrip(" ").startswith(_FORMULA_START):
        return "'" + value
    return value


def export_csv(document: dict[str, Any]) -> str:
    """The export flattened into rows of (section, field, value): JSON paths as field names,
    so a spreadsheet shows every value the JSON holds."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["section", "field", "value"])

    def walk(section: str, prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(section, f"{prefix}.{key}" if prefix else str(key), item)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(section, f"{prefix}[{index}]", item)
        else:
            writer.writerow([_cell(section), _cell(prefix), _cell("" if value is None else value)])

    for section, value in document.items():
        walk(section, "", value)
    return out.getvalue()


def export_zip(document: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("export.json", json.dumps(document, indent=2, default=str))
        archive.writestr("export.csv", export_csv(document))
    return buffer.getvalue()


def export_token(request: SubjectRequest) -> str:
    return signing.TimestampSigner(salt=EXPORT_LINK_SALT).sign_object({"r": request.pk})


def export_url(request: SubjectRequest) -> str:
    path = reverse("privacy:export-download", args=[export_token(request)])
    return f"{settings.LLMP_PUBLIC_BASE_URL}{path}"


def export_link_lifetime() -> timedelta:
    return timedelta(days=settings.LLMP_PRIVACY_EXPORT_LINK_DAYS)


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
        _notify_on_commit(
            request,
            f"Your data from {request.tenant.name} is ready",
            f"Download a copy of your data (JSON and CSV in a zip file) here:\n\n"
            f"{export_url(request)}\n\nThe link works once, for {days} days.",
        )


class ExportUnavailable(Exception):
    """The link is bad, expired or used; ``reason`` says which, for the page."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _export_payload(token: str) -> int:
    try:
        payload = signing.TimestampSigner(salt=EXPORT_LINK_SALT).unsign_object(
            token, max_age=export_link_lifetime()
        )
    except signing.SignatureExpired:
        raise ExportUnavailable("expired") from None
    except signing.BadSignature:
        raise ExportUnavailable("invalid") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("r"), int):
        raise ExportUnavailable("invalid")
    return payload["r"]


def _check_export(request: SubjectRequest | None) -> SubjectRequest:
    if request is None or request.kind != Kind.ACCESS or request.state != State.COMPLETED:
        raise ExportUnavailable("invalid")
    if request.export_downloaded_at is not None or not request.export_ciphertext:
        raise ExportUnavailable("used")
    return request


def export_link_check(token: str) -> SubjectRequest:
    """The request an export link is for, without using the link up. Raises ExportUnavailable
    for a bad, expired or used link."""
    pk = _export_payload(token)
    return _check_export(SubjectRequest.objects.select_related("tenant").filter(pk=pk).first())


def subject_request_export_download(*, token: str) -> tuple[SubjectRequest, dict[str, Any]]:
    """Redeem an export link once: decrypt the export, delete it from the database and return
    the request and the document. Raises ExportUnavailable for a bad, expired or used link."""
    pk = _export_payload(token)
    with transaction.atomic():
        request = _check_export(
            SubjectRequest.objects.select_for_update(of=("self",))
            .select_related("tenant", "subject")
            .filter(pk=pk)
            .first()
        )
        try:
            # _check_export refused a request without an export, and a completed access request
            # has a subject; were either missing, this fails as an unreadable export.
            assert request.subject is not None and request.export_ciphertext is not None
            plaintext = crypto.decrypt(
                request.subject, bytes(request.export_ciphertext), aad=export_aad(request)
            )
        except Exception:
            raise ExportUnavailable("unreadable") from None
        # The conditional UPDATE makes two simultaneous clicks serve it once.
        served = SubjectRequest.objects.filter(
            pk=request.pk, export_downloaded_at__isnull=True
        ).update(export_downloaded_at=timezone.now(), export_ciphertext=None)
        if served != 1:
            raise ExportUnavailable("used")
        audit_record(
            actor=SYSTEM_ACTOR,
            action="subject_request.export_download",
            obj=request,
            after={"downloaded": True},
        )
    return request, json.loads(plaintext)


def subject_request_exports_expire(*, now: datetime | None = None) -> int:
    """Delete exports whose link has expired unused; returns how many."""
    cutoff = (now or timezone.now()) - export_link_lifetime()
    expired = 0
    stale = SubjectRequest.objects.filter(
        kind=Kind.ACCESS, export_ciphertext__isnull=False, completed_at__lt=cutoff
    )
    for pk in stale.values_list("pk", flat=True):
        with transaction.atomic():
            if SubjectRequest.objects.filter(pk=pk, export_ciphertext__isnull=False).update(
                export_ciphertext=None
            ):
                expired += 1
                audit_record(
                    actor=SYSTEM_ACTOR,
                    action="subject_request.export_expire",
                    obj=SubjectRequest.objects.get(pk=pk),
                    after={"deleted": True},
                )
    return expired
