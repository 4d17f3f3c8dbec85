"""An officer's actions on circuit breakers, each audited in the same transaction.

Forcing a breaker is stored on the deployment (``breaker_override``): every process reads it
with its routing table, this one at once and the others within ``route.REFRESH_SECONDS``.
Resetting one clears its shared state (closed, no counts); processes that read it in the last
second see the reset within a second.
"""

from __future__ import annotations

from django.db import transaction

from gateway.models import BreakerEvent, ProviderDeployment
from gateway.resilience.breaker import breaker_store
from gateway.resilience.policy import OVERRIDES, policy_for
from llmplatform.actors import Actor
from llmplatform.audit import AuditAction, audit_record
from llmplatform.errors import InvalidInput


def breaker_force(
    *, actor: Actor, deployment: ProviderDeployment, override: str
) -> ProviderDeployment:
    """Force a deployment's breaker open or closed, or give it back to its failures
    (``auto``)."""
    if override not in OVERRIDES:
        raise InvalidInput(f"override must be one of {', '.join(OVERRIDES)}", param="override")
    with transaction.atomic():
        row = ProviderDeployment.objects.select_for_update().get(pk=deployment.pk)
        before = row.breaker_override
        if before == override:
            return row
        row.breaker_override = override
        row.save(update_fields=["breaker_override", "updated_at"])
        audit_record(
            actor=actor,
            action=AuditAction.BREAKER_FORCE,
            obj=row,
            before={"breaker_override": before},
            after={"breaker_override": override},
        )
        BreakerEvent.objects.create(deployment=row.name, kind=override, actor=actor.label)
    return row


def breaker_reset(*, actor: Actor, deployment: ProviderDeployment) -> None:
    """Close a deployment's breaker and forget its counts (its recent failures stay listed)."""
    store = breaker_store()
    policy = policy_for(deployment, connect_timeout=0, read_timeout=0)
    before = store.snapshot({deployment.name: policy})[deployment.name]
    with transaction.atomic():
        audit_record(
            actor=actor,
            action=AuditAction.BREAKER_RESET,
            obj=deployment,
            before={"state": before.state, "consecutive_failures": before.consecutive_failures},
            after={"state": "closed"},
        )
        BreakerEvent.objects.create(
            deployment=deployment.name, kind=BreakerEvent.Kind.RESET, actor=actor.label
        )
        # Last: if the store cannot be reached, the audit rows roll back with the failure.
        store.reset(deployment.name)
