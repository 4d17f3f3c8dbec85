"""Writing the audit log. ``audit_record`` takes who acted (an ``Actor``) and what they did (an
``AuditAction``), and runs only inside the ``transaction.atomic`` block of the change it
records, so the change and its row commit together or not at all."""

from __future__ import annotations

from typing import Any

from django.db import models, transaction

from llmplatform.actors import Actor
from llmplatform.audit_actions import AuditAction
from llmplatform.models import AuditEvent, Tenant
from llmplatform.request_context import client_request_id_var, request_id_var

__all__ = ["AuditAction", "AuditOutsideTransaction", "audit_record"]


class AuditOutsideTransaction(RuntimeError):
    """An audit row written outside a transaction: it could commit without the change it
    records, or the change without it."""


def _in_callers_transaction() -> bool:
    connection = transaction.get_connection()
    if not connection.in_atomic_block:
        return False
    # A test case wraps each test in atomic blocks of its own (Django's TestCase, the db
    # fixture of pytest-django); like Django's check of durable blocks, those do not count,
    # so the tests catch a write that production would make outside a transaction.
    return any(not getattr(block, "_from_testcase", False) for block in connection.atomic_blocks)


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
    if not _in_callers_transaction():
        raise AuditOutsideTransaction(
            f"audit_record({action.value}) outside transaction.atomic: write the change and "
            "its audit row in one atomic block"
        )
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
