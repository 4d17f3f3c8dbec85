"""Writing the audit log. Call ``audit_record`` inside the same transaction as the change."""

from __future__ import annotations

from typing import Any

from django.db import models

from llmplatform.actors import Actor
from llmplatform.audit_actions import AuditAction
from llmplatform.models import AuditEvent, Tenant
from llmplatform.request_context import client_request_id_var, request_id_var

__all__ = ["AuditAction", "audit_record"]


def audit_record(
    *,
    actor: Actor,
    action: AuditAction,
    obj: models.Model | None = None,
    object_type: str = "",
    object_id: str = "",
    object_repr: str = "",
    tenant: Tenant | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> AuditEvent:
    if not isinstance(action, AuditAction):
        raise TypeError(f"the audit action must be an AuditAction, not {action!r}")
    if not isinstance(actor, Actor):
        raise TypeError(f"the audit actor must be an Actor, not {type(actor).__name__}")
    if obj is not None:
        object_type = object_type or obj._meta.label
        object_id = object_id or str(obj.pk)
        object_repr = object_repr or str(obj)[:300]
        if tenant is None:
            tenant = obj if isinstance(obj, Tenant) else getattr(obj, "tenant", None)
    return AuditEvent.objects.create(
        actor=actor.label,
        action=action.value,
        object_type=object_type,
        object_id=object_id,
        object_repr=object_repr[:300],
        tenant=tenant,
        before=before,
        after=after,
        request_id=request_id_var.get(),
        client_request_id=client_request_id_var.get()[:128],
    )
