"""Writes of privacy data: subjects, consent, stored conversations, the retention purge."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from django.core.exceptions import PermissionDenied, ValidationError
from django.core.validators import validate_email
from django.db import connection, transaction
from django.utils import timezone

from llmplatform.actors import Actor
from llmplatform.audit import AuditAction, audit_record
from llmplatform.errors import Conflict, InvalidInput
from llmplatform.models import Tenant
from privacy import crypto, selectors, signals
from privacy.models import (
    ConsentRecord,
    Conversation,
    DataSubject,
    PrivacyPolicy,
    PurgeRun,
)
from privacy.pii import DetectorError, redact

logger = logging.getLogger(__name__)

Purpose = ConsentRecord.Purpose
Source = ConsentRecord.Source

_external_id_max_length = DataSubject._meta.get_field("external_id").max_length
assert _external_id_max_length is not None  # external_id is a CharField: it has a max_length
MAX_EXTERNAL_ID: int = _external_id_max_length
PLAINTEXT_PERMISSION = "privacy.read_conversation_plaintext"
# A browser's Sec-GPC: 1 header, honoured as the subject's opt-out.
GPC_ACTOR = Actor.system("gpc-signal")


# --------------------------------------------------------------------------- subjects


def check_external_id(external_id: str) -> str:
    if not isinstance(external_id, str) or not external_id.strip():
        raise InvalidInput("the subject's user id must be a non-empty string", param="user")
    if len(external_id) > MAX_EXTERNAL_ID:
        raise InvalidInput(
            f"the subject's user id must be at most {MAX_EXTERNAL_ID} characters", param="user"
        )
    return external_id


def privacy_policy_get_or_create(*, tenant: Tenant) -> PrivacyPolicy:
    policy, _ = PrivacyPolicy.objects.get_or_create(tenant=tenant)
    return policy


def subject_get_or_create(*, tenant: Tenant, external_id: str) -> DataSubject:
    """The tenant's data subject ``external_id`` (the apps' ``user`` value). Holds no personal
    data beyond that id, so it is not audited."""
    check_external_id(external_id)
    subject, _ = DataSubject.objects.select_related("tenant").get_or_create(
        tenant=tenant, external_id=external_id
    )
    return subject


def subject_register_email(
    *, actor: Actor, tenant: Tenant, external_id: str, email: str
) -> DataSubject:
    """Record the subject's contact email (encrypted with their data key, plus a keyed hash to
    find them by it), so they can later prove who they are on the public request page."""
    if not isinstance(email, str):
        raise InvalidInput("email must be a string", param="email")
    email = email.strip()
    try:
        validate_email(email)
    except ValidationError:
        raise InvalidInput("email is not a valid address", param="email") from None
    subject = subject_get_or_create(tenant=tenant, external_id=external_id)
    # Encrypted before the transaction: making the data key may call KMS.
    ciphertext = crypto.encrypt(subject, email, aad=crypto.record_aad(subject, "email"))
    with transaction.atomic():
        subject = (
            DataSubject.objects.select_for_update().select_related("tenant").get(pk=subject.pk)
        )
        before = {"email_registered": subject.email_ciphertext is not None}
        subject.email_ciphertext = ciphertext
        subject.email_hmac = crypto.hmac_email(email)
        subject.save(update_fields=["email_ciphertext", "email_hmac"])
        # Never the address itself.
        audit_record(
            actor=actor,
            action=AuditAction.PRIVACY_SUBJECT_REGISTER_EMAIL,
            obj=subject,
            before=before,
            after={"email_registered": True},
        )
    return subject


def subject_erase(*, actor: Actor, subject: DataSubject) -> int:
    """Erase a subject (GDPR Art. 17): delete their stored conversations, destroy their data key
    (crypto-shredding: anything still encrypted with it, backups and exports included, becomes
    unreadable), wipe the contact email and its hash, and retire the subject's id.

    Kept: the consent history, as proof that past processing had consent (Art. 7(1), 17(3)(e)).
    It holds no content, only purposes, times, policy versions and sources, and the subject row
    is re-keyed from the app's user id to a keyed hash of it, so the history is linked to the
    person only by someone who holds both the id and the server's key. The same user id used
    again afterwards is a new subject with no consent. Returns 1 if erased now, 0 if already.
    """
    with transaction.atomic():
        subject = (
            DataSubject.objects.select_for_update().select_related("tenant").get(pk=subject.pk)
        )
        if subject.erased_at is not None:
            return 0
        deleted, _ = Conversation.objects.filter(subject=subject).delete()
        crypto.subject_key_destroy(subject, actor=actor)
        before = {
            "email_registered": subject.email_ciphertext is not None,
            "do_not_sell": subject.do_not_sell,
            "conversations": deleted,
        }
        hashed = crypto.subject_hmac(subject.external_id, purpose="external_id")
        subject.external_id = f"erased:{hashed}:{subject.pk}"
        subject.email_ciphertext = None
        subject.email_hmac = ""
        subject.erased_at = timezone.now()
        subject.save(update_fields=["external_id", "email_ciphertext", "email_hmac", "erased_at"])
        audit_record(
            actor=actor,
            action=AuditAction.PRIVACY_SUBJECT_ERASE,
            obj=subject,
            before=before,
            after={
                "erased_at": subject.erased_at.isoformat(),
                "consent_history_kept": subject.consents.count(),
            },
        )
        signals.subject_erased.send(
            sender=DataSubject,
            tenant_id=subject.tenant_id,
            subject_hash=hashed,
            erased_at=subject.erased_at,
        )
    return 1


# --------------------------------------------------------------------------- consent


def consent_set(
    *,
    actor: Actor,
    subject: DataSubject,
    purpose: str,
    granted: bool,
    source: str,
    policy_version: str | None = None,
    request_id: str = "",
) -> ConsentRecord:
    """Append a consent decision (granting and withdrawing are the same call). Withdrawing
    ``sale_sharing`` is the CCPA opt-out and sets ``do_not_sell``; granting it clears it."""
    if purpose not in Purpose.values:
        raise InvalidInput(
            f"unknown purpose {purpose!r}; one of {', '.join(Purpose.values)}", param="purpose"
        )
    if not isinstance(granted, bool):
        raise InvalidInput("granted must be true or false", param="granted")
    if source not in Source.values:
        raise InvalidInput(f"unknown source {source!r}", param="source")
    if subject.erased_at is not None:
        raise Conflict("the subject was erased")
    if policy_version is None:
        policy_version = selectors.privacy_policy_for(subject.tenant_id).policy_version
    if not isinstance(policy_version, str) or not 0 < len(policy_version) <= 32:
        raise InvalidInput(
            "policy_version must be a string of 1 to 32 characters", param="policy_version"
        )
    with transaction.atomic():
        previous = selectors.consent_latest(subject, purpose)
        record = ConsentRecord.objects.create(
            subject=subject,
            purpose=purpose,
            granted=granted,
            policy_version=policy_version,
            source=source,
            actor=actor.label,
            request_id=request_id[:128],
        )
        if purpose == Purpose.SALE_SHARING and subject.do_not_sell == granted:
            subject.do_not_sell = not granted
            DataSubject.objects.filter(pk=subject.pk).update(do_not_sell=subject.do_not_sell)
        audit_record(
            actor=actor,
            action=(
                AuditAction.PRIVACY_CONSENT_GRANT
                if granted
                else AuditAction.PRIVACY_CONSENT_WITHDRAW
            ),
            obj=record,
            tenant=subject.tenant,
            object_repr=f"{purpose} of {subject}",
            before={"granted": previous.granted if previous else None},
            after={
                "purpose": purpose,
                "granted": granted,
                "policy_version": policy_version,
                "source": source,
            },
        )
    return record


def consent_apply_gpc(*, subject: DataSubject, request_id: str = "") -> ConsentRecord | None:
    """Honour a ``Sec-GPC: 1`` signal as the CCPA opt-out of sale and sharing. Recorded once:
    nothing is written when the subject has already opted out."""
    if subject.do_not_sell:
        return None
    return consent_set(
        actor=GPC_ACTOR,
        subject=subject,
        purpose=Purpose.SALE_SHARING,
        granted=False,
        source=Source.GPC,
        request_id=request_id,
    )


# --------------------------------------------------------------------------- conversations


def _storage_allowed(policy: PrivacyPolicy, subject: DataSubject | None) -> bool:
    return (
        policy.store_conversations
        and subject is not None
        and subject.erased_at is None
        # The brief treats any opt-out as a reason not to keep content.
        and not subject.do_not_sell
        and selectors.consent_current(subject, Purpose.STORE_CONVERSATIONS)
    )


def conversation_store(
    *,
    tenant: Tenant,
    external_id: str,
    alias: str,
    request_id: str,
    prompt: str,
    response: str,
    gpc: bool = False,
) -> Conversation | None:
    """Keep one exchange if, at this moment, the tenant's policy stores conversations and the
    subject's current ``store_conversations`` consent is a grant (no record is no consent) and
    they have not opted out (CCPA, or ``gpc``, the request's ``Sec-GPC: 1``). Otherwise nothing
    about its content is kept and None is returned.

    Prompt and response are always redacted (``privacy.pii.redact``) before they are encrypted
    with the subject's data key. If the detector fails, nothing is stored and
    ``DetectorError`` is raised (fail closed)."""
    if not external_id:
        return None
    policy = privacy_policy_get_or_create(tenant=tenant)
    if gpc:
        consent_apply_gpc(
            subject=subject_get_or_create(tenant=tenant, external_id=external_id),
            request_id=request_id,
        )
        return None
    subject = selectors.subject_for(tenant.pk, external_id)
    if subject is None or not _storage_allowed(policy, subject):
        return None
    try:
        prompt_redacted = redact(prompt)
        response_redacted = redact(response)
    except DetectorError as exc:
        # The message never contains the text; logged without it.
        logger.error(
            "conversation not stored: PII detector failed (%s)",
            exc,
            extra={"tenant_id": tenant.pk, "request_id": request_id},
        )
        raise
    prompt_ciphertext = crypto.encrypt(
        subject, prompt_redacted, aad=crypto.record_aad(subject, "prompt")
    )
    response_ciphertext = crypto.encrypt(
        subject, response_redacted, aad=crypto.record_aad(subject, "response")
    )
    now = timezone.now()
    # Not audited: storing is the ordinary, consented processing, one row per request; reads of
    # the plaintext are what the audit log records.
    return Conversation.objects.create(
        tenant=tenant,
        subject=subject,
        alias=alias[:64],
        request_id=request_id[:128],
        prompt_ciphertext=prompt_ciphertext,
        response_ciphertext=response_ciphertext,
        key_id=crypto.ciphertext_key_id(prompt_ciphertext),
        expires_at=now + timedelta(days=policy.retention_days),
    )


def conversation_decrypt(conversation: Conversation) -> dict[str, str]:
    """The redacted prompt and response. For exports and for ``conversation_read_plaintext``;
    anything shown to a person goes through the latter (permission check and audit)."""
    subject = conversation.subject
    return {
        "prompt": crypto.decrypt(
            subject, conversation.prompt_ciphertext, aad=crypto.record_aad(subject, "prompt")
        ),
        "response": crypto.decrypt(
            subject, conversation.response_ciphertext, aad=crypto.record_aad(subject, "response")
        ),
    }


def conversation_read_plaintext(*, actor: Actor, conversation: Conversation) -> dict[str, str]:
    """The record's (redacted) prompt and response, for a person allowed to read them: needs
    the ``privacy.read_conversation_plaintext`` permission; every read is audited."""
    if not actor.has_perm(PLAINTEXT_PERMISSION):
        raise PermissionDenied(
            f"reading conversation plaintext needs the {PLAINTEXT_PERMISSION} permission"
        )
    with transaction.atomic():
        plaintext = conversation_decrypt(conversation)
        audit_record(
            actor=actor,
            action=AuditAction.PRIVACY_CONVERSATION_READ_PLAINTEXT,
            obj=conversation,
            tenant=conversation.tenant,
            after={"subject_id": conversation.subject_id, "request_id": conversation.request_id},
        )
    return plaintext


# --------------------------------------------------------------------------- retention

# pg_try_advisory_lock key: "llmp" + "purg", so concurrent purges (two beat schedulers, a slow
# run overlapping the next) never work on the same rows; the loser returns at once.
PURGE_LOCK_KEY = 0x6C6C6D70_70757267


def _is_postgres() -> bool:
    return connection.vendor == "postgresql"


def _delete_batch_postgres(
    now: datetime, floor: datetime, batch_size: int
) -> tuple[int, datetime | None]:
    table = connection.ops.quote_name(Conversation._meta.db_table)
    # Walks the expires_at index from where the last batch stopped (``floor``), so each batch
    # reads only its own rows, not the dead index entries of earlier batches. Those cannot be
    # skipped while another transaction's snapshot still sees them (a long report, a lagging
    # replica): bench/purge.py --hold-snapshot measured 1M rows in 5.2 s this way, 28.7 s
    # without the floor (batches slowing from 0.03 s to 0.3 s).
    # The table name is quoted by the connection; every value is a parameter.
    sql = (
        f"WITH gone AS (DELETE FROM {table} WHERE id IN ("  # noqa: S608
        f"  SELECT id FROM {table} WHERE expires_at < %s AND expires_at >= %s"
        f"  ORDER BY expires_at LIMIT %s)"
        f" RETURNING expires_at) "
        f"SELECT count(*), max(expires_at) FROM gone"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [now, floor, batch_size])
        count, newest = cursor.fetchone()
    return count, newest


def _delete_batch_generic(
    now: datetime, floor: datetime, batch_size: int
) -> tuple[int, datetime | None]:
    rows = list(
        Conversation.objects.filter(expires_at__lt=now, expires_at__gte=floor)
        .order_by("expires_at")
        .values_list("id", "expires_at")[:batch_size]
    )
    if not rows:
        return 0, None
    Conversation.objects.filter(id__in=[pk for pk, _ in rows]).delete()
    return len(rows), max(expires for _, expires in rows)


def purge_expired_conversations(
    *,
    batch_size: int | None = None,
    on_batch: Callable[[int, float], None] | None = None,
) -> PurgeRun | None:
    """Delete conversation records whose ``expires_at`` has passed, ``batch_size`` rows per
    short transaction (no long table or row locks), and record the run as a ``PurgeRun``.
    Idempotent (a second run finds nothing), and on PostgreSQL one run at a time: a run that
    finds another one holding the advisory lock returns None. ``on_batch(deleted, seconds)``
    is called after each batch (for the benchmark)."""
    from django.conf import settings

    batch_size = batch_size or settings.LLMP_PURGE_BATCH_SIZE
    postgres = _is_postgres()
    if postgres:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [PURGE_LOCK_KEY])
            if not cursor.fetchone()[0]:
                logger.info("purge skipped: another purge is running")
                return None
    try:
        return _purge(batch_size, on_batch, postgres)
    finally:
        if postgres:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [PURGE_LOCK_KEY])


def _purge(
    batch_size: int, on_batch: Callable[[int, float], None] | None, postgres: bool
) -> PurgeRun:
    delete_batch = _delete_batch_postgres if postgres else _delete_batch_generic
    run = PurgeRun.objects.create()
    now = timezone.now()
    floor = now - timedelta(days=365 * 200)
    try:
        while True:
            started = time.monotonic()
            with transaction.atomic():
                deleted, newest = delete_batch(now, floor, batch_size)
                if deleted:
                    run.deleted += deleted
                    run.batches += 1
                    PurgeRun.objects.filter(pk=run.pk).update(
                        deleted=run.deleted, batches=run.batches
                    )
            if on_batch is not None and deleted:
                on_batch(deleted, time.monotonic() - started)
            if deleted < batch_size:
                break
            assert newest is not None  # a full batch deleted rows, so it has a newest one
            floor = newest
    except Exception as exc:
        # Database errors name no conversation content (the rows are ciphertext anyway).
        run.error = f"{type(exc).__name__}: {exc}"[:1000]
        run.finished_at = timezone.now()
        run.save(update_fields=["error", "finished_at"])
        raise
    run.finished_at = timezone.now()
    run.save(update_fields=["finished_at", "deleted", "batches"])
    logger.info("purge finished", extra={"deleted": run.deleted, "batches": run.batches})
    return run
