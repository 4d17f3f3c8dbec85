"""Admin for rollouts: the list (with state filters), each rollout's page (its timeline, its
deployment checklist with sign-off buttons, the actions and the checklist override with a
reason), and the checklist templates. Every action calls a service, which audits it; the
rollout's own fields are never edited here (the page is read-only)."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count
from django.http import HttpRequest, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse

from deployments.rollouts import checks, services
from deployments.rollouts.executors import ExecutorError
from deployments.rollouts.executors.registry import GATEWAY, executor_choices, executor_for
from deployments.rollouts.models import (
    LIVE_STATES,
    OPEN_STATES,
    ChecklistItem,
    ChecklistTemplate,
    ChecklistTemplateItem,
    Rollout,
)
from gateway.models import ModelVersion
from llmplatform.actors import Actor
from llmplatform.admin.audit import AuditedModelAdmin
from llmplatform.admin.permissions import requires

State = Rollout.State
CHANGE_PERMISSION = "rollouts.change_rollout"
SIGN_OFF_PERMISSION = "rollouts.add_signoff"


class OpenFilter(admin.SimpleListFilter):
    title = "open"
    parameter_name = "open"

    def lookups(self, request, model_admin):
        return [
            ("live", "taking traffic (in progress or paused)"),
            ("open", "not finished"),
            ("finished", "finished"),
        ]

    def queryset(self, request, queryset):
        if self.value() == "live":
            return queryset.filter(state__in=LIVE_STATES)
        if self.value() == "open":
            return queryset.filter(state__in=OPEN_STATES)
        if self.value() == "finished":
            return queryset.exclude(state__in=OPEN_STATES)
        return queryset


class RolloutCreateForm(forms.ModelForm):
    template = forms.ModelChoiceField(
        ChecklistTemplate.objects.all(),
        required=False,
        help_text="The deployment checklist copied into this rollout (empty: the default "
        "template).",
    )
    executor_kind = forms.ChoiceField(choices=executor_choices, initial=GATEWAY)

    class Meta:
        model = Rollout
        fields = [
            "alias",
            "stable_version",
            "candidate_version",
            "strategy",
            "stages",
            "max_error_rate_increase",
            "min_requests",
            "window",
            "p95_latency_limit_ms",
            "advance_every",
            "executor_kind",
            "executor_config",
        ]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        versions = ModelVersion.objects.select_related("alias").order_by("alias__name", "version")
        self.fields["stable_version"].queryset = versions
        self.fields["candidate_version"].queryset = versions
        self.fields["stages"].required = False
        self.fields["template"].initial = ChecklistTemplate.objects.filter(is_default=True).first()

    def clean(self):
        data = super().clean()
        alias, stable, candidate = (
            data.get("alias"),
            data.get("stable_version"),
            data.get("candidate_version"),
        )
        if alias and stable and stable.alias_id != alias.pk:
            self.add_error("stable_version", "This version belongs to another alias.")
        if alias and candidate and candidate.alias_id != alias.pk:
            self.add_error("candidate_version", "This version belongs to another alias.")
        if stable and candidate and stable.pk == candidate.pk:
            self.add_error("candidate_version", "Choose another version than the stable one.")
        if alias and Rollout.objects.filter(alias=alias, state__in=OPEN_STATES).exists():
            self.add_error("alias", "This alias has an unfinished rollout already.")
        return data


class ReasonForm(forms.Form):
    reason = forms.CharField(
        max_length=2000, required=False, widget=forms.Textarea(attrs={"rows": 2, "cols": 60})
    )


class LoadTestForm(forms.Form):
    passed = forms.TypedChoiceField(
        choices=[("1", "passed"), ("0", "failed")], coerce=lambda v: v == "1"
    )
    summary = forms.CharField(max_length=5000, widget=forms.Textarea(attrs={"rows": 3, "cols": 60}))


# name -> (service call, success message, needs a reason)
def _start(request, rollout, reason):
    return services.rollout_start(
        actor=Actor.for_user(request.user), rollout=rollout, override_reason=reason
    )


def _advance(request, rollout, reason):
    return services.rollout_advance(
        actor=Actor.for_user(request.user), rollout=rollout, override_reason=reason
    )


LABELS = {
    "start": "Start",
    "advance": "Advance to the next stage",
    "pause": "Pause",
    "resume": "Resume",
    "switch_back": "Switch back",
    "rollback": "Roll back",
    "complete": "Complete",
}

ACTIONS = {
    "start": (_start, "Started"),
    "advance": (_advance, "Advanced"),
    "pause": (
        lambda r, o, reason: services.rollout_pause(
            actor=Actor.for_user(r.user), rollout=o, reason=reason
        ),
        "Paused",
    ),
    "resume": (
        lambda r, o, reason: services.rollout_resume(actor=Actor.for_user(r.user), rollout=o),
        "Resumed",
    ),
    "switch_back": (
        lambda r, o, reason: services.rollout_switch_back(
            actor=Actor.for_user(r.user), rollout=o, reason=reason or "switched back from the admin"
        ),
        "Switched back to the stable version",
    ),
    "rollback": (
        lambda r, o, reason: services.rollout_rollback(
            actor=Actor.for_user(r.user), rollout=o, reason=reason or "rolled back from the admin"
        ),
        "Rolled back to the stable version",
    ),
    "complete": (
        lambda r, o, reason: services.rollout_complete(actor=Actor.for_user(r.user), rollout=o),
        "Completed",
    ),
}


def available_actions(rollout: Rollout) -> list[str]:
    state = rollout.state
    if state == State.PENDING:
        return ["start"]
    result = []
    if state == State.IN_PROGRESS:
        if rollout.next_percent is not None:
            result.append("advance")
        result.append("pause")
    if state == State.PAUSED:
        result.append("resume")
    if state in LIVE_STATES:
        if rollout.candidate_percent == 100:
            result.append("complete")
        result.append(
            "switch_back" if rollout.strategy == Rollout.Strategy.BLUE_GREEN else "rollback"
        )
    return result


@admin.register(Rollout)
class RolloutAdmin(admin.ModelAdmin):
    list_display = ["__str__", "state", "split", "stage", "guard", "started_at", "finished_at"]
    list_filter = [OpenFilter, "state", "strategy", "executor_kind"]
    list_select_related = ["alias", "stable_version", "candidate_version"]
    search_fields = ["alias__name", "stable_version__version", "candidate_version__version"]
    date_hierarchy = "created_at"
    show_full_result_count = False
    actions = [
        "start_selected",
        "advance_selected",
        "pause_selected",
        "switch_back_selected",
        "rollback_selected",
        "complete_selected",
    ]
    readonly_fields = [
        "alias",
        "stable_version",
        "candidate_version",
        "strategy",
        "stages",
        "state",
        "split",
        "stage",
        "guard_settings",
        "advance_every",
        "next_advance_at",
        "executor_kind",
        "executor_config",
        "live_split",
        "gate_overridden_by",
        "gate_override_reason",
        "created_by",
        "created_at",
        "started_at",
        "finished_at",
        "last_evaluated_at",
    ]
    change_form_template = "admin/rollouts/rollout/change_form.html"

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = RolloutCreateForm
        return super().get_form(request, obj, change, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is None:
            return [
                *RolloutCreateForm.Meta.fields[:5],
                "template",
                *RolloutCreateForm.Meta.fields[5:],
            ]
        return self.readonly_fields

    def get_readonly_fields(self, request, obj=None):
        return self.readonly_fields if obj is not None else []

    def has_delete_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        # The list's actions need the change permission; a rollout's own fields never change
        # here (its page is read-only; its buttons call the services).
        return obj is None and super().has_change_permission(request)

    def save_model(self, request, obj, form, change):
        if change:
            raise PermissionDenied
        data = form.cleaned_data
        try:
            created = services.rollout_create(
                actor=Actor.for_user(request.user),
                alias=data["alias"],
                stable_version=data["stable_version"],
                candidate_version=data["candidate_version"],
                strategy=data["strategy"],
                stages=data.get("stages") or None,
                template=data.get("template"),
                executor_kind=data["executor_kind"],
                executor_config=data.get("executor_config") or {},
                max_error_rate_increase=data["max_error_rate_increase"],
                min_requests=data["min_requests"],
                window=data["window"],
                p95_latency_limit_ms=data.get("p95_latency_limit_ms"),
                advance_every=data.get("advance_every"),
            )
        except services.RolloutError as exc:
            # clean() checks what a form can; a race (another rollout created meanwhile) ends
            # here and is shown, not raised.
            self.message_user(request, str(exc), messages.ERROR)
            raise PermissionDenied(str(exc)) from exc
        obj.pk = created.pk
        obj.refresh_from_db()

    # Columns ------------------------------------------------------------------------------------

    @admin.display(description="split")
    def split(self, obj: Rollout) -> str:
        return (
            f"{obj.stable_version.version} {100 - obj.candidate_percent}% / "
            f"{obj.candidate_version.version} {obj.candidate_percent}%"
        )

    @admin.display(description="stage")
    def stage(self, obj: Rollout) -> str:
        if obj.stage_index < 0:
            return f"not started ({' → '.join(f'{s}%' for s in obj.stages)})"
        return f"{obj.stage_index + 1} of {len(obj.stages)}"

    @admin.display(description="guard (last check)")
    def guard(self, obj: Rollout) -> str:
        figures = obj.last_figures or {}
        candidate, stable = figures.get("candidate"), figures.get("stable")
        if not candidate or not stable:
            return "—"
        p95 = candidate.get("p95_ms")
        return (
            f"errors {candidate['error_rate']}% vs {stable['error_rate']}% "
            f"({candidate['requests']} req); P95 {p95 if p95 is not None else '—'} ms"
        )

    @admin.display(description="guard settings")
    def guard_settings(self, obj: Rollout) -> str:
        latency = f"; P95 over {obj.p95_latency_limit_ms} ms" if obj.p95_latency_limit_ms else ""
        return (
            f"roll back when the candidate's error rate exceeds the stable one's by more "
            f"than {obj.max_error_rate_increase:g} points{latency}, with at least "
            f"{obj.min_requests} candidate requests in {obj.window}"
        )

    @admin.display(description="split as the executor reports it")
    def live_split(self, obj: Rollout):
        if obj.executor_kind != GATEWAY:
            return "— (not queried on page load)"
        try:
            weights = executor_for(obj).describe()["weights"]
        except ExecutorError as exc:
            return str(exc)
        return ", ".join(f"{v}: {w}" for v, w in sorted(weights.items()))

    # The rollout page: timeline, checklist, buttons ----------------------------------------------

    def change_view(self, request, object_id, form_url="", extra_context=None):
        rollout = self.get_object(request, object_id)
        extra = dict(extra_context or {})
        if rollout is not None:
            checklist = getattr(rollout, "checklist", None)
            statuses = checks.checklist_status(checklist) if checklist is not None else []
            gate_open = (
                [s for s in statuses if s.item.phase == "pre" and s.item.required and not s.done]
                if not rollout.gate_overridden_by
                else []
            )
            may_change = request.user.has_perm(CHANGE_PERMISSION)
            names = available_actions(rollout) if may_change else []
            # The action the checklist holds back: a blue-green start, or a canary's advance
            # past its first stage.
            gate_action = next(
                (
                    n
                    for n in names
                    if n == "advance"
                    or (n == "start" and rollout.strategy == Rollout.Strategy.BLUE_GREEN)
                ),
                None,
            )
            extra.update(
                {
                    "rollout": rollout,
                    "steps": rollout.steps.all(),
                    "checklist": checklist,
                    "statuses": statuses,
                    "phases": [
                        (code, label, [s for s in statuses if s.item.phase == code])
                        for code, label in ChecklistItem._meta.get_field("phase").choices
                    ],
                    "gate_open": gate_open,
                    "actions": [(name, LABELS[name]) for name in names],
                    "gate_action": gate_action,
                    "may_change": may_change,
                    "may_override": request.user.has_perm(services.OVERRIDE_PERMISSION),
                    "may_sign": request.user.has_perm(SIGN_OFF_PERMISSION),
                    "reason_form": ReasonForm(),
                    "load_test_form": LoadTestForm(),
                    "user_name": request.user.get_username(),
                }
            )
        return super().change_view(request, object_id, form_url, extra)

    def get_urls(self):
        wrap = self.admin_site.admin_view
        change, sign_off = requires(CHANGE_PERMISSION), requires(SIGN_OFF_PERMISSION)
        return [
            path(
                "<int:pk>/act/<str:name>/",
                wrap(change(self.action_view)),
                name="rollouts_rollout_act",
            ),
            path(
                "<int:pk>/sign-off/<int:item_pk>/",
                wrap(sign_off(self.sign_off_view)),
                name="rollouts_rollout_sign_off",
            ),
            path(
                "<int:pk>/load-test/",
                wrap(change(self.load_test_view)),
                name="rollouts_rollout_load_test",
            ),
            *super().get_urls(),
        ]

    def _back(self, pk: int) -> HttpResponseRedirect:
        return HttpResponseRedirect(reverse("admin:rollouts_rollout_change", args=[pk]))

    def action_view(self, request: HttpRequest, pk: int, name: str):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not request.user.has_perm(CHANGE_PERMISSION) or name not in ACTIONS:
            raise PermissionDenied
        rollout = get_object_or_404(
            Rollout.objects.select_related("alias", "stable_version", "candidate_version"), pk=pk
        )
        form = ReasonForm(request.POST)
        reason = form.cleaned_data["reason"] if form.is_valid() else ""
        call, done = ACTIONS[name]
        try:
            call(request, rollout, reason)
        except services.RolloutError as exc:
            self.message_user(request, str(exc), messages.ERROR)
        else:
            self.message_user(
                request,
                f"{done}: {rollout} — the candidate takes {rollout.candidate_percent}% of traffic.",
                messages.SUCCESS,
            )
        return self._back(pk)

    def sign_off_view(self, request: HttpRequest, pk: int, item_pk: int):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not request.user.has_perm(SIGN_OFF_PERMISSION):
            raise PermissionDenied
        item = get_object_or_404(
            ChecklistItem.objects.select_related("checklist__rollout"),
            pk=item_pk,
            checklist__rollout_id=pk,
        )
        try:
            created = services.checklist_item_sign_off(
                actor=Actor.for_user(request.user), item=item, note=request.POST.get("note", "")
            )
        except services.RolloutError as exc:
            self.message_user(request, str(exc), messages.ERROR)
        else:
            if created:
                self.message_user(request, f"Signed off: {item.text}.", messages.SUCCESS)
            else:
                self.message_user(
                    request,
                    f"You signed “{item.text}” off already; the same person counts once.",
                    messages.WARNING,
                )
        return self._back(pk)

    def load_test_view(self, request: HttpRequest, pk: int):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not request.user.has_perm(CHANGE_PERMISSION):
            raise PermissionDenied
        rollout = get_object_or_404(Rollout, pk=pk)
        checklist = getattr(rollout, "checklist", None)
        form = LoadTestForm(request.POST)
        if checklist is None:
            self.message_user(request, "This rollout has no checklist.", messages.ERROR)
        elif not form.is_valid():
            self.message_user(
                request, "Give the result (passed or failed) and a summary.", messages.ERROR
            )
        else:
            services.checklist_record_load_test(
                actor=Actor.for_user(request.user),
                checklist=checklist,
                passed=form.cleaned_data["passed"],
                summary=form.cleaned_data["summary"],
            )
            self.message_user(request, "Load test result recorded.", messages.SUCCESS)
        return self._back(pk)

    # List actions -------------------------------------------------------------------------------

    def _run(self, request, queryset, name: str) -> None:
        call, done = ACTIONS[name]
        succeeded = 0
        for rollout in queryset.select_related("alias", "stable_version", "candidate_version"):
            try:
                call(request, rollout, "")
            except services.RolloutError as exc:
                self.message_user(request, f"{rollout}: {exc}", messages.WARNING)
            else:
                succeeded += 1
        self.message_user(
            request,
            f"{done}: {succeeded} rollout(s).",
            messages.SUCCESS if succeeded else messages.WARNING,
        )

    @admin.action(description="Start selected rollouts", permissions=["change"])
    def start_selected(self, request, queryset):
        self._run(request, queryset, "start")

    @admin.action(
        description="Advance selected canaries to their next stage", permissions=["change"]
    )
    def advance_selected(self, request, queryset):
        self._run(request, queryset, "advance")

    @admin.action(
        description="Pause selected rollouts (stop scheduled advancing)", permissions=["change"]
    )
    def pause_selected(self, request, queryset):
        self._run(request, queryset, "pause")

    @admin.action(description="Switch back selected blue-green rollouts", permissions=["change"])
    def switch_back_selected(self, request, queryset):
        self._run(request, queryset, "switch_back")

    @admin.action(
        description="Roll back selected rollouts (all traffic to stable)", permissions=["change"]
    )
    def rollback_selected(self, request, queryset):
        self._run(request, queryset, "rollback")

    @admin.action(description="Complete selected rollouts", permissions=["change"])
    def complete_selected(self, request, queryset):
        self._run(request, queryset, "complete")


class ChecklistTemplateItemInline(admin.TabularInline):
    model = ChecklistTemplateItem
    extra = 0
    fields = [
        "position",
        "phase",
        "text",
        "required",
        "required_signoffs",
        "automatic_check",
        "check_params",
    ]
    ordering = ["position", "id"]


@admin.register(ChecklistTemplate)
class ChecklistTemplateAdmin(AuditedModelAdmin):
    list_display = ["name", "is_default", "item_count", "updated_at"]
    inlines = [ChecklistTemplateItemInline]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(item_total=Count("items"))

    @admin.display(description="items", ordering="item_total")
    def item_count(self, obj) -> int:
        return obj.item_total
