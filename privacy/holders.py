"""This app's entries in the data map (``llmplatform.datamap``): what it holds about a data
subject, for access requests (find) and erasure (erase). Both are idempotent."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llmplatform.actors import Actor
from privacy import crypto, selectors, services
from privacy.models import Conversation

ERASURE_ACTOR = Actor.system("system:erasure")


def find_conversations(tenant_id: int, external_id: str) -> list[dict[str, Any]]:
    """The subject's stored records, decrypted (their content was redacted before storage)."""
    subject = selectors.subject_for(tenant_id, external_id)
    if subject is None:
        return []
    out = []
    for conversation in (
        Conversation.objects.filter(subject=subject)
        .select_related("subject__tenant")
        .order_by("created_at", "id")
    ):
        content: Mapping[str, str | None]
        try:
            content = services.conversation_decrypt(conversation)
        except crypto.KeyDestroyed:
            content = {"prompt": None, "response": None}
        out.append(
            {
                "id": conversation.pk,
                "alias": conversation.alias,
                "request_id": conversation.request_id,
                "created_at": conversation.created_at.isoformat(),
                "expires_at": conversation.expires_at.isoformat(),
                **content,
            }
        )
    return out


def erase_conversations(tenant_id: int, external_id: str) -> int:
    subject = selectors.subject_for(tenant_id, external_id)
    if subject is None:
        return 0
    deleted, _ = Conversation.objects.filter(subject=subject).delete()
    return deleted


def find_subject(tenant_id: int, external_id: str) -> dict[str, Any] | None:
    """What is held about the subject itself: registration, opt-out and consent history."""
    subject = selectors.subject_for(tenant_id, external_id)
    if subject is None:
        return None
    email = None
    if subject.email_ciphertext is not None:
        try:
            email = crypto.decrypt(
                subject, subject.email_ciphertext, aad=crypto.record_aad(subject, "email")
            )
        except crypto.KeyDestroyed:
            email = None
    return {
        "user": subject.external_id,
        "email": email,
        "do_not_sell": subject.do_not_sell,
        "created_at": subject.created_at.isoformat(),
        "consent_history": selectors.consent_history(subject),
    }


def erase_subject(tenant_id: int, external_id: str) -> int:
    """Crypto-shred and retire the subject; the consent history is kept as proof (see
    ``services.subject_erase``)."""
    subject = selectors.subject_for(tenant_id, external_id)
    if subject is None:
        return 0
    return services.subject_erase(actor=ERASURE_ACTOR, subject=subject)
