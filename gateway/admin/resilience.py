"""Admin for resilience: circuit breakers (live states, recent failures, the officer's forcing
and reset actions, audited through ``gateway.resilience.services``), their history, and the
aliases' fallback chains.

Imported after ``gateway.admin.providers``: it adds the fallback inline to ``ModelAliasAdmin``.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from gateway.admin.providers import ModelAliasAdmin
from gateway.models import AliasFallback, BreakerEvent, DeploymentBreaker
from gateway.resilience import services
from gateway.resilience.breaker import BreakerSnapshot, breaker_store
from gateway.resilience.policy import AUTO, FORCED_CLOSED, FORCED_OPEN, policy_for
from llmplatform.actors import Actor
from llmplatform.admin.readonly import ReadOnlyAdmin

_STATE_LABELS = {"closed": "closed", "open": "OPEN", "half_open": "half-open (probing)"}


def _attach_states(deployments) -> None:
    """Every listed deployment's live state, in one round trip to the breaker store."""
    deployments = list(deployments)
    policies = {d.name: policy_for(d, connect_timeout=0, read_timeout=0) for d in deployments}
    states = breaker_store().snapshot(policies) if policies else {}
    for deployment in deployments:
        deployment.breaker_snapshot = states[deployment.name]


def _state(obj) -> BreakerSnapshot:
    if not hasattr(obj, "breaker_snapshot"):
        _attach_states([obj])
    return obj.breaker_snapshot


def open_breaker_ids(deployments) -> list[int]:
    """Ids of the deployments whose breaker keeps traffic away now: forced open, or open or
    probing (half-open) and not forced closed. One round trip to the breaker store."""
    deployments = list(deployments)
    _attach_states(deployments)
    return [
        d.pk
        for d in deployments
        if d.breaker_override == FORCED_OPEN
        or (d.breaker_override != FORCED_CLOSED and d.breaker_snapshot.state != "closed")
    ]


class BreakerStateFilter(admin.SimpleListFilter):
    """Live state (from the breaker store), for "which breakers are open now?"."""

    title = "live state"
    parameter_name = "live_state"

    def lookups(self, request, model_admin):
        return [("open", "open or probing"), ("closed", "closed")]

    def queryset(self, request, queryset):
        if self.value() not in ("open", "closed"):
            return queryset
        ids = open_breaker_ids(queryset)
        if self.value() == "open":
            return queryset.filter(pk__in=ids)
        return queryset.exclude(pk__in=ids)


@admin.register(DeploymentBreaker)
class DeploymentBreakerAdmin(admin.ModelAdmin):
    """One row per deployment. States are read live from the breaker store (Redis when
    configured), once per page; nothing here is edited directly: the actions force or reset."""

    list_select_related = ["provider"]
    list_filter = [BreakerStateFilter, "breaker_override", "provider"]
    search_fields = ["name", "model"]
    actions = ["force_open", "force_closed", "force_auto", "reset"]
    readonly_fields = [
        "name",
        "provider",
        "model",
        "breaker_override",
        "state",
        "consecutive_failures",
        "window",
        "retry_in",
        "backend",
        "thresholds",
        "recent_failures",
        "history",
    ]
    fields = readonly_fields  # type: ignore[assignment]  # django-stubs: invariant list types

    list_display = [
        "name",
        "provider",
        "state",
        "consecutive_failures",
        "window",
        "retry_in",
        "last_failure",
        "breaker_override",
    ]

    def get_changelist_instance(self, request):
        changelist = super().get_changelist_instance(request)
        _attach_states(changelist.result_list)  # the page's rows, rendered from the same cache
        return changelist

    # Columns and read-only detail ---------------------------------------------------------------

    @admin.display(description="state")
    def state(self, obj):
        state = _state(obj).state
        return _STATE_LABELS.get(state, state)

    @admin.display(description="consecutive failures")
    def consecutive_failures(self, obj):
        return _state(obj).consecutive_failures

    @admin.display(description="failed / requests in window")
    def window(self, obj):
        snapshot = _state(obj)
        return f"{snapshot.window_failures} / {snapshot.window_requests}"

    @admin.display(description="probe in")
    def retry_in(self, obj):
        retry_in = _state(obj).retry_in
        return f"{retry_in:.0f} s" if retry_in is not None else "—"

    @admin.display(description="last failure")
    def last_failure(self, obj):
        failures = _state(obj).recent_failures
        if not failures:
            return "—"
        at, code = failures[0]
        return f"{timezone.localtime(at):%Y-%m-%d %H:%M:%S} {code}"

    @admin.display(description="state kept in")
    def backend(self, obj):
        backend = _state(obj).backend
        return {
            "redis": "Redis (shared by all processes)",
            "process": "this process only (no REDIS_URL)",
        }.get(backend, backend)

    @admin.display(description="opens on")
    def thresholds(self, obj):
        return (
            f"{obj.breaker_failure_threshold} consecutive failures, or "
            f"{obj.breaker_failure_rate:.0%} of at least {obj.breaker_min_requests} "
            f"requests in {obj.breaker_window_seconds:g} s; probes after "
            f"{obj.breaker_recovery_seconds:g} s"
        )

    @admin.display(description="recent failures")
    def recent_failures(self, obj):
        failures = _state(obj).recent_failures
        if not failures:
            return "—"
        return format_html(
            "<ul>{}</ul>",
            format_html_join(
                "",
                "<li>{} {}</li>",
                ((f"{timezone.localtime(at):%Y-%m-%d %H:%M:%S}", code) for at, code in failures),
            ),
        )

    @admin.display(description="state changes")
    def history(self, obj):
        events = BreakerEvent.objects.filter(deployment=obj.name)[:20]
        if not events:
            return "—"
        return format_html(
            "<ul>{}</ul>",
            format_html_join(
                "",
                "<li>{} {} {} {}</li>",
                (
                    (
                        f"{timezone.localtime(e.created_at):%Y-%m-%d %H:%M:%S}",
                        e.get_kind_display(),
                        e.error_code,
                        e.actor,
                    )
                    for e in events
                ),
            ),
        )

    # Permissions: list and actions yes; add, edit and delete no -------------------------------

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        # The actions need change permission; a single breaker's page is read-only.
        return obj is None and super().has_change_permission(request, obj)

    # Actions ------------------------------------------------------------------------------------

    def _force(self, request, queryset, override: str, label: str) -> None:
        for deployment in queryset:
            services.breaker_force(
                actor=Actor.for_user(request.user), deployment=deployment, override=override
            )
        self.message_user(request, f"{label}: {queryset.count()} breaker(s).", messages.SUCCESS)

    @admin.action(description="Force open (send no traffic)", permissions=["change"])
    def force_open(self, request, queryset):
        self._force(request, queryset, FORCED_OPEN, "Forced open")

    @admin.action(description="Force closed (ignore failures)", permissions=["change"])
    def force_closed(self, request, queryset):
        self._force(request, queryset, FORCED_CLOSED, "Forced closed")

    @admin.action(description="Automatic (remove the override)", permissions=["change"])
    def force_auto(self, request, queryset):
        self._force(request, queryset, AUTO, "Back to automatic")

    @admin.action(description="Reset (close and clear counts)", permissions=["change"])
    def reset(self, request, queryset):
        for deployment in queryset:
            services.breaker_reset(actor=Actor.for_user(request.user), deployment=deployment)
        self.message_user(request, f"Reset {queryset.count()} breaker(s).", messages.SUCCESS)


@admin.register(BreakerEvent)
class BreakerEventAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "deployment", "kind", "error_code", "actor"]
    list_filter = ["kind", "deployment"]
    date_hierarchy = "created_at"
    show_full_result_count = False


class AliasFallbackInline(admin.TabularInline):
    model = AliasFallback
    extra = 0
    fields = ["position", "deployment"]
    ordering = ["position", "id"]
    verbose_name = "fallback deployment"
    verbose_name_plural = "fallbacks (tried in order when the routed deployment fails)"


ModelAliasAdmin.inlines = [*ModelAliasAdmin.inlines, AliasFallbackInline]
