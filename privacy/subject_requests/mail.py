"""Emails to the data subject: the registered address (decrypted), one send that never fails
the request, and sending after the transaction commits."""

from __future__ import annotations

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction

from privacy import crypto
from privacy.models import DataSubject, SubjectRequest

Kind = SubjectRequest.Kind


def registered_email(subject: DataSubject | None) -> str | None:
    """The subject's contact address, decrypted, or None (none registered, or key destroyed)."""
    if subject is None or not subject.email_ciphertext:
        return None
    try:
        return crypto.decrypt(
            subject, bytes(subject.email_ciphertext), aad=crypto.record_aad(subject, "email")
        )
    except Exception:
        return None


def notify(address: str | None, subject_line: str, body: str) -> bool:
    """Send one email to the subject. A failed send is not a failed request: the audit row says
    whether the subject was told."""
    if not address:
        return False
    try:
        send_mail(subject_line, body, settings.DEFAULT_FROM_EMAIL, [address])
    except Exception:
        return False
    return True


def notify_on_commit(
    request: SubjectRequest, subject_line: str, body: str, address: str | None = None
) -> None:
    """Email after the transaction commits (never for a change that was rolled back); the
    address is read now, while the subject's key is sure to exist."""
    address = address or registered_email(request.subject)
    if address:
        transaction.on_commit(lambda: notify(address, subject_line, body))


def kind_phrase(request: SubjectRequest) -> str:
    phrases: dict[str, str] = {
        Kind.ACCESS: "access (copy of your data)",
        Kind.ERASURE: "erasure",
        Kind.OPT_OUT: "opt-out of sale or sharing",
    }
    return phrases[request.kind]
