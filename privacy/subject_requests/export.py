"""The access/portability export: the document built from every holder in the data map, its
JSON, CSV and zip forms, and the signed one-time download link (checked, redeemed once,
expired)."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core import signing
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from llmplatform import datamap
from llmplatform.actors import SYSTEM
from llmplatform.audit import AuditAction, audit_record
from privacy import crypto
from privacy.models import SubjectRequest

State = SubjectRequest.State
Kind = SubjectRequest.Kind

EXPORT_LINK_SALT = "privacy.subject-request.export-link"
EXPORT_FORMAT = "llmplatform.subject-export/1"


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
            actor=SYSTEM,
            action=AuditAction.SUBJECT_REQUEST_EXPORT_DOWNLOAD,
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
                    actor=SYSTEM,
                    action=AuditAction.SUBJECT_REQUEST_EXPORT_EXPIRE,
                    obj=SubjectRequest.objects.get(pk=pk),
                    after={"deleted": True},
                )
    return expired
