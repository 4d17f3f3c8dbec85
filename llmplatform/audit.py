"""Writing the audit log. Call ``audit_record`` inside the same transaction as the change."""

from __future__ import annotations

from typing import Any

from django.db import models

from llmplatform.models import AuditEvent, Tenant
from llmplatform.request_context import client_request_id_var, request_id_var

SYSTEM_ACTOR = "system"


def actor_label(actor: Any) -> str:
    """A frozen description of who acted: a user, a named system component, or ``system``."""
    if actor is None:
        return SYSTEM_ACTOR
    if isinstance(actor, str):
        return actor
    username = getattr(actor, "get_username", None)
    if callable(username):
        return f"user:{username()}"
    return str(actor)


def audit_record(
    *,
    actor: Any,
    action: str,
    obj: models.Model | None = None,
    object_type: str = "",
    object_id: str = "",
    object_repr: str = "",
    tenant: Tenant | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> AuditEvent:
    if obj is not None:
        object_type = object_type or obj._meta.label
        object_id = object_id or str(obj.pk)
        object_repr = object_repr or str(obj)[:300]
        if tenant is None:
            tenant = obj if isinstance(obj, Tenant) else getattr(obj, "tenant", None)
    return AuditEvent.objects.create(
        actor=actor_label(actor)[:200],
        action=action,
        object_type=object_type,
        object_id=object_id,
        object_repr=object_repr[:300],
        tenant=tenant,
        before=before,
        after=after,
        request_id=request_id_var.get(),
        client_request_id=client_request_id_var.get()[:128],
    )
