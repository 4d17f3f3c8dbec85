"""The deployment checklist's state: manual items by their distinct sign-offs, automatic items
computed from the rollout and the usage records (never typed in).

Automatic checks (``ChecklistItem.automatic_check`` and its ``check_params``):

- ``load_test_recorded``: an officer recorded a passing load test result on the checklist;
- ``canary_started``: the candidate took its first stage of traffic;
- ``monitored_for`` ``{"minutes": 30}``: the candidate has served that long without rollback;
- ``full_rollout``: all traffic is on the candidate (or the rollout completed);
- ``error_rate_below`` ``{"max_percent": 0.5}`` and ``p95_latency_below`` ``{"max_ms": 5000}``:
  the candidate's counted requests (see ``selectors``) since the rollout started, at least the
  rollout's ``min_requests`` of them;
- ``cost_within_band`` ``{"band_percent": 50, "hours": 1}``: the alias's cost over the last
  ``hours`` (all its versions) is within ``band_percent`` of the same hours one week before;
  judged once the candidate has served for ``hours``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.utils import timezone

from deployments.rollouts import selectors
from deployments.rollouts.models import (
    AutomaticCheck,
    Checklist,
    ChecklistItem,
    Phase,
    Rollout,
)


@dataclass
class ItemStatus:
    item: ChecklistItem
    done: bool
    detail: str
    signers: list[str] = field(default_factory=list)

    @property
    def automatic(self) -> bool:
        return bool(self.item.automatic_check)


def _param(item: ChecklistItem, name: str, default: float) -> float:
    try:
        return float((item.check_params or {}).get(name, default))
    except (TypeError, ValueError):
        return default


class _Context:
    """Measurements shared by a checklist's automatic items, made at most once each."""

    def __init__(self, checklist: Checklist, now: datetime) -> None:
        self.checklist = checklist
        self.rollout: Rollout = checklist.rollout
        self.now = now
        self._since_start: selectors.VersionFigures | None = None

    def since_start(self) -> selectors.VersionFigures:
        if self._since_start is None:
            rollout = self.rollout
            until = rollout.finished_at or self.now
            self._since_start = selectors.version_figures(
                rollout.alias.name,
                rollout.candidate_version.version,
                rollout.started_at or until,
                until,
            )
        return self._since_start


def _load_test(item: ChecklistItem, ctx: _Context) -> tuple[bool, str]:
    checklist = ctx.checklist
    if checklist.load_test_passed is None:
        return False, "no load test result recorded"
    verdict = "passed" if checklist.load_test_passed else "FAILED"
    return bool(checklist.load_test_passed), (
        f"{verdict}, recorded by {checklist.load_test_recorded_by}: "
        f"{checklist.load_test_summary[:200]}"
    )


def _canary_started(item: ChecklistItem, ctx: _Context) -> tuple[bool, str]:
    rollout = ctx.rollout
    if rollout.started_at is None:
        return False, "not started"
    first = rollout.stages[0] if rollout.stages else 100
    return True, f"started {timezone.localtime(rollout.started_at):%Y-%m-%d %H:%M} at {first}%"


def _monitored_for(item: ChecklistItem, ctx: _Context) -> tuple[bool, str]:
    rollout = ctx.rollout
    minutes = _param(item, "minutes", 30)
    if rollout.started_at is None:
        return False, "not started"
    if rollout.state == Rollout.State.ROLLED_BACK:
        return False, "rolled back"
    served = ((rollout.finished_at or ctx.now) - rollout.started_at).total_seconds() / 60
    return served >= minutes, f"candidate serving for {served:.0f} of {minutes:g} minutes"


def _full_rollout(item: ChecklistItem, ctx: _Context) -> tuple[bool, str]:
    rollout = ctx.rollout
    done = rollout.state != Rollout.State.ROLLED_BACK and (
        rollout.candidate_percent == 100 or rollout.state == Rollout.State.COMPLETED
    )
    return done, f"candidate at {rollout.candidate_percent}% ({rollout.get_state_display()})"


def _enough(ctx: _Context) -> tuple[selectors.VersionFigures, str | None]:
    figures = ctx.since_start()
    needed = ctx.rollout.min_requests
    if ctx.rollout.started_at is None:
        return figures, "not started"
    if figures.requests < needed:
        return figures, f"{figures.requests} of at least {needed} requests measured"
    return figures, None


def _error_rate(item: ChecklistItem, ctx: _Context) -> tuple[bool, str]:
    limit = _param(item, "max_percent", 0.5)
    figures, waiting = _enough(ctx)
    if waiting:
        return False, waiting
    return figures.error_rate < limit, (
        f"{figures.error_rate:.2f}% ({figures.errors} of {figures.requests} requests; "
        f"target < {limit:g}%)"
    )


def _p95(item: ChecklistItem, ctx: _Context) -> tuple[bool, str]:
    limit = _param(item, "max_ms", 5000)
    figures, waiting = _enough(ctx)
    if waiting:
        return False, waiting
    p95 = figures.p95_ms or 0.0
    return p95 < limit, f"P95 {p95:.0f} ms over {figures.requests} requests (target < {limit:g} ms)"


def _cost_band(item: ChecklistItem, ctx: _Context) -> tuple[bool, str]:
    band = _param(item, "band_percent", 50)
    hours = _param(item, "hours", 1)
    rollout = ctx.rollout
    if rollout.started_at is None:
        return False, "not started"
    until = min(rollout.finished_at or ctx.now, ctx.now)
    if until - rollout.started_at < timedelta(hours=hours):
        return False, f"waiting for {hours:g} h of traffic on the candidate"
    since = until - timedelta(hours=hours)
    alias = rollout.alias.name
    current = selectors.alias_cost(alias, since, until) / Decimal(str(hours))
    baseline = selectors.alias_cost(
        alias, selectors.week_before(since), selectors.week_before(until)
    ) / Decimal(str(hours))
    figures = f"${current:.4f}/h vs ${baseline:.4f}/h the week before"
    if baseline == 0:
        return current == 0, f"{figures}: no baseline to compare with" if current else figures
    change = float((current - baseline) / baseline * 100)
    return abs(change) <= band, f"{figures} ({change:+.0f}%; band ±{band:g}%)"


# Keyed by ``ChecklistItem.automatic_check``, a plain string (an AutomaticCheck value).
_CHECKS: dict[str, Callable[[ChecklistItem, _Context], tuple[bool, str]]] = {
    AutomaticCheck.LOAD_TEST_RECORDED: _load_test,
    AutomaticCheck.CANARY_STARTED: _canary_started,
    AutomaticCheck.MONITORED_FOR: _monitored_for,
    AutomaticCheck.FULL_ROLLOUT: _full_rollout,
    AutomaticCheck.ERROR_RATE_BELOW: _error_rate,
    AutomaticCheck.P95_LATENCY_BELOW: _p95,
    AutomaticCheck.COST_WITHIN_BAND: _cost_band,
}


def checklist_status(
    checklist: Checklist, now: datetime | None = None, *, phase: str | None = None
) -> list[ItemStatus]:
    """Every item (of ``phase``) with its state, in the checklist's order (a few queries, not
    one per item: sign-offs are prefetched; automatic items share their measurements)."""
    ctx = _Context(checklist, now or timezone.now())
    items = checklist.items.prefetch_related("signoffs__user").order_by("position", "id")
    if phase is not None:
        items = items.filter(phase=phase)
    result = []
    for item in items:
        if item.automatic_check:
            check = _CHECKS.get(item.automatic_check)
            if check is None:
                result.append(ItemStatus(item, False, f"unknown check {item.automatic_check!r}"))
                continue
            done, detail = check(item, ctx)
            result.append(ItemStatus(item, done, detail))
            continue
        signers = [s.user.get_username() for s in item.signoffs.all()]
        needed = item.required_signoffs
        result.append(
            ItemStatus(
                item, len(signers) >= needed, f"{len(signers)} of {needed} sign-off(s)", signers
            )
        )
    return result


def open_pre_deployment_items(
    checklist: Checklist | None, now: datetime | None = None
) -> list[ItemStatus]:
    """Required pre-deployment items not done: they hold a rollout at its first stage."""
    if checklist is None:
        return []
    return [
        s
        for s in checklist_status(checklist, now, phase=Phase.PRE)
        if s.item.required and not s.done
    ]


def summary(statuses: list[ItemStatus]) -> dict[str, Any]:
    return {
        phase: {
            "done": sum(1 for s in statuses if s.item.phase == phase and s.done),
            "total": sum(1 for s in statuses if s.item.phase == phase),
        }
        for phase in Phase.values
    }
