"""The compliance officer's dashboard: the figures on the admin index, each linked to its list.

Registered in the kernel's dashboard (``llmplatform.adminsite.dashboard``) by ``DeploymentsConfig``.
Every figure is counted by the same definition as the admin list it links to, and the link uses
that list's own filters (``?deadline=overdue`` on subject requests, ``?state=failing`` on
compliance items, ``?live_state=open`` on breakers, the date hierarchy for "today"), so the
number on the dashboard is the number of rows behind the link. The panels run a fixed number of
queries however many tenants, requests or events there are (one or two per figure or table,
three for the compliance states) and one round trip to the breaker store.

"Today" and "this month" are UTC (``TIME_ZONE``), as budgets and the admin's date hierarchy
count them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import structlog
from django.db.models import Count, Model, Q, Sum
from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from llmplatform.adminsite.dashboard import Figure, Level, Panel, PanelBuilder, Row

log = structlog.get_logger("deployments.dashboard")

#: Tenants shown in the spend table (those closest to or over a budget first).
SPEND_ROWS = 15
#: A budget used to this fraction is shown as a warning.
BUDGET_WARN = Decimal("0.8")


# --- Links --------------------------------------------------------------------------------------


def changelist_url(request: HttpRequest, model: type[Model], **params: Any) -> str | None:
    """The admin list of ``model`` with ``params`` as its filters, or None when the user may not
    view it (the figure is still shown, without a link)."""
    opts = model._meta
    if not request.user.has_perm(f"{opts.app_label}.view_{opts.model_name}"):
        return None
    try:
        url = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
    except NoReverseMatch:  # not registered in the admin
        return None
    return f"{url}?{urlencode(params)}" if params else url


def change_url(request: HttpRequest, obj: Model) -> str | None:
    opts = obj._meta
    if not request.user.has_perm(f"{opts.app_label}.view_{opts.model_name}"):
        return None
    try:
        return reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])
    except NoReverseMatch:
        return None


def day_params(field: str, day: date) -> dict[str, int]:
    """The admin date hierarchy's parameters for one day (it filters [day, day + 1))."""
    return {f"{field}__year": day.year, f"{field}__month": day.month, f"{field}__day": day.day}


def month_params(field: str, day: date) -> dict[str, int]:
    return {f"{field}__year": day.year, f"{field}__month": day.month}


@dataclass(frozen=True, slots=True)
class Clock:
    now: datetime
    today: date
    day_start: datetime
    month_start: datetime

    @classmethod
    def current(cls) -> Clock:
        return cls.at(timezone.now())

    @classmethod
    def at(cls, now: datetime) -> Clock:
        today = timezone.localdate(now)
        day_start = timezone.make_aware(datetime.combine(today, time.min))
        return cls(now=now, today=today, day_start=day_start, month_start=day_start.replace(day=1))


# --- Formatting ---------------------------------------------------------------------------------


def count_level(count: int, *, when_any: Level) -> Level:
    return when_any if count else "ok"


def duration_text(delta: timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{hours // 24} days"


def usd(amount: Decimal) -> str:
    return f"${amount:,.2f}"


# --- Panels -------------------------------------------------------------------------------------


def subject_requests_panel(request: HttpRequest, clock: Clock) -> Panel:
    from privacy.models import SubjectRequest
    from privacy.subject_requests import deadlines

    counts = SubjectRequest.objects.annotate(
        effective_due=deadlines.effective_due_expression()
    ).aggregate(
        overdue=Count("pk", filter=deadlines.overdue_q(clock.now)),
        due_soon=Count("pk", filter=deadlines.due_soon_q(7, clock.now)),
    )
    return Panel(
        key="subject_requests",
        title="Data-subject requests",
        figures=(
            Figure(
                key="subject_requests_overdue",
                label="overdue",
                value=str(counts["overdue"]),
                url=changelist_url(request, SubjectRequest, deadline="overdue"),
                level=count_level(counts["overdue"], when_any="alert"),
                note="open past their legal deadline",
            ),
            Figure(
                key="subject_requests_due_soon",
                label="due in the next 7 days",
                value=str(counts["due_soon"]),
                url=changelist_url(request, SubjectRequest, deadline="due7"),
                level=count_level(counts["due_soon"], when_any="warn"),
            ),
        ),
    )


def compliance_and_change_panel(request: HttpRequest, clock: Clock) -> Panel:
    # Three sources (compliance checks, rollouts, the breaker store): one failing must not hide
    # the other two figures.
    return Panel(
        key="operations",
        title="Compliance and changes",
        figures=tuple(
            figure_or_unavailable(key, label, build, request)
            for key, label, build in (
                ("compliance_failing", "compliance items failing", compliance_failing_figure),
                ("rollouts_in_progress", "rollouts in progress", rollouts_figure),
                ("breakers_open", "circuit breakers open", breakers_figure),
            )
        ),
    )


def figure_or_unavailable(
    key: str, label: str, build: Callable[[HttpRequest], Figure], request: HttpRequest
) -> Figure:
    try:
        return build(request)
    except Exception as exc:  # shown as unavailable; the error is in the log
        log.exception("dashboard_figure_failed", figure=key, error=type(exc).__name__)
        return Figure(
            key=key,
            label=label,
            value="unavailable",
            note=f"could not be computed ({type(exc).__name__})",
        )


def compliance_failing_figure(request: HttpRequest) -> Figure:
    from deployments.compliance.models import ComplianceItem
    from deployments.compliance.selectors import FAILING, failing_items

    count = len(failing_items())
    return Figure(
        key="compliance_failing",
        label="compliance items failing",
        value=str(count),
        url=changelist_url(request, ComplianceItem, state=FAILING),
        level=count_level(count, when_any="alert"),
    )


def rollouts_figure(request: HttpRequest) -> Figure:
    from deployments.rollouts.models import Rollout
    from deployments.rollouts.selectors import rollouts_in_progress

    count = rollouts_in_progress().count()
    return Figure(
        key="rollouts_in_progress",
        label="rollouts in progress",
        value=str(count),
        url=changelist_url(request, Rollout, open="live"),
        level=count_level(count, when_any="warn"),
        note="running or paused",
    )


def breakers_figure(request: HttpRequest) -> Figure:
    from gateway.admin.resilience import open_breaker_ids
    from gateway.models import DeploymentBreaker

    count = len(open_breaker_ids(DeploymentBreaker.objects.all()))
    return Figure(
        key="breakers_open",
        label="circuit breakers open",
        value=str(count),
        url=changelist_url(request, DeploymentBreaker, live_state="open"),
        level=count_level(count, when_any="alert"),
        note="open, probing or forced open",
    )


def guards_panel(request: HttpRequest, clock: Clock) -> Panel:
    from gateway.models import SecurityEvent, UsageRecord

    today = {
        "created_at__gte": clock.day_start,
        "created_at__lt": clock.day_start + timedelta(days=1),
    }
    blocked = SecurityEvent.objects.filter(
        kind=SecurityEvent.Kind.PROMPT_INJECTION, action=SecurityEvent.Action.BLOCKED, **today
    ).count()
    redacted = UsageRecord.objects.filter(pii_redactions__gt=0, **today).aggregate(
        values=Sum("pii_redactions"), requests=Count("pk")
    )
    requests = redacted["requests"]
    return Panel(
        key="guards",
        title="Guards today (UTC)",
        figures=(
            Figure(
                key="injections_blocked_today",
                label="prompt injections blocked",
                value=str(blocked),
                url=changelist_url(
                    request,
                    SecurityEvent,
                    kind__exact="prompt_injection",
                    action__exact="blocked",
                    **day_params("created_at", clock.today),
                ),
            ),
            Figure(
                key="pii_redactions_today",
                label="PII values redacted",
                value=str(redacted["values"] or 0),
                url=changelist_url(
                    request,
                    UsageRecord,
                    pii_redactions__gt=0,
                    **day_params("created_at", clock.today),
                ),
                note=f"in {requests} request{'' if requests == 1 else 's'}",
            ),
        ),
    )


def backups_panel(request: HttpRequest, clock: Clock) -> Panel:
    """Age of the newest good backup's data against the RPO (what a disaster now would lose),
    and the last restore drill's measured duration against the RTO."""
    from deployments.backups import conf
    from deployments.backups.models import Backup, RestoreDrill
    from deployments.backups.selectors import last_good_backup, last_restore_drill

    targets = conf.get()
    good_backups = changelist_url(request, Backup, state__exact=Backup.State.SUCCEEDED)
    backup = last_good_backup()
    if backup is None:
        backup_figure = Figure(
            key="last_good_backup",
            label="no good backup yet",
            value="none",
            url=good_backups,
            level="alert",
            note=f"RPO {duration_text(targets.rpo)}",
        )
    else:
        assert backup.started_at is not None  # last_good_backup finds only started backups
        age = clock.now - backup.started_at
        backup_figure = Figure(
            key="last_good_backup",
            label="age of the last good backup",
            value=duration_text(age),
            url=good_backups,
            level="alert" if age > targets.rpo else "ok",
            note=f"RPO {duration_text(targets.rpo)}; data from "
            f"{timezone.localtime(backup.started_at):%Y-%m-%d %H:%M} UTC",
        )
    drills = changelist_url(request, RestoreDrill)
    drill = last_restore_drill()
    if drill is None:
        drill_figure = Figure(
            key="last_restore_drill",
            label="no restore drill yet",
            value="none",
            url=drills,
            level="alert",
            note=f"RTO {duration_text(targets.rto)}",
        )
    else:
        ago = clock.now - drill.finished_at
        healthy = drill.met_rto and ago <= targets.drill_max_age
        drill_figure = Figure(
            key="last_restore_drill",
            label="last restore drill took",
            value=duration_text(timedelta(seconds=drill.duration_seconds)),
            url=drills,
            level="ok" if healthy else "alert",
            note=f"{drill.get_result_display()}, {duration_text(ago)} ago; "
            f"RTO {duration_text(targets.rto)}",
        )
    return Panel(key="backups", title="Backups", figures=(backup_figure, drill_figure))


@dataclass(frozen=True, slots=True)
class TenantSpend:
    tenant: Any
    today: Decimal
    month: Decimal
    daily_budget: Decimal
    monthly_budget: Decimal

    @property
    def used(self) -> Decimal:
        """The larger share of a budget used (0 without budgets)."""
        shares = [
            spent / budget
            for spent, budget in (
                (self.today, self.daily_budget),
                (self.month, self.monthly_budget),
            )
            if budget > 0
        ]
        return max(shares, default=Decimal(0))


def _budget(plan: Any, field: str) -> Decimal:
    if plan is None:
        return Decimal(0)
    own = getattr(plan, field)
    return own if own is not None else getattr(plan.tier, field)


def _spend_cell(key: str, spent: Decimal, budget: Decimal, url: str | None) -> Figure:
    if budget > 0:
        share = spent / budget
        level: Level = "alert" if share >= 1 else "warn" if share >= BUDGET_WARN else "ok"
        return Figure(
            key=key,
            label="",
            value=f"{usd(spent)} of {usd(budget)}",
            url=url,
            level=level,
            note=f"{share:.0%}",
        )
    return Figure(key=key, label="", value=usd(spent), url=url, note="no budget")


def tenant_spend(clock: Clock) -> list[TenantSpend]:
    """Spend today and this month of every tenant that spent this month or has a budget,
    those nearest to (or over) a budget first. Two queries."""
    from gateway.models import UsageRecord
    from llmplatform.models import Tenant

    totals = {
        row["tenant_id"]: row
        for row in UsageRecord.objects.filter(created_at__gte=clock.month_start)
        .values("tenant_id")
        .annotate(month=Sum("cost"), today=Sum("cost", filter=Q(created_at__gte=clock.day_start)))
        .order_by()
    }
    has_budget = Q()
    for field in ("daily_budget", "monthly_budget"):
        has_budget |= Q(**{f"plan__{field}__gt": 0})
        has_budget |= Q(**{f"plan__{field}__isnull": True, f"plan__tier__{field}__gt": 0})
    tenants = Tenant.objects.filter(Q(pk__in=list(totals)) | has_budget).select_related(
        "plan__tier"
    )
    out = []
    for tenant in tenants:
        plan = getattr(tenant, "plan", None)
        row = totals.get(tenant.pk, {})
        # SQLite sums decimals as floats: through str back to a Decimal.
        out.append(
            TenantSpend(
                tenant=tenant,
                today=Decimal(str(row.get("today") or 0)),
                month=Decimal(str(row.get("month") or 0)),
                daily_budget=_budget(plan, "daily_budget"),
                monthly_budget=_budget(plan, "monthly_budget"),
            )
        )
    out.sort(key=lambda s: (-s.used, -s.month, s.tenant.name))
    return out


def spend_panel(request: HttpRequest, clock: Clock) -> Panel:
    from gateway.models import UsageRecord

    spends = tenant_spend(clock)
    rows = []
    for spend in spends[:SPEND_ROWS]:
        tenant_id = spend.tenant.pk
        rows.append(
            Row(
                label=spend.tenant.name,
                url=change_url(request, spend.tenant),
                cells=(
                    _spend_cell(
                        f"spend_today_{spend.tenant.slug}",
                        spend.today,
                        spend.daily_budget,
                        changelist_url(
                            request,
                            UsageRecord,
                            tenant__id__exact=tenant_id,
                            **day_params("created_at", clock.today),
                        ),
                    ),
                    _spend_cell(
                        f"spend_month_{spend.tenant.slug}",
                        spend.month,
                        spend.monthly_budget,
                        changelist_url(
                            request,
                            UsageRecord,
                            tenant__id__exact=tenant_id,
                            **month_params("created_at", clock.today),
                        ),
                    ),
                ),
            )
        )
    hidden = len(spends) - len(rows)
    if not spends:
        note = "No tenant has spent anything this month or has a budget."
    elif hidden:
        note = f"{hidden} more tenant(s) further from their budgets are not shown."
    else:
        note = ""
    return Panel(
        key="spend",
        title="Spend against budgets (UTC)",
        columns=("tenant", "today", "this month"),
        rows=tuple(rows),
        note=note,
    )


#: The dashboard's panels, in order; each is computed on its own, so one that fails (shown as
#: unavailable by the kernel) leaves the others standing.
PANELS: tuple[tuple[str, Callable[[HttpRequest, Clock], Panel]], ...] = (
    ("subject_requests", subject_requests_panel),
    ("operations", compliance_and_change_panel),
    ("guards", guards_panel),
    ("backups", backups_panel),
    ("spend", spend_panel),
)


def _builder(build: Callable[[HttpRequest, Clock], Panel]) -> PanelBuilder:
    """The kernel's builder for one of the panels: built at the moment of each request."""
    return lambda request: [build(request, Clock.current())]


def register() -> None:
    from llmplatform.adminsite.dashboard import register_panels

    for name, build in PANELS:
        register_panels(name, _builder(build))
