"""Writes of the compliance app: evidence runs and attestations. Each one an officer makes is
audited in the same transaction."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from deployments import evidence
from deployments.compliance.models import Attestation, ComplianceItem, EvidenceCheck
from llmplatform.actors import SYSTEM, Actor
from llmplatform.audit import AuditAction, audit_record

Trigger = EvidenceCheck.Trigger

#: Largest evidence file kept (bytes). Evidence is a policy PDF or a signed agreement, not a
#: data dump; the file lives in the database (and so in its backups).
MAX_EVIDENCE_FILE_BYTES = 10 * 1024 * 1024
ALLOWED_EVIDENCE_EXTENSIONS = (
    "pdf",
    "png",
    "jpg",
    "jpeg",
    "txt",
    "md",
    "csv",
    "json",
    "docx",
    "xlsx",
    "odt",
    "ods",
)


def check_codes_in_use() -> list[str]:
    """Every registered check and every check a live item names (an item naming a check that
    is not installed gets a failing run saying so)."""
    named = ComplianceItem.objects.filter(kind=ComplianceItem.Kind.LIVE).values_list(
        "check_code", flat=True
    )
    return sorted(set(evidence.registered()) | set(named))


def _run_one(code: str) -> tuple[evidence.Evidence, float]:
    started = time.monotonic()
    check = evidence.registered().get(code)
    if check is None:
        result = evidence.run(code)
    else:
        # Its own savepoint: a check whose query fails must not poison the caller's
        # transaction (PostgreSQL refuses every later statement of an aborted one).
        try:
            with transaction.atomic():
                result = check.run()
        except Exception as exc:  # a broken check fails its items; the others still run
            result = evidence.Evidence(
                False, f"The check failed to run: {type(exc).__name__}: {exc}"
            )
    return result, (time.monotonic() - started) * 1000


def evidence_checks_run(
    *,
    actor: Actor | None = None,
    trigger: str = Trigger.SCHEDULE,
    codes: Iterable[str] | None = None,
) -> list[EvidenceCheck]:
    """Run live checks (all in use, or ``codes``) and keep each result as an EvidenceCheck.
    A run an officer or operator asked for is audited with what it found; the hourly run is
    not (its rows are the record, and it would otherwise feed the audit-log check)."""
    codes = sorted(set(codes)) if codes is not None else check_codes_in_use()
    titles = {code: check.title for code, check in evidence.registered().items()}
    results = [(code, *_run_one(code)) for code in codes]
    with transaction.atomic():
        rows = EvidenceCheck.objects.bulk_create(
            [
                EvidenceCheck(
                    check_code=code,
                    title=titles.get(code, "")[:200],
                    ok=result.ok,
                    summary=result.summary[:500],
                    details=_jsonable(result.details),
                    checked_at=result.checked_at,
                    duration_ms=round(duration, 2),
                    trigger=trigger,
                    actor=actor.label if actor is not None else "",
                )
                for code, result, duration in results
            ]
        )
        if trigger != Trigger.SCHEDULE:
            audit_record(
                actor=actor if actor is not None else SYSTEM,
                action=AuditAction.COMPLIANCE_EVIDENCE_RECHECK,
                object_type="compliance.EvidenceCheck",
                object_id=",".join(str(row.pk) for row in rows if row.pk)[:64],
                object_repr=f"{len(rows)} live checks ({trigger})",
                after={"trigger": trigger, "results": {row.check_code: row.ok for row in rows}},
            )
    return rows


def _jsonable(value: Any) -> Any:
    """Details as JSON: dates as ISO strings, anything unknown as its text."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def validate_evidence_file(name: str, size: int) -> None:
    extension = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if extension not in ALLOWED_EVIDENCE_EXTENSIONS:
        raise ValidationError(
            f"Evidence files may be {', '.join(ALLOWED_EVIDENCE_EXTENSIONS)}; not {name!r}.",
            code="file_type",
        )
    if size > MAX_EVIDENCE_FILE_BYTES:
        raise ValidationError(
            f"The file is {size / 1048576:.1f} MB; evidence files are at most "
            f"{MAX_EVIDENCE_FILE_BYTES // 1048576} MB.",
            code="file_size",
        )


def attestation_create(
    *,
    actor: Actor,
    item: ComplianceItem,
    note: str = "",
    file: Any = None,
    expires_at: datetime | None = None,
) -> Attestation:
    """A person attests a manual item, with a note, a file (an uploaded file: name, size,
    content type, ``chunks()``), or both."""
    note = (note or "").strip()
    if item.kind != ComplianceItem.Kind.MANUAL:
        raise ValidationError(
            "Live items are evidenced by their check, not by attestation.", code="live_item"
        )
    if not note and file is None:
        raise ValidationError("Give a note, a file, or both.", code="empty")
    now = timezone.now()
    if expires_at is not None and expires_at <= now:
        raise ValidationError("The expiry must be in the future.", code="expired")
    fields: dict[str, Any] = {}
    if file is not None:
        name = (getattr(file, "name", "") or "evidence").rsplit("/", 1)[-1][:200]
        validate_evidence_file(name, file.size)
        data = b"".join(file.chunks())
        fields = {
            "file_name": name,
            "file_size": len(data),
            "file_data": data,
            "file_sha256": hashlib.sha256(data).hexdigest(),
            "file_content_type": (getattr(file, "content_type", "") or "application/octet-stream")[
                :100
            ],
        }
    with transaction.atomic():
        attestation = Attestation.objects.create(
            item=item,
            note=note,
            attested_by=actor.label,
            attested_at=now,
            expires_at=expires_at,
            **fields,
        )
        audit_record(
            actor=actor,
            action=AuditAction.COMPLIANCE_ATTESTATION_CREATE,
            obj=attestation,
            after={
                "item": f"{item.framework.code}/{item.code}",
                "note": note[:1000],
                "file_name": fields.get("file_name", ""),
                "file_sha256": fields.get("file_sha256", ""),
                "expires_at": expires_at.isoformat() if expires_at else None,
            },
        )
    return attestation


def attestation_withdraw(*, actor: Actor, attestation: Attestation, reason: str) -> Attestation:
    """An attestation that no longer holds is withdrawn (kept as history, with why)."""
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError("Say why the attestation is withdrawn.", code="reason")
    with transaction.atomic():
        locked = (
            Attestation.objects.select_for_update()
            .select_related("item__framework")
            .get(pk=attestation.pk)
        )
        if locked.withdrawn_at is not None:
            return locked
        locked.withdrawn_at = timezone.now()
        locked.withdrawn_by = actor.label
        locked.withdrawal_reason = reason
        locked.save(update_fields=["withdrawn_at", "withdrawn_by", "withdrawal_reason"])
        audit_record(
            actor=actor,
            action=AuditAction.COMPLIANCE_ATTESTATION_WITHDRAW,
            obj=locked,
            before={"withdrawn_at": None},
            after={"withdrawn_at": locked.withdrawn_at.isoformat(), "reason": reason},
        )
    return locked
