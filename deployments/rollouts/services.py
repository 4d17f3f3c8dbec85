"""Every write of rollouts and deployment checklists. Each takes the acting principal, runs in
one transaction, writes the timeline step and the audit row in it, and claims the rollout with
a conditional UPDATE on its ``revision`` (an officer's click and the guard's task cannot both
move the same rollout: the second gets ``RolloutConflict``).

The traffic split itself is carried out by the rollout's executor (``executors``): inside the
transaction for the gateway executor (weights are rows of the same database), so a failed
step leaves the split as it was.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import structlog
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import F, Q
from django.urls import reverse
from django.utils import timezone

from deployments.rollouts import checks, selectors
from deployments.rollouts.executors import ExecutorError
from deployments.rollouts.executors.registry import EXECUTORS, executor_for
from deployments.rollouts.models import (
    DEFAULT_CANARY_STAGES,
    LIVE_STATES,
    OPEN_STATES,
    Checklist,
    ChecklistItem,
    ChecklistTemplate,
    Rollout,
    RolloutStep,
    SignOff,
)
from gateway.models import ModelAlias, ModelVersion
from llmplatform.actors import Actor
from llmplatform.audit import AuditAction, audit_record
from llmplatform.errors import Conflict, DomainError

log = structlog.get_logger("rollouts")

GUARD_ACTOR = Actor.system("system:rollout-guard")
SCHEDULE_ACTOR = Actor.system("system:rollout-schedule")
OVERRIDE_PERMISSION = "rollouts.override_checklist_gate"
ALERT_PERMISSION = "rollouts.receive_rollout_alerts"

State = Rollout.State
Action = RolloutStep.Action
# Each step of the timeline is audited as rollout.<step>.
STEP_AUDIT_ACTIONS = {
    Action.CREATED: AuditAction.ROLLOUT_CREATED,
    Action.HEALTH_PROBE: AuditAction.ROLLOUT_HEALTH_PROBE,
    Action.STARTED: AuditAction.ROLLOUT_STARTED,
    Action.ADVANCED: AuditAction.ROLLOUT_ADVANCED,
    Action.PAUSED: AuditAction.ROLLOUT_PAUSED,
    Action.RESUMED: AuditAction.ROLLOUT_RESUMED,
    Action.GATE_OVERRIDDEN: AuditAction.ROLLOUT_GATE_OVERRIDDEN,
    Action.SWITCHED_BACK: AuditAction.ROLLOUT_SWITCHED_BACK,
    Action.ROLLED_BACK: AuditAction.ROLLOUT_ROLLED_BACK,
    Action.AUTO_ROLLED_BACK: AuditAction.ROLLOUT_AUTO_ROLLED_BACK,
    Action.COMPLETED: AuditAction.ROLLOUT_COMPLETED,
    Action.SIGNED_OFF: AuditAction.ROLLOUT_SIGNED_OFF,
    Action.LOAD_TEST: AuditAction.ROLLOUT_LOAD_TEST,
}


class RolloutError(DomainError):
    """A rollout action that cannot be done; the message is safe to show an officer."""


class RolloutConflict(RolloutError, Conflict):
    """The rollout changed since it was loaded (another officer or the guard acted first)."""


class RolloutGated(RolloutError):
    """Required pre-deployment checklist items are open."""

    def __init__(self, open_items: list[checks.ItemStatus]) -> None:
        self.open_items = open_items
        names = "; ".join(s.item.text for s in open_items[:5])
        super().__init__(
            f"{len(open_items)} required pre-deployment item(s) are open ({names}). "
            "Complete them, or override with a reason."
        )


# --- helpers -------------------------------------------------------------------------------


def _snapshot(rollout: Rollout) -> dict[str, Any]:
    return {
        "state": rollout.state,
        "candidate_percent": rollout.candidate_percent,
        "stage_index": rollout.stage_index,
        "stable": rollout.stable_version.version,
        "candidate": rollout.candidate_version.version,
        "strategy": rollout.strategy,
        "executor": rollout.executor_kind,
    }


def _claim(rollout: Rollout, from_states: tuple[str, ...] | list[str], **changes: Any) -> None:
    """Move the rollout if, and only if, nobody moved it since it was loaded."""
    updated = Rollout.objects.filter(
        pk=rollout.pk,
        revision=rollout.revision,
        state__in=from_states,
    ).update(revision=F("revision") + 1, **changes)
    if updated != 1:
        raise RolloutConflict(
            "The rollout changed meanwhile (another officer or the automatic "
            "guard acted); reload the page and try again."
        )
    for name, value in changes.items():
        setattr(rollout, name, value)
    rollout.revision += 1


def _step(
    rollout: Rollout,
    *,
    actor: Actor,
    action: str,
    before: dict[str, Any] | None = None,
    from_percent: int | None = None,
    to_percent: int | None = None,
    reason: str = "",
    figures: dict[str, Any] | None = None,
) -> RolloutStep:
    step = RolloutStep.objects.create(
        rollout=rollout,
        actor=actor.label,
        action=action,
        from_percent=from_percent,
        to_percent=to_percent,
        reason=reason,
        figures=figures or {},
    )
    after = _snapshot(rollout)
    if reason:
        after["reason"] = reason
    if figures:
        after["figures"] = figures
    audit_record(
        actor=actor,
        action=STEP_AUDIT_ACTIONS[Action(action)],
        obj=rollout,
        before=before,
        after=after,
    )
    return step


def _split(rollout: Rollout, percent: int) -> None:
    try:
        executor_for(rollout).apply_split(
            stable=rollout.stable_version.version,
            candidate=rollout.candidate_version.version,
            candidate_percent=percent,
        )
    except ExecutorError as exc:
        raise RolloutError(f"The traffic split could not be applied: {exc}") from exc


def _next_advance(rollout: Rollout, now: datetime) -> datetime | None:
    return now + rollout.advance_every if rollout.advance_every else None


def _gate(*, actor: Actor, rollout: Rollout, override_reason: str) -> list[checks.ItemStatus]:
    """Raises RolloutGated if required pre-deployment items are open and nobody overrides; with
    a reason and the permission, returns the open items being overridden (else [])."""
    if rollout.gate_overridden_by:
        return []
    open_items = checks.open_pre_deployment_items(getattr(rollout, "checklist", None))
    if not open_items:
        return []
    override_reason = (override_reason or "").strip()
    if not override_reason:
        raise RolloutGated(open_items)
    if not actor.has_perm(OVERRIDE_PERMISSION):
        raise RolloutError(f"Overriding the checklist needs the permission {OVERRIDE_PERMISSION}.")
    return open_items


def _record_override(
    *, actor: Actor, rollout: Rollout, open_items: list[checks.ItemStatus], reason: str
) -> None:
    before = _snapshot(rollout)
    Rollout.objects.filter(pk=rollout.pk).update(
        gate_overridden_by=actor.label, gate_override_reason=reason.strip()
    )
    rollout.gate_overridden_by = actor.label
    rollout.gate_override_reason = reason.strip()
    _step(
        rollout,
        actor=actor,
        action=Action.GATE_OVERRIDDEN,
        before=before,
        reason=reason.strip(),
        figures={"open_items": [s.item.text for s in open_items]},
    )


# --- rollouts ------------------------------------------------------------------------------


def rollout_create(
    *,
    actor: Actor,
    alias: ModelAlias,
    stable_version: ModelVersion,
    candidate_version: ModelVersion,
    strategy: str = Rollout.Strategy.CANARY,
    stages: list[int] | None = None,
    template: ChecklistTemplate | None = None,
    with_checklist: bool = True,
    executor_kind: str = "gateway",
    executor_config: dict[str, Any] | None = None,
    max_error_rate_increase: float = 2.0,
    min_requests: int = 50,
    window: timedelta = timedelta(minutes=5),
    p95_latency_limit_ms: int | None = 5000,
    advance_every: timedelta | None = None,
) -> Rollout:
    """A pending rollout of ``alias`` from ``stable_version`` to ``candidate_version``, with a
    checklist copied from ``template`` (the default template when not given)."""
    if stable_version.alias_id != alias.pk or candidate_version.alias_id != alias.pk:
        raise RolloutError("Both versions must belong to the alias.")
    if stable_version.pk == candidate_version.pk:
        raise RolloutError("The candidate must be another version than the stable one.")
    if Rollout.objects.filter(alias=alias, state__in=OPEN_STATES).exists():
        raise RolloutError(f"The alias {alias.name} has an unfinished rollout already.")
    if executor_kind not in EXECUTORS:
        raise RolloutError(f"Unknown executor kind {executor_kind!r}.")
    if strategy == Rollout.Strategy.BLUE_GREEN:
        stages = [100]
    elif not stages:
        stages = list(DEFAULT_CANARY_STAGES)
    rollout = Rollout(
        alias=alias,
        stable_version=stable_version,
        candidate_version=candidate_version,
        strategy=strategy,
        stages=list(stages),
        executor_kind=executor_kind,
        executor_config=dict(executor_config or {}),
        max_error_rate_increase=max_error_rate_increase,
        min_requests=min_requests,
        window=window,
        p95_latency_limit_ms=p95_latency_limit_ms,
        advance_every=advance_every,
        created_by=actor.label,
    )
    try:
        rollout.full_clean()
    except ValidationError as exc:
        raise RolloutError(" ".join(exc.messages)) from exc
    with transaction.atomic():
        rollout.save()
        if with_checklist:
            template = template or ChecklistTemplate.objects.filter(is_default=True).first()
            if template is not None:
                checklist = Checklist.objects.create(rollout=rollout, template_name=template.name)
                ChecklistItem.objects.bulk_create(
                    [
                        ChecklistItem(
                            checklist=checklist,
                            phase=i.phase,
                            position=i.position,
                            text=i.text,
                            required=i.required,
                            required_signoffs=i.required_signoffs,
                            automatic_check=i.automatic_check,
                            check_params=dict(i.check_params or {}),
                        )
                        for i in template.items.all()
                    ]
                )
        _step(
            rollout,
            actor=actor,
            action=Action.CREATED,
            reason=f"checklist: {template.name}" if with_checklist and template else "",
        )
    return rollout


def rollout_start(*, actor: Actor, rollout: Rollout, override_reason: str = "") -> Rollout:
    """Canary: the first stage's split. Blue-green: the candidate must pass the executor's
    health probe, then takes all traffic at once (like going past a first canary stage, this
    needs the pre-deployment items done or overridden)."""
    if rollout.state != State.PENDING:
        raise RolloutError(
            f"Only a pending rollout can start (this one is {rollout.get_state_display()})."
        )
    blue_green = rollout.strategy == Rollout.Strategy.BLUE_GREEN
    overriding = (
        _gate(actor=actor, rollout=rollout, override_reason=override_reason) if blue_green else []
    )
    probe = ""
    if blue_green:
        # Outside the transaction: a network call must not hold the database's write lock.
        try:
            ok, probe = executor_for(rollout).health_probe(
                candidate=rollout.candidate_version.version
            )
        except ExecutorError as exc:
            ok, probe = False, str(exc)
        if not ok:
            with transaction.atomic():
                _step(
                    rollout,
                    actor=actor,
                    action=Action.HEALTH_PROBE,
                    reason=f"failed: {probe}",
                    figures={"ok": False},
                )
            raise RolloutError(f"The candidate failed its health probe: {probe}")
    percent = rollout.stages[0]
    now = timezone.now()
    with transaction.atomic():
        before = _snapshot(rollout)
        _claim(
            rollout,
            [State.PENDING],
            state=State.IN_PROGRESS,
            stage_index=0,
            candidate_percent=percent,
            started_at=now,
            stage_started_at=now,
            next_advance_at=_next_advance(rollout, now),
        )
        if overriding:
            _record_override(
                actor=actor, rollout=rollout, open_items=overriding, reason=override_reason
            )
        if probe:
            _step(
                rollout,
                actor=actor,
                action=Action.HEALTH_PROBE,
                reason=f"passed: {probe}",
                figures={"ok": True},
            )
        _split(rollout, percent)
        _step(
            rollout,
            actor=actor,
            action=Action.STARTED,
            before=before,
            from_percent=0,
            to_percent=percent,
        )
    return rollout


def rollout_advance(
    *, actor: Actor, rollout: Rollout, override_reason: str = "", now: datetime | None = None
) -> Rollout:
    """The next canary stage. Past the first stage, required pre-deployment items must be
    done, unless an officer with the override permission gives a reason (audited)."""
    if rollout.state != State.IN_PROGRESS:
        raise RolloutError(
            f"Only a rollout in progress can advance (this one is {rollout.get_state_display()})."
        )
    target = rollout.next_percent
    if target is None:
        raise RolloutError("All traffic is on the candidate already: complete the rollout.")
    overriding = _gate(actor=actor, rollout=rollout, override_reason=override_reason)
    now = now or timezone.now()
    with transaction.atomic():
        before = _snapshot(rollout)
        previous = rollout.candidate_percent
        _claim(
            rollout,
            [State.IN_PROGRESS],
            stage_index=rollout.stage_index + 1,
            candidate_percent=target,
            stage_started_at=now,
            next_advance_at=_next_advance(rollout, now),
        )
        if overriding:
            _record_override(
                actor=actor, rollout=rollout, open_items=overriding, reason=override_reason
            )
        _split(rollout, target)
        _step(
            rollout,
            actor=actor,
            action=Action.ADVANCED,
            before=before,
            from_percent=previous,
            to_percent=target,
        )
    return rollout


def rollout_pause(*, actor: Actor, rollout: Rollout, reason: str = "") -> Rollout:
    """Stop scheduled advancing; the split stays, and so does the automatic guard."""
    with transaction.atomic():
        before = _snapshot(rollout)
        _claim(rollout, [State.IN_PROGRESS], state=State.PAUSED, next_advance_at=None)
        _step(rollout, actor=actor, action=Action.PAUSED, before=before, reason=reason)
    return rollout


def rollout_resume(*, actor: Actor, rollout: Rollout) -> Rollout:
    now = timezone.now()
    with transaction.atomic():
        before = _snapshot(rollout)
        _claim(
            rollout,
            [State.PAUSED],
            state=State.IN_PROGRESS,
            next_advance_at=_next_advance(rollout, now),
        )
        _step(rollout, actor=actor, action=Action.RESUMED, before=before)
    return rollout


def rollout_rollback(
    *,
    actor: Actor,
    rollout: Rollout,
    reason: str = "",
    figures: dict[str, Any] | None = None,
    automatic: bool = False,
    action: str | None = None,
) -> Rollout:
    """All traffic back on the stable version at once; the rollout ends rolled back. An
    automatic rollback also emails the officers (after commit)."""
    if rollout.state not in LIVE_STATES:
        raise RolloutError(
            f"Only a rollout in progress or paused can be rolled back (this one "
            f"is {rollout.get_state_display()})."
        )
    action = action or (Action.AUTO_ROLLED_BACK if automatic else Action.ROLLED_BACK)
    now = timezone.now()
    with transaction.atomic():
        before = _snapshot(rollout)
        previous = rollout.candidate_percent
        _claim(
            rollout,
            LIVE_STATES,
            state=State.ROLLED_BACK,
            candidate_percent=0,
            finished_at=now,
            next_advance_at=None,
        )
        _split(rollout, 0)
        _step(
            rollout,
            actor=actor,
            action=action,
            before=before,
            from_percent=previous,
            to_percent=0,
            reason=reason,
            figures=figures,
        )
        if automatic:
            officers = _alert_recipients()
            transaction.on_commit(lambda: _notify_officers(rollout, reason, figures, officers))
    return rollout


def rollout_switch_back(*, actor: Actor, rollout: Rollout, reason: str = "") -> Rollout:
    """Blue-green's instant switch back to the blue (stable) version."""
    if rollout.strategy != Rollout.Strategy.BLUE_GREEN:
        raise RolloutError("Switch back is for blue-green rollouts; roll a canary back.")
    return rollout_rollback(
        actor=actor, rollout=rollout, reason=reason, action=Action.SWITCHED_BACK
    )


def rollout_complete(*, actor: Actor, rollout: Rollout) -> Rollout:
    """End a rollout whose candidate takes all traffic: the candidate is the stable version
    from now on (the old one keeps weight 0)."""
    if rollout.state not in LIVE_STATES:
        raise RolloutError(
            f"Only a rollout in progress or paused can complete (this one is "
            f"{rollout.get_state_display()})."
        )
    if rollout.candidate_percent != 100:
        raise RolloutError(
            f"The candidate takes {rollout.candidate_percent}% of traffic: "
            "advance it to 100% first."
        )
    with transaction.atomic():
        before = _snapshot(rollout)
        _claim(
            rollout,
            LIVE_STATES,
            state=State.COMPLETED,
            finished_at=timezone.now(),
            next_advance_at=None,
        )
        _step(
            rollout,
            actor=actor,
            action=Action.COMPLETED,
            before=before,
            from_percent=100,
            to_percent=100,
        )
    return rollout


# --- the guard and the schedule (the Celery task calls these) ------------------------------


def rollout_evaluate(*, rollout_id: int, now: datetime | None = None) -> str:
    """Measure a live rollout: roll it back at once if the candidate breaks the guard, else
    advance it if its schedule is due and the stage has enough healthy traffic. Returns what
    happened: rolled_back, advanced, completed, gated, healthy or skipped."""
    now = now or timezone.now()
    rollout = selectors.get_rollout(rollout_id)
    if rollout.state not in LIVE_STATES or rollout.candidate_percent == 0:
        return "skipped"
    figures = selectors.rollout_figures(rollout, now)
    breach = selectors.guard_breach(rollout, figures)
    if breach:
        try:
            rollout_rollback(
                actor=GUARD_ACTOR,
                rollout=rollout,
                reason=breach,
                figures=figures.as_dict(),
                automatic=True,
            )
        except RolloutConflict:
            return "skipped"
        return "rolled_back"
    # A measurement, not a change of governed data: no audit row.
    Rollout.objects.filter(pk=rollout.pk).update(
        last_figures=figures.as_dict(), last_evaluated_at=now
    )
    due = (
        rollout.state == State.IN_PROGRESS
        and rollout.next_advance_at is not None
        and rollout.next_advance_at <= now
    )
    if not due or figures.candidate.requests < rollout.min_requests:
        return "healthy"
    try:
        if rollout.next_percent is None:
            rollout_complete(actor=SCHEDULE_ACTOR, rollout=rollout)
            return "completed"
        rollout_advance(actor=SCHEDULE_ACTOR, rollout=rollout, now=now)
    except RolloutGated:
        return "gated"
    except RolloutConflict:
        return "skipped"
    return "advanced"


def evaluate_live_rollouts(now: datetime | None = None) -> dict[str, int]:
    """Every live rollout once; one failing rollout does not stop the others."""
    outcomes: Counter[str] = Counter()
    ids = list(selectors.rollouts_in_progress().values_list("pk", flat=True))
    for rollout_id in ids:
        try:
            outcomes[rollout_evaluate(rollout_id=rollout_id, now=now)] += 1
        except Exception:
            log.exception("rollout_evaluation_failed", rollout_id=rollout_id)
            outcomes["failed"] += 1
    return dict(outcomes)


def _alert_recipients() -> list[str]:
    """Active staff with the alert permission (directly, through a group, or superusers)."""
    app_label, codename = ALERT_PERMISSION.split(".")
    perm = Permission.objects.filter(content_type__app_label=app_label, codename=codename).first()
    query = Q(is_superuser=True)
    if perm is not None:
        query |= Q(user_permissions=perm) | Q(groups__permissions=perm)
    users = (
        get_user_model()
        .objects.filter(is_active=True, is_staff=True)
        .filter(query)
        .exclude(email="")
        .values_list("email", flat=True)
        .distinct()
    )
    return sorted(set(users))


def _notify_officers(
    rollout: Rollout, reason: str, figures: dict[str, Any] | None, recipients: list[str]
) -> None:
    if not recipients:
        log.warning("rollout_alert_no_recipients", rollout_id=rollout.pk)
        return
    link = settings.LLMP_PUBLIC_BASE_URL + reverse(
        "admin:rollouts_rollout_change", args=[rollout.pk]
    )
    candidate = (figures or {}).get("candidate", {})
    stable = (figures or {}).get("stable", {})
    body = (
        f"The rollout of {rollout.alias.name} from {rollout.stable_version.version} to "
        f"{rollout.candidate_version.version} was rolled back automatically: all traffic is on "
        f"{rollout.stable_version.version} again.\n\n"
        f"Why: {reason}\n\n"
        f"Candidate: {candidate.get('requests')} requests, {candidate.get('errors')} errors "
        f"({candidate.get('error_rate')}%), P95 {candidate.get('p95_ms')} ms\n"
        f"Stable: {stable.get('requests')} requests, {stable.get('errors')} errors "
        f"({stable.get('error_rate')}%), P95 {stable.get('p95_ms')} ms\n"
        f"Window: {(figures or {}).get('since')} to {(figures or {}).get('until')}\n\n"
        f"Timeline: {link}\n"
    )
    try:
        send_mail(
            f"[llmplatform] Rollout of {rollout.alias.name} rolled back automatically",
            body,
            settings.DEFAULT_FROM_EMAIL,
            recipients,
        )
    except Exception:  # the rollback stands; the audit log and the admin still show it
        log.exception("rollout_alert_failed", rollout_id=rollout.pk)


# --- deployment checklists -----------------------------------------------------------------


def checklist_item_sign_off(*, actor: Actor, item: ChecklistItem, note: str = "") -> bool:
    """Sign a manual item off. The same person signing twice counts once: returns False and
    writes nothing the second time."""
    if item.automatic_check:
        raise RolloutError(
            "This item is computed from the rollout and its usage records; it "
            "cannot be signed off by hand."
        )
    if actor.user is None:
        raise RolloutError("Only a signed-in person can sign off.")
    with transaction.atomic():
        _, created = SignOff.objects.get_or_create(
            item=item, user=actor.user, defaults={"note": note[:300]}
        )
        if created:
            rollout = item.checklist.rollout
            count = item.signoffs.count()
            _step(
                rollout,
                actor=actor,
                action=Action.SIGNED_OFF,
                reason=f"{item.text} ({count} of {item.required_signoffs})"
                + (f": {note[:300]}" if note else ""),
            )
    return created


def checklist_record_load_test(
    *, actor: Actor, checklist: Checklist, passed: bool, summary: str
) -> Checklist:
    """Attach the load test's result (the ``load_test_recorded`` item reads it)."""
    summary = (summary or "").strip()
    if not summary:
        raise RolloutError("Describe the load test result (tool, load, figures).")
    with transaction.atomic():
        checklist.load_test_passed = passed
        checklist.load_test_summary = summary[:5000]
        checklist.load_test_recorded_by = actor.label
        checklist.load_test_recorded_at = timezone.now()
        checklist.save(
            update_fields=[
                "load_test_passed",
                "load_test_summary",
                "load_test_recorded_by",
                "load_test_recorded_at",
            ]
        )
        _step(
            checklist.rollout,
            actor=actor,
            action=Action.LOAD_TEST,
            reason=f"{'passed' if passed else 'failed'}: {summary[:300]}",
        )
    return checklist
