"""Reads of rollouts and their measurements that other code relies on.

**What the guard counts.** For one alias and version over a window, the usage records that
say something about the version itself:

- counted: every request routed to the version, except answers served straight from the
  response cache (they never reached the version's deployment) and client-side outcomes, status
  400-499 (invalid requests, rate limits, screened prompts, a client that hung up: 499);
- an error: status 5xx (the provider failed, timed out or could not be reached; 502/503/504),
  or an answer that only a fallback deployment or the degraded mode could give (status 200 with
  ``fallback_reason`` set, or ``degraded``): the version's own deployment failed it.

Error rates are percentages of counted requests; P95 latency is the nearest-rank 95th
percentile of the counted requests' total latency (for streams, until the last chunk).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Count, Q, QuerySet, Sum
from django.utils import timezone

from deployments.rollouts.models import LIVE_STATES, Rollout
from gateway.models import UsageRecord

ERROR_Q = Q(status_code__gte=500) | ~Q(fallback_reason="") | Q(degraded=True)
NOT_COUNTED_Q = Q(cache_hit=True, fallback_reason="", degraded=False) | Q(
    status_code__gte=400, status_code__lt=500
)


def rollouts_in_progress() -> QuerySet[Rollout]:
    """Rollouts taking traffic now (in progress or paused), newest first (the dashboard's)."""
    return (
        Rollout.objects.filter(state__in=LIVE_STATES)
        .select_related("alias", "stable_version", "candidate_version")
        .order_by("-started_at", "-id")
    )


def get_rollout(rollout_id: int) -> Rollout:
    return Rollout.objects.select_related("alias", "stable_version", "candidate_version").get(
        pk=rollout_id
    )


@dataclass(frozen=True)
class VersionFigures:
    version: str
    requests: int
    errors: int
    p95_ms: float | None

    @property
    def error_rate(self) -> float:
        """Percent of counted requests that failed (0 with no requests)."""
        return 100.0 * self.errors / self.requests if self.requests else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "error_rate": round(self.error_rate, 3),
            "p95_ms": round(self.p95_ms, 1) if self.p95_ms is not None else None,
        }


def counted_usage(
    alias: str, version: str, since: datetime, until: datetime
) -> QuerySet[UsageRecord]:
    return UsageRecord.objects.filter(
        alias=alias, version=version, created_at__gte=since, created_at__lte=until
    ).exclude(NOT_COUNTED_Q)


def version_figures(alias: str, version: str, since: datetime, until: datetime) -> VersionFigures:
    rows = counted_usage(alias, version, since, until)
    totals = rows.aggregate(requests=Count("id"), errors=Count("id", filter=ERROR_Q))
    requests = totals["requests"] or 0
    p95 = None
    if requests:
        rank = math.ceil(0.95 * requests)  # nearest rank: one row, read through the index
        p95 = rows.order_by("latency_ms").values_list("latency_ms", flat=True)[rank - 1]
    return VersionFigures(version, requests, totals["errors"] or 0, p95)


@dataclass(frozen=True)
class RolloutFigures:
    since: datetime
    until: datetime
    stable: VersionFigures
    candidate: VersionFigures

    def as_dict(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "stable": self.stable.as_dict(),
            "candidate": self.candidate.as_dict(),
        }


def rollout_figures(rollout: Rollout, now: datetime | None = None) -> RolloutFigures:
    """Both versions over the guard's window, from the rollout's start at the earliest."""
    until = now or timezone.now()
    since = until - rollout.window
    if rollout.started_at and rollout.started_at > since:
        since = rollout.started_at
    alias = rollout.alias.name
    return RolloutFigures(
        since,
        until,
        version_figures(alias, rollout.stable_version.version, since, until),
        version_figures(alias, rollout.candidate_version.version, since, until),
    )


def guard_breach(rollout: Rollout, figures: RolloutFigures) -> str | None:
    """Why the candidate must be rolled back now, or None."""
    candidate, stable = figures.candidate, figures.stable
    if candidate.requests < rollout.min_requests:
        return None
    limit = stable.error_rate + rollout.max_error_rate_increase
    if candidate.error_rate > limit:
        return (
            f"candidate error rate {candidate.error_rate:.2f}% ({candidate.errors} of "
            f"{candidate.requests}) exceeds the stable version's {stable.error_rate:.2f}% "
            f"by more than {rollout.max_error_rate_increase:g} points"
        )
    if (
        rollout.p95_latency_limit_ms is not None
        and candidate.p95_ms is not None
        and candidate.p95_ms > rollout.p95_latency_limit_ms
    ):
        return (
            f"candidate P95 latency {candidate.p95_ms:.0f} ms exceeds the limit of "
            f"{rollout.p95_latency_limit_ms} ms ({candidate.requests} requests)"
        )
    return None


def alias_cost(alias: str, since: datetime, until: datetime) -> Decimal:
    total = UsageRecord.objects.filter(
        alias=alias, created_at__gte=since, created_at__lt=until
    ).aggregate(cost=Sum("cost"))["cost"]
    return total or Decimal(0)


def week_before(moment: datetime) -> datetime:
    return moment - timedelta(days=7)
