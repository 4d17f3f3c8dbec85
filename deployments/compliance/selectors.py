"""Reads of the compliance state other code relies on (the report pages, the admin, the
officer's dashboard).

An item's state:

- live item: ``passing`` or ``failing`` by the newest run of its check, ``not checked`` if it
  never ran;
- manual item: ``passing`` while its newest attestation that is not withdrawn has not expired,
  ``attestation expired`` after, ``not attested`` without one.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, TypedDict

from django.db.models import OuterRef, Q, QuerySet, Subquery
from django.utils import timezone

from deployments.compliance.models import (
    Attestation,
    ComplianceFramework,
    ComplianceItem,
    EvidenceCheck,
)

if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations

PASSING = "passing"
FAILING = "failing"
NOT_CHECKED = "not checked"
NOT_ATTESTED = "not attested"
EXPIRED = "attestation expired"
STATES = (PASSING, FAILING, NOT_CHECKED, NOT_ATTESTED, EXPIRED)
#: Checks run hourly; evidence older than this is marked stale on the report.
STALE_AFTER_HOURS = 3


@dataclasses.dataclass(frozen=True)
class ItemStatus:
    item: ComplianceItem
    state: str
    evidence: EvidenceCheck | None = None
    attestation: Attestation | None = None

    @property
    def framework(self) -> ComplianceFramework:
        return self.item.framework

    @property
    def last_checked(self) -> datetime | None:
        """When the evidence was last established: the check's run, or the attestation."""
        if self.evidence is not None:
            return self.evidence.checked_at
        if self.attestation is not None:
            return self.attestation.attested_at
        return None

    stale_after_hours = STALE_AFTER_HOURS

    @property
    def stale(self) -> bool:
        """A live item whose newest run is older than the hourly schedule explains."""
        return self.evidence is not None and self.evidence.checked_at < timezone.now() - timedelta(
            hours=STALE_AFTER_HOURS
        )

    @property
    def css_state(self) -> str:
        return self.state.replace(" ", "-")


class _EvidenceIds(TypedDict):
    """The pks of an item's newest check run and of its newest attestation not withdrawn."""

    evidence_id: int | None
    attestation_id: int | None


def _items_with_evidence_ids(
    items: QuerySet[ComplianceItem],
) -> QuerySet[WithAnnotations[ComplianceItem, _EvidenceIds]]:
    newest_check = (
        EvidenceCheck.objects.filter(check_code=OuterRef("check_code"))
        .order_by("-checked_at", "-id")
        .values("pk")[:1]
    )
    newest_attestation = (
        Attestation.objects.filter(item=OuterRef("pk"), withdrawn_at__isnull=True)
        .order_by("-attested_at", "-id")
        .values("pk")[:1]
    )
    return items.annotate(
        evidence_id=Subquery(newest_check), attestation_id=Subquery(newest_attestation)
    )


def item_statuses(
    framework: ComplianceFramework | None = None,
    *,
    now: datetime | None = None,
    items: QuerySet[ComplianceItem] | None = None,
) -> list[ItemStatus]:
    """Every item (of ``framework``, or of ``items``) with its state and current evidence, in
    report order. Three queries, however many items."""
    now = now or timezone.now()
    if items is None:
        items = ComplianceItem.objects.all()
    if framework is not None:
        items = items.filter(framework=framework)
    rows = list(
        _items_with_evidence_ids(items.select_related("framework")).order_by(
            "framework__order", "framework__name", "order", "id"
        )
    )
    checks = EvidenceCheck.objects.in_bulk(
        [r.evidence_id for r in rows if r.kind == ComplianceItem.Kind.LIVE and r.evidence_id]
    )
    attestations = Attestation.objects.defer("file_data").in_bulk(
        [r.attestation_id for r in rows if r.attestation_id]
    )
    statuses = []
    for item in rows:
        if item.kind == ComplianceItem.Kind.LIVE:
            check = checks.get(item.evidence_id)
            state = NOT_CHECKED if check is None else (PASSING if check.ok else FAILING)
            statuses.append(ItemStatus(item, state, evidence=check))
        else:
            attestation = attestations.get(item.attestation_id)
            if attestation is None:
                state = NOT_ATTESTED
            elif attestation.expires_at is not None and attestation.expires_at <= now:
                state = EXPIRED
            else:
                state = PASSING
            statuses.append(ItemStatus(item, state, attestation=attestation))
    return statuses


def failing_items() -> list[ItemStatus]:
    """The items whose current state is failing: live items whose newest check failed. Each
    has ``.item``, ``.framework`` (``.item.framework``), ``.evidence`` (the failing run)."""
    live = ComplianceItem.objects.filter(kind=ComplianceItem.Kind.LIVE)
    return [s for s in item_statuses(items=live) if s.state == FAILING]


def state_counts(statuses: list[ItemStatus]) -> dict[str, int]:
    """Items per state, keyed by the state with underscores (``not_attested``) for templates."""
    counts = {state.replace(" ", "_"): 0 for state in STATES}
    for status in statuses:
        counts[status.state.replace(" ", "_")] += 1
    return counts


def frameworks_with_counts() -> list[tuple[ComplianceFramework, dict[str, int]]]:
    statuses = item_statuses()
    by_framework: dict[int, list[ItemStatus]] = {}
    for status in statuses:
        by_framework.setdefault(status.item.framework_id, []).append(status)
    return [
        (framework, state_counts(by_framework.get(framework.pk, [])))
        for framework in ComplianceFramework.objects.all()
    ]


def attestation_with_file(attestation_id: int) -> Attestation | None:
    return (
        Attestation.objects.select_related("item__framework")
        .filter(~Q(file_name=""), pk=attestation_id)
        .first()
    )
