"""The live checks this app answers, registered in ``deployments.evidence`` when Django starts
(``ComplianceConfig.ready``). Each reads the running system (settings, the database and its
catalog) and says in one line what it found; ``details`` holds the figures behind it.

The backups app registers ``backups.within_rpo`` and ``backups.restore_drill_recent`` itself.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.db import DatabaseError, connection, transaction
from django.db.models import Count
from django.utils import timezone

from deployments.evidence import Evidence, register

ENCRYPTION = "privacy.conversation_encryption"
AUDIT_LOG = "audit.append_only_recent"
RETENTION_PURGE = "privacy.retention_purge_recent"
SUBJECT_REQUESTS = "privacy.subject_requests_on_time"
STAFF_SECOND_FACTOR = "auth.staff_second_factor"
TLS_REQUIRED = "security.tls_required"
BACKUPS_WITHIN_RPO = "backups.within_rpo"
RESTORE_DRILL_RECENT = "backups.restore_drill_recent"

#: Audit actions of the compliance checks themselves: a re-check does not prove that the rest
#: of the platform writes its audit trail.
OWN_AUDIT_PREFIX = "compliance.evidence"
#: The purge runs hourly; a record may wait for up to an hour past its expiry before it goes.
PURGE_GRACE = timedelta(hours=2)
#: Stored records whose ciphertext format is verified on each run (the newest ones).
ENCRYPTION_SAMPLE = 100


def utc(moment: datetime | None) -> str:
    if moment is None:
        return "never"
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


def _sentence(parts: list[str], tail: str = "") -> str:
    """Problems joined into one sentence, its first letter upper case."""
    text = "; ".join(parts) + tail
    return text[:1].upper() + text[1:] + "."


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


# --- Encryption ---------------------------------------------------------------------------------


def generated_development_key() -> bytes | None:
    """The master key the embedded mode generated into ``LLMP_DATA_DIR/master_key`` (used when
    ``LLMP_MASTER_KEY`` is not given), if there is one."""
    try:
        return base64.b64decode(
            (settings.DATA_DIR / "master_key").read_text().strip(), validate=True
        )
    except (OSError, binascii.Error, ValueError):
        return None


def development_key_reason(key: bytes) -> str | None:
    """Why ``key`` (a local master key) is a development key, or None: it is the generated
    embedded-mode key, or an obviously weak one."""
    if key == generated_development_key():
        return (
            f"the master key is the development key generated into "
            f"{settings.DATA_DIR / 'master_key'} (give LLMP_MASTER_KEY or "
            "LLMP_MASTER_KEY_FILE)"
        )
    if len(set(key)) < 16:
        return f"the master key is weak ({len(set(key))} distinct bytes of 32)"
    return None


@register(ENCRYPTION, "Conversation encryption on; master key not a development key")
def conversation_encryption() -> Evidence:
    from privacy import crypto
    from privacy.models import Conversation, SubjectKey

    problems: list[str] = []
    details: dict[str, Any] = {"key_provider": settings.LLMP_KEY_PROVIDER}
    readable: set[str] = set()  # local master key ids configured here
    generated = generated_development_key()
    development_ids = {crypto.local_key_id(generated)} if generated else set()
    if settings.LLMP_KEY_PROVIDER == "local":
        if not settings.LLMP_MASTER_KEY:
            return Evidence(False, "No master key: LLMP_MASTER_KEY is not set.", details)
        key = base64.b64decode(settings.LLMP_MASTER_KEY)
        current = crypto.local_key_id(key)
        readable = {current} | {
            crypto.local_key_id(base64.b64decode(v)) for v in settings.LLMP_MASTER_KEYS_PREVIOUS
        }
        details["master_key_id"] = current
        reason = development_key_reason(key)
        if reason:
            problems.append(reason)
            development_ids.add(current)
        key_label = f"local master key {current}"
    else:
        key_label = f"KMS key {settings.LLMP_KMS_KEY_ID}"
        details["kms_key_id"] = settings.LLMP_KMS_KEY_ID
        if settings.LLMP_MASTER_KEY:
            readable = {crypto.local_key_id(base64.b64decode(settings.LLMP_MASTER_KEY))}

    # Encryption works: the configured provider makes a data key and unwraps it again.
    context = {"purpose": "llmp-compliance-self-test"}
    try:
        provider = crypto.current_provider()
        plaintext, wrapped, master_key_id = provider.generate_data_key(context)
        if provider.unwrap(wrapped, master_key_id, context) != plaintext:
            problems.append("a data key did not survive wrapping and unwrapping")
        details["self_test_master_key"] = master_key_id
    except crypto.CryptoError as exc:
        problems.append(f"the key provider cannot wrap a data key ({exc})")

    # Every live data key is wrapped by a master key that is configured (else its records are
    # unreadable), and none by the development key.
    by_master = dict(
        SubjectKey.objects.filter(destroyed_at__isnull=True)
        .values("master_key_id")
        .annotate(n=Count("id"))
        .values_list("master_key_id", "n")
    )
    details["data_keys_by_master_key"] = by_master
    data_keys = sum(by_master.values())
    unreadable = sum(
        n for mk, n in by_master.items() if mk.startswith("local:") and mk not in readable
    )
    if unreadable:
        problems.append(
            f"{_plural(unreadable, 'data key')} wrapped by a master key that is not configured"
        )
    on_development = sum(n for mk, n in by_master.items() if mk in development_ids)
    if on_development:
        problems.append(
            f"{_plural(on_development, 'data key')} wrapped by the development key "
            "(rotate_master_key)"
        )

    # The stored records are ciphertext in the platform's format, made with a subject's key.
    sample = list(
        Conversation.objects.order_by("-id").values_list(
            "prompt_ciphertext", "response_ciphertext", "key_id"
        )[:ENCRYPTION_SAMPLE]
    )
    not_encrypted = 0
    for prompt, response, key_id in sample:
        try:
            if not (
                crypto.ciphertext_key_id(prompt) == key_id
                and crypto.ciphertext_key_id(response) == key_id
            ):
                not_encrypted += 1
        except crypto.CryptoError:
            not_encrypted += 1
    details.update(records_sampled=len(sample), records_not_encrypted=not_encrypted)
    if not_encrypted:
        problems.append(
            f"{not_encrypted} of the newest {len(sample)} conversation records "
            "are not in the encrypted format"
        )

    if problems:
        return Evidence(False, _sentence(problems), details)
    return Evidence(
        True,
        f"{key_label} (AES-256-GCM envelope) wraps and unwraps; "
        f"{_plural(data_keys, 'data key')} all wrapped by configured keys; "
        f"the newest {_plural(len(sample), 'record')} encrypted.",
        details,
    )


# --- Audit log ----------------------------------------------------------------------------------


class _ProbeAccepted(Exception):
    """Raised to roll back a probe UPDATE that the database accepted."""


def _trigger_guards(vendor: str, table: str) -> tuple[bool, str, dict[str, Any]]:
    """(guards UPDATE and DELETE, what holds in words, catalog rows) from the database catalog."""
    with connection.cursor() as cursor:
        if vendor == "postgresql":
            cursor.execute(
                "SELECT t.tgname, t.tgenabled, t.tgtype, p.proname FROM pg_trigger t "
                "JOIN pg_proc p ON p.oid = t.tgfoid "
                "WHERE t.tgrelid = %s::regclass AND NOT t.tgisinternal",
                [table],
            )
            rows = cursor.fetchall()
            catalog = {
                "triggers": [
                    {"name": name, "enabled": str(enabled), "tgtype": tgtype, "function": func}
                    for name, enabled, tgtype, func in rows
                ]
            }
            # tgtype bits: ROW 1, BEFORE 2, DELETE 8, UPDATE 16. 'O' and 'A' fire in normal
            # sessions; 'D' is disabled and 'R' fires only on replicas.
            guard = [
                name
                for name, enabled, tgtype, _ in rows
                if str(enabled) in {"O", "A"}
                and tgtype & 1
                and tgtype & 2
                and tgtype & 8
                and tgtype & 16
            ]
            if guard:
                return True, f"trigger {guard[0]} refuses UPDATE and DELETE", catalog
            return False, "no enabled trigger refuses UPDATE and DELETE (pg_trigger)", catalog
        if vendor == "sqlite":
            cursor.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = %s",
                [table],
            )
            rows = cursor.fetchall()
            catalog = {"triggers": [name for name, _ in rows]}
            guard = [name for name, sql in rows if "BEFORE UPDATE" in (sql or "").upper()]
            if not guard:
                return False, "no trigger refuses UPDATE (sqlite_master)", catalog
            return (
                True,
                (
                    f"SQLite: trigger {guard[0]} refuses UPDATE; DELETE is refused by the "
                    "application only"
                ),
                catalog,
            )
    return False, f"no append-only guard is known for {vendor}", {}


@register(AUDIT_LOG, "Audit log append-only and written in the last 24 h")
def audit_log() -> Evidence:
    from llmplatform.models import AuditEvent

    vendor = connection.vendor
    table = AuditEvent._meta.db_table
    guarded, guard_text, details = _trigger_guards(vendor, table)
    details["database"] = vendor
    problems = [] if guarded else [guard_text]
    if vendor == "sqlite" and settings.PRODUCTION:
        problems.append("production on SQLite: the database does not refuse DELETE")

    # The guard holds in practice: a no-op UPDATE of the newest row must be refused.
    newest = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first()
    if newest is not None:
        quoted = connection.ops.quote_name(table)
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(
                    f"UPDATE {quoted} SET action = action WHERE id = %s",  # noqa: S608
                    [newest],
                )
                raise _ProbeAccepted
        except _ProbeAccepted:
            details["probe"] = "accepted"
            problems.append("the database accepted an UPDATE of an audit row")
        except DatabaseError as exc:
            details["probe"] = "refused" if "append-only" in str(exc) else f"error: {exc}"
            if details["probe"] != "refused":
                problems.append(f"the probe UPDATE failed unexpectedly ({exc})")

    now = timezone.now()
    since = now - timedelta(hours=24)
    others = AuditEvent.objects.exclude(action__startswith=OWN_AUDIT_PREFIX)
    last = others.order_by("-created_at", "-id").values_list("created_at", "action").first()
    recent = others.filter(created_at__gte=since).count()
    details.update(
        events_last_24h=recent,
        last_event_at=last[0].isoformat() if last else None,
        last_event_action=last[1] if last else None,
    )
    if last is None or last[0] < since:
        problems.append("nothing written in the last 24 h")

    written = f"{_plural(recent, 'event')} in the last 24 h, last {utc(last and last[0])}"
    if problems:
        return Evidence(False, _sentence(problems, f" ({written})"), details)
    probe = " (a probe UPDATE was refused)" if details.get("probe") == "refused" else ""
    return Evidence(True, f"{guard_text[0].upper()}{guard_text[1:]}{probe}; {written}.", details)


# --- Retention purge ----------------------------------------------------------------------------


@register(RETENTION_PURGE, "Retention purge ran in the last 24 h")
def retention_purge() -> Evidence:
    from privacy.models import Conversation, PurgeRun

    now = timezone.now()
    since = now - timedelta(hours=24)
    latest = PurgeRun.objects.order_by("-started_at", "-id").first()
    good = (
        PurgeRun.objects.filter(finished_at__isnull=False, error="")
        .order_by("-finished_at", "-id")
        .first()
    )
    # Set whenever there is a good run (the query above finds only finished ones).
    good_finished_at = good.finished_at if good else None
    overdue = Conversation.objects.filter(expires_at__lt=now - PURGE_GRACE).count()
    details: dict[str, Any] = {
        "last_run_started_at": latest.started_at.isoformat() if latest else None,
        "last_success_finished_at": good_finished_at.isoformat() if good_finished_at else None,
        "last_success_deleted": good.deleted if good else None,
        "records_past_retention": overdue,
    }
    problems = []
    if latest is None:
        problems.append("the retention purge has never run")
    elif latest.error and latest.finished_at is not None:
        problems.append(
            f"the last purge ({utc(latest.started_at)}) failed: "
            f"{latest.error.strip().splitlines()[-1][:200]}"
        )
    if latest is not None and (good_finished_at is None or good_finished_at < since):
        problems.append(f"no successful purge in the last 24 h (last {utc(good_finished_at)})")
    if overdue:
        problems.append(
            f"{_plural(overdue, 'record')} expired more than "
            f"{PURGE_GRACE.seconds // 3600} h ago still stored"
        )
    if problems:
        return Evidence(False, _sentence(problems), details)
    # No problems: the purge has run (latest), and so has a good one in the last 24 h.
    assert good is not None
    return Evidence(
        True,
        f"Last purge {utc(good_finished_at)}, {good.deleted} deleted; "
        "no record kept past its retention.",
        details,
    )


# --- Data-subject requests ----------------------------------------------------------------------


@register(SUBJECT_REQUESTS, "Data-subject requests: none overdue")
def subject_requests() -> Evidence:
    from privacy.models import SubjectRequest
    from privacy.subject_requests import deadlines

    now = timezone.now()
    open_requests = SubjectRequest.objects.annotate(
        effective_due=deadlines.effective_due_expression()
    ).filter(state__in=deadlines.OPEN_STATES)
    total = open_requests.count()
    overdue = list(
        open_requests.filter(deadlines.overdue_q(now))
        .order_by("effective_due", "id")
        .values("id", "tenant__slug", "kind", "law", "state", "effective_due")[:20]
    )
    overdue_count = (
        len(overdue)
        if len(overdue) < 20
        else open_requests.filter(deadlines.overdue_q(now)).count()
    )
    upcoming = (
        open_requests.filter(effective_due__gte=now)
        .order_by("effective_due")
        .values_list("effective_due", flat=True)
        .first()
    )
    details = {
        "open": total,
        "overdue": overdue_count,
        "overdue_requests": [
            {**row, "effective_due": row["effective_due"].isoformat()} for row in overdue
        ],
        "next_due": upcoming.isoformat() if upcoming else None,
    }
    head = f"{overdue_count} of {_plural(total, 'open request')} overdue"
    if overdue_count:
        first = overdue[0]
        return Evidence(
            False,
            f"{head}; the oldest, #{first['id']} ({first['kind']}, "
            f"{first['tenant__slug']}), was due {utc(first['effective_due'])}.",
            details,
        )
    tail = f"; next due {utc(upcoming)}" if upcoming else ""
    return Evidence(True, f"{head}{tail}.", details)


# --- Staff second factor ------------------------------------------------------------------------


@register(STAFF_SECOND_FACTOR, "Second factor enforced for all staff")
def staff_second_factor() -> Evidence:
    from django_otp.plugins.otp_totp.models import TOTPDevice

    from llmplatform.adminsite.site import GovernanceAdminSite, second_factor_required

    user_model = get_user_model()
    staff = user_model._default_manager.filter(is_active=True, is_staff=True)
    total = staff.count()
    without = staff.exclude(
        pk__in=TOTPDevice.objects.filter(confirmed=True).values("user_id")
    ).order_by(user_model.USERNAME_FIELD)
    names = list(without.values_list(user_model.USERNAME_FIELD, flat=True)[:20])
    missing = len(names) if len(names) < 20 else without.count()
    enforced = second_factor_required() and isinstance(admin.site, GovernanceAdminSite)
    details = {
        "staff": total,
        "without_second_factor": missing,
        "staff_without_second_factor": names,
        "admin_requires_2fa": enforced,
    }
    problems = []
    if not second_factor_required():
        problems.append("LLMP_ADMIN_REQUIRE_2FA is off: the admin does not ask for a code")
    elif not isinstance(admin.site, GovernanceAdminSite):
        problems.append("the admin site is not the one that asks for a second factor")
    head = f"{missing} of {_plural(total, 'active staff user')} without a second factor"
    if missing:
        problems.append(f"{head} ({', '.join(names)})")
    if problems:
        return Evidence(False, _sentence(problems), details)
    return Evidence(True, f"{head}; the admin requires a TOTP code.", details)


# --- TLS ----------------------------------------------------------------------------------------


@register(TLS_REQUIRED, "TLS required in production settings")
def tls_required() -> Evidence:
    hsts = int(getattr(settings, "SECURE_HSTS_SECONDS", 0) or 0)
    values = {
        "DEBUG": bool(settings.DEBUG),
        "SECURE_SSL_REDIRECT": bool(getattr(settings, "SECURE_SSL_REDIRECT", False)),
        "SESSION_COOKIE_SECURE": bool(getattr(settings, "SESSION_COOKIE_SECURE", False)),
        "CSRF_COOKIE_SECURE": bool(getattr(settings, "CSRF_COOKIE_SECURE", False)),
        "SECURE_HSTS_SECONDS": hsts,
        "SECURE_PROXY_SSL_HEADER": list(getattr(settings, "SECURE_PROXY_SSL_HEADER", None) or []),
        "LLMP_ENV": settings.LLMP_ENV,
    }
    problems = [
        f"{name} off"
        for name in ("SECURE_SSL_REDIRECT", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE")
        if not values[name]
    ]
    if hsts <= 0:
        problems.append("SECURE_HSTS_SECONDS is 0")
    if values["DEBUG"]:
        problems.insert(0, "DEBUG is on")
    if problems:
        return Evidence(
            False,
            f"TLS is not required (LLMP_ENV={settings.LLMP_ENV}): {', '.join(problems)}.",
            values,
        )
    return Evidence(
        True,
        f"HTTP redirects to HTTPS; session and CSRF cookies are Secure; "
        f"HSTS {hsts} s (LLMP_ENV={settings.LLMP_ENV}).",
        values,
    )
