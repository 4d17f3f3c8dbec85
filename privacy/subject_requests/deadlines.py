"""Deadlines of data-subject requests: the due dates computed when a request is received (GDPR
one calendar month, extendable; CCPA 45 days, acknowledged within 10 business days), the
effective due date after an extension, and what is overdue or due soon."""

from __future__ import annotations

import calendar
from datetime import datetime, timedelta

from django.db.models import Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from privacy.models import SubjectRequest

State = SubjectRequest.State
Law = SubjectRequest.Law

GDPR_MAX_EXTENSION_MONTHS = 2
CCPA_DAYS = 45
CCPA_ACKNOWLEDGE_BUSINESS_DAYS = 10

OPEN_STATES = (State.RECEIVED, State.VERIFIED, State.APPROVED, State.IN_PROGRESS, State.FAILED)


def add_months(moment: datetime, months: int) -> datetime:
    """The same day ``months`` calendar months later, or that month's last day if it is shorter
    (31 January + 1 month = 28/29 February), as EU Regulation 1182/71 counts a month."""
    index = moment.month - 1 + months
    year, month = moment.year + index // 12, index % 12 + 1
    return moment.replace(
        year=year, month=month, day=min(moment.day, calendar.monthrange(year, month)[1])
    )


def add_business_days(moment: datetime, days: int) -> datetime:
    """``days`` weekdays (Monday to Friday) later; public holidays are not counted out."""
    while days > 0:
        moment += timedelta(days=1)
        if moment.weekday() < 5:
            days -= 1
    return moment


def deadlines(law: str, received_at: datetime) -> tuple[datetime | None, datetime]:
    """(acknowledge_by, due_at) for a request received at ``received_at``."""
    if law == Law.CCPA:
        return (
            add_business_days(received_at, CCPA_ACKNOWLEDGE_BUSINESS_DAYS),
            received_at + timedelta(days=CCPA_DAYS),
        )
    return None, add_months(received_at, 1)


def effective_due(request: SubjectRequest) -> datetime | None:
    return request.extended_due_at or request.due_at


def effective_due_expression() -> Coalesce:
    """The effective due date in queries (admin filters and ordering)."""
    return Coalesce("extended_due_at", "due_at")


def is_overdue(request: SubjectRequest, *, now: datetime | None = None) -> bool:
    due = effective_due(request)
    return request.state in OPEN_STATES and due is not None and due < (now or timezone.now())


def overdue_q(now: datetime | None = None) -> Q:
    return Q(state__in=OPEN_STATES, effective_due__lt=now or timezone.now())


def due_soon_q(days: int = 7, now: datetime | None = None) -> Q:
    now = now or timezone.now()
    return Q(
        state__in=OPEN_STATES, effective_due__gte=now, effective_due__lt=now + timedelta(days=days)
    )
