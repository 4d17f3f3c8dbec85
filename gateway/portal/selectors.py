"""Reads of the portal. Every tenant-owned object is read through the tenant that the signed-in
user's membership gives (``for_tenant``); a foreign object and a missing one raise the same
``Http404``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Count, Q, QuerySet, Sum
from django.db.models.functions import TruncDate
from django.http import Http404
from django.shortcuts import get_object_or_404
from django.utils import timezone

from gateway.models import ApiKey, ServiceAccount, TenantPlan, UsageRecord
from llmplatform.models import Membership, Tenant

USAGE_DAYS = 30


def memberships_for_user(user: Any) -> QuerySet[Membership]:
    return (
        Membership.objects.filter(user=user, tenant__is_active=True)
        .select_related("tenant")
        .order_by("tenant__name", "tenant__slug")
    )


def get_membership_for_user(user: Any, slug: str) -> Membership:
    """The user's membership of the tenant ``slug``; 404 when there is none, exactly as for a
    tenant that does not exist."""
    membership = memberships_for_user(user).filter(tenant__slug=slug).first()
    if membership is None:
        raise Http404("No such tenant")
    return membership


def api_keys_for_tenant(tenant: Tenant) -> QuerySet[ApiKey]:
    return (
        ApiKey.objects.for_tenant(tenant)
        .select_related("service_account", "replaced_by")
        .order_by("-created_at", "-id")
    )


def get_api_key_for_tenant(tenant: Tenant, key_id: int) -> ApiKey:
    return get_object_or_404(api_keys_for_tenant(tenant), pk=key_id)


def key_state(key: ApiKey, now: datetime) -> str:
    """revoked, expired, expiring (rotated: works until its overlap ends) or active."""
    if key.revoked_at is not None:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= now:
        return "expired"
    if key.replaced_by_id is not None:
        return "expiring"
    return "active"


def service_accounts_for_tenant(tenant: Tenant) -> QuerySet[ServiceAccount]:
    now = timezone.now()
    live = Q(api_keys__revoked_at__isnull=True) & (
        Q(api_keys__expires_at__isnull=True) | Q(api_keys__expires_at__gt=now)
    )
    return (
        ServiceAccount.objects.for_tenant(tenant)
        .annotate(live_keys=Count("api_keys", filter=live))
        .order_by("name")
    )


def enabled_service_accounts_for_tenant(tenant: Tenant) -> QuerySet[ServiceAccount]:
    return (
        ServiceAccount.objects.for_tenant(tenant).filter(disabled_at__isnull=True).order_by("name")
    )


def get_service_account_for_tenant(tenant: Tenant, account_id: int) -> ServiceAccount:
    return get_object_or_404(ServiceAccount.objects.for_tenant(tenant), pk=account_id)


def get_plan_for_tenant(tenant: Tenant) -> TenantPlan | None:
    return (
        TenantPlan.objects.for_tenant(tenant)
        .select_related("tier")
        .prefetch_related("tier__allowed_aliases")
        .first()
    )


@dataclass(frozen=True, slots=True)
class DayUsage:
    day: date
    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: Decimal = Decimal("0")

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def _start_of_day(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def usage_by_day_for_tenant(
    tenant: Tenant, *, days: int = USAGE_DAYS, today: date | None = None
) -> list[DayUsage]:
    """One entry per UTC day, oldest first, for the ``days`` days up to and including today;
    days without requests are zeros."""
    today = today or timezone.now().astimezone(UTC).date()
    first = today - timedelta(days=days - 1)
    rows = (
        UsageRecord.objects.for_tenant(tenant)
        .filter(
            created_at__gte=_start_of_day(first),
            created_at__lt=_start_of_day(today + timedelta(days=1)),
        )
        .annotate(day=TruncDate("created_at", tzinfo=UTC))
        .values("day")
        .annotate(
            requests=Count("id"),
            errors=Count("id", filter=Q(status_code__gte=400)),
            prompt_tokens=Sum("prompt_tokens"),
            completion_tokens=Sum("completion_tokens"),
            cost=Sum("cost"),
        )
        .order_by("day")
    )
    by_day = {
        row["day"]: DayUsage(
            day=row["day"],
            requests=row["requests"],
            errors=row["errors"],
            prompt_tokens=row["prompt_tokens"] or 0,
            completion_tokens=row["completion_tokens"] or 0,
            # SQLite sums decimals as floats: back to a Decimal of the field's precision.
            cost=Decimal(str(row["cost"] or 0)).quantize(Decimal("0.00000001")),
        )
        for row in rows
    }
    return [
        by_day.get(day, DayUsage(day=day))
        for day in (first + timedelta(days=offset) for offset in range(days))
    ]


@dataclass(frozen=True, slots=True)
class Spend:
    today: Decimal
    this_month: Decimal


def spend_for_tenant(tenant: Tenant, *, now: datetime | None = None) -> Spend:
    """Cost of the tenant's requests today and this month (UTC), as budgets count them."""
    now = (now or timezone.now()).astimezone(UTC)
    day_start = _start_of_day(now.date())
    month_start = day_start.replace(day=1)
    totals = (
        UsageRecord.objects.for_tenant(tenant)
        .filter(created_at__gte=month_start)
        .aggregate(month=Sum("cost"), today=Sum("cost", filter=Q(created_at__gte=day_start)))
    )
    return Spend(
        today=Decimal(str(totals["today"] or 0)), this_month=Decimal(str(totals["month"] or 0))
    )
