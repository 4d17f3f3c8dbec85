"""Model rollouts (blue-green and canary) and the deployment checklists that gate them.

A rollout moves an alias's traffic from its stable ``gateway.ModelVersion`` to a candidate one,
in stages, through an executor (``executors``); every step is kept as a ``RolloutStep`` (the
admin's timeline) and in the audit log. Rows change only through ``services``.
"""

from __future__ import annotations

import itertools
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from gateway.models import ModelAlias, ModelVersion

DEFAULT_CANARY_STAGES = [5, 25, 50, 100]


def validate_stages(value) -> None:
    """Candidate percentages, strictly increasing, each 1-100, ending at 100."""
    if not isinstance(value, list) or not value:
        raise ValidationError(
            "Stages must be a non-empty list of percentages, e.g. [5, 25, 50, 100]."
        )
    if any(not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 100 for v in value):
        raise ValidationError("Each stage must be a whole percentage from 1 to 100.")
    if any(b <= a for a, b in itertools.pairwise(value)):
        raise ValidationError("Stages must increase.")
    if value[-1] != 100:
        raise ValidationError("The last stage must be 100 (all traffic on the candidate).")


class Rollout(models.Model):
    class Strategy(models.TextChoices):
        BLUE_GREEN = "blue_green", "blue-green"
        CANARY = "canary", "canary"

    class State(models.TextChoices):
        PENDING = "pending", "pending"
        IN_PROGRESS = "in_progress", "in progress"
        PAUSED = "paused", "paused"
        COMPLETED = "completed", "completed"
        ROLLED_BACK = "rolled_back", "rolled back"

    alias = models.ForeignKey(ModelAlias, on_delete=models.PROTECT, related_name="rollouts")
    stable_version = models.ForeignKey(
        ModelVersion,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The version serving now (blue); traffic returns here on rollback.",
    )
    candidate_version = models.ForeignKey(
        ModelVersion,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The new version (green / canary).",
    )
    strategy = models.CharField(max_length=16, choices=Strategy.choices, default=Strategy.CANARY)
    stages = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_stages],
        help_text="Canary: the candidate's percentage at each stage (default 5, 25, 50, 100). "
        "Blue-green: always [100].",
    )
    stage_index = models.SmallIntegerField(
        default=-1, help_text="Index into stages of the split in force; -1 before the start."
    )
    candidate_percent = models.PositiveSmallIntegerField(default=0)
    state = models.CharField(
        max_length=16, choices=State.choices, default=State.PENDING, db_index=True
    )
    # Guard (automatic rollback).
    max_error_rate_increase = models.FloatField(
        default=2.0,
        validators=[MinValueValidator(0.0), MaxValueValidator(100.0)],
        help_text="Percentage points: roll back when the candidate's error rate exceeds the "
        "stable version's by more than this (default 2).",
    )
    min_requests = models.PositiveIntegerField(
        default=50,
        validators=[MinValueValidator(1)],
        help_text="Candidate requests in the window before the guard judges (and before a "
        "scheduled stage advances).",
    )
    window = models.DurationField(
        default=timedelta(minutes=5),
        help_text="The window error rates and P95 latency are measured over.",
    )
    p95_latency_limit_ms = models.PositiveIntegerField(
        null=True,
        blank=True,
        default=5000,
        help_text="Roll back when the candidate's P95 latency exceeds this (ms); empty = no "
        "latency guard (default 5 s).",
    )
    advance_every = models.DurationField(
        null=True,
        blank=True,
        help_text="Advance a healthy canary to its next stage this long after the last change; "
        "empty = by hand only.",
    )
    next_advance_at = models.DateTimeField(null=True, blank=True)
    # Where the split is carried out (see executors/).
    executor_kind = models.CharField(max_length=32, default="gateway")
    executor_config = models.JSONField(default=dict, blank=True)
    # Checklist gate override (see services.rollout_advance).
    gate_overridden_by = models.CharField(max_length=200, blank=True)
    gate_override_reason = models.TextField(blank=True)
    # Bumped on every transition: services claim a rollout with a conditional UPDATE on it.
    revision = models.PositiveIntegerField(default=0)
    last_figures = models.JSONField(
        default=dict, blank=True, help_text="The guard's last measurement."
    )
    last_evaluated_at = models.DateTimeField(null=True, blank=True)
    created_by = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    stage_started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [
            ("override_checklist_gate", "Can advance a rollout past open pre-deployment items"),
            ("receive_rollout_alerts", "Receives rollout alerts (automatic rollbacks) by email"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["alias"],
                condition=models.Q(state__in=["pending", "in_progress", "paused"]),
                name="one_open_rollout_per_alias",
            ),
        ]

    def __str__(self) -> str:
        return (
            f"{self.alias.name}: {self.stable_version.version} -> "
            f"{self.candidate_version.version} ({self.get_strategy_display()})"
        )

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_STATES

    @property
    def stable_percent(self) -> int:
        return 100 - self.candidate_percent

    @property
    def next_percent(self) -> int | None:
        if self.stage_index + 1 < len(self.stages):
            return self.stages[self.stage_index + 1]
        return None


OPEN_STATES = (Rollout.State.PENDING, Rollout.State.IN_PROGRESS, Rollout.State.PAUSED)
LIVE_STATES = (Rollout.State.IN_PROGRESS, Rollout.State.PAUSED)


class RolloutStep(models.Model):
    """One entry of a rollout's timeline."""

    class Action(models.TextChoices):
        CREATED = "created", "created"
        HEALTH_PROBE = "health_probe", "health probe"
        STARTED = "started", "started"
        ADVANCED = "advanced", "advanced"
        PAUSED = "paused", "paused"
        RESUMED = "resumed", "resumed"
        GATE_OVERRIDDEN = "gate_overridden", "checklist gate overridden"
        SWITCHED_BACK = "switched_back", "switched back"
        ROLLED_BACK = "rolled_back", "rolled back"
        AUTO_ROLLED_BACK = "auto_rolled_back", "rolled back automatically"
        COMPLETED = "completed", "completed"
        SIGNED_OFF = "signed_off", "checklist item signed off"
        LOAD_TEST = "load_test", "load test result recorded"

    rollout = models.ForeignKey(Rollout, on_delete=models.CASCADE, related_name="steps")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.CharField(max_length=200)
    action = models.CharField(max_length=32, choices=Action.choices)
    from_percent = models.PositiveSmallIntegerField(null=True, blank=True)
    to_percent = models.PositiveSmallIntegerField(null=True, blank=True)
    reason = models.TextField(blank=True)
    figures = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.get_action_display()} by {self.actor}"


# --- Deployment checklists ------------------------------------------------------------------


class Phase(models.TextChoices):
    PRE = "pre", "pre-deployment"
    DEPLOY = "deploy", "deployment"
    POST = "post", "post-deployment"


class AutomaticCheck(models.TextChoices):
    """Items computed from the rollout and its usage records, never typed in (see checks.py)."""

    NONE = "", "manual (sign-offs)"
    LOAD_TEST_RECORDED = "load_test_recorded", "a passing load test result is recorded"
    CANARY_STARTED = "canary_started", "the candidate took its first stage of traffic"
    MONITORED_FOR = "monitored_for", "the candidate served for N minutes without rollback"
    FULL_ROLLOUT = "full_rollout", "all traffic on the candidate"
    ERROR_RATE_BELOW = "error_rate_below", "candidate error rate below a limit"
    P95_LATENCY_BELOW = "p95_latency_below", "candidate P95 latency below a limit"
    COST_WITHIN_BAND = "cost_within_band", "cost per hour within a band of the week before"


class ChecklistTemplate(models.Model):
    name = models.CharField(max_length=100, unique=True)
    description = models.CharField(max_length=300, blank=True)
    is_default = models.BooleanField(
        default=False, help_text="Used for new rollouts (only one template can be the default)."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_default"],
                condition=models.Q(is_default=True),
                name="one_default_checklist_template",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class ItemFields(models.Model):
    phase = models.CharField(max_length=8, choices=Phase.choices)
    position = models.PositiveSmallIntegerField(default=0)
    text = models.CharField(max_length=300)
    required = models.BooleanField(
        default=True,
        help_text="Open required pre-deployment items hold the rollout at its first stage.",
    )
    required_signoffs = models.PositiveSmallIntegerField(
        default=1,
        validators=[MaxValueValidator(10)],
        help_text="Distinct people who must sign off (manual items).",
    )
    automatic_check = models.CharField(
        max_length=32,
        choices=AutomaticCheck.choices,
        blank=True,
        default="",
        help_text="Automatic items are computed from the rollout and usage records, not signed.",
    )
    check_params = models.JSONField(
        default=dict,
        blank=True,
        help_text='Limits of an automatic check, e.g. {"max_percent": 0.5}, {"max_ms": 5000}, '
        '{"band_percent": 50}, {"minutes": 30}.',
    )

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return self.text

    def clean(self) -> None:
        if not self.automatic_check and self.required_signoffs < 1:
            raise ValidationError(
                {"required_signoffs": "A manual item needs at least one sign-off."}
            )
        if not isinstance(self.check_params, dict):
            raise ValidationError({"check_params": "Must be a JSON object."})


class ChecklistTemplateItem(ItemFields):
    template = models.ForeignKey(ChecklistTemplate, on_delete=models.CASCADE, related_name="items")

    class Meta:
        ordering = ["template", "position", "id"]


class Checklist(models.Model):
    """A rollout's copy of a template (later template edits do not change it)."""

    rollout = models.OneToOneField(Rollout, on_delete=models.CASCADE, related_name="checklist")
    template_name = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # The load test's result, attached by an officer (checked by "load_test_recorded").
    load_test_passed = models.BooleanField(null=True, blank=True)
    load_test_summary = models.TextField(blank=True)
    load_test_recorded_by = models.CharField(max_length=200, blank=True)
    load_test_recorded_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"checklist of {self.rollout}"


class ChecklistItem(ItemFields):
    checklist = models.ForeignKey(Checklist, on_delete=models.CASCADE, related_name="items")

    class Meta:
        ordering = ["checklist", "position", "id"]


class SignOff(models.Model):
    item = models.ForeignKey(ChecklistItem, on_delete=models.CASCADE, related_name="signoffs")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    note = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            # The same person signing twice counts once.
            models.UniqueConstraint(fields=["item", "user"], name="one_signoff_per_person"),
        ]

    def __str__(self) -> str:
        return f"{self.user} on {self.item}"
