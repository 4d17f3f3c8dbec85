"""Admin for data-subject requests: officers see what is overdue or due soon and approve,
reject or extend requests (each through its service, so each step is audited). Requests and
receipts are read-only here: they change only through those actions."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, TypedDict

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse

from llmplatform.actors import Actor
from privacy.models import ErasureReceipt, SubjectRequest
from privacy.subject_requests import deadlines
from privacy.subject_requests import services as request_services

if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations

State = SubjectRequest.State


class _Due(TypedDict):
    """What ``SubjectRequestAdmin.get_queryset`` adds to each request."""

    effective_due: datetime | None


class OverdueFilter(admin.SimpleListFilter):
    title = "deadline"
    parameter_name = "deadline"

    def lookups(self, request, model_admin):
        return [("overdue", "overdue"), ("due7", "due within 7 days")]

    def queryset(self, request, queryset):
        if self.value() == "overdue":
            return queryset.filter(deadlines.overdue_q())
        if self.value() == "due7":
            return queryset.filter(deadlines.due_soon_q(7))
        return queryset


class OpenFilter(admin.SimpleListFilter):
    title = "open"
    parameter_name = "open"

    def lookups(self, request, model_admin):
        return [("yes", "open"), ("no", "closed")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(state__in=deadlines.OPEN_STATES)
        if self.value() == "no":
            return queryset.exclude(state__in=deadlines.OPEN_STATES)
        return queryset


class ReasonForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 4, "cols": 60}), max_length=2000)


class ExtendForm(ReasonForm):
    months = forms.TypedChoiceField(
        coerce=int,
        initial=deadlines.GDPR_MAX_EXTENSION_MONTHS,
        choices=[(1, "1 month"), (2, "2 months")],
    )


@admin.register(SubjectRequest)
class SubjectRequestAdmin(admin.ModelAdmin):
    list_display = [
        "__str__",
        "tenant",
        "kind",
        "law",
        "source",
        "state",
        "received_at",
        "due",
        "overdue",
        "acknowledge_by",
    ]
    list_filter = [OverdueFilter, OpenFilter, "state", "kind", "law", "source"]
    list_select_related = ["tenant"]
    search_fields = ["=id", "tenant__slug"]
    date_hierarchy = "received_at"
    show_full_result_count = False
    actions = ["approve", "reject", "extend"]
    # No personal data: the email hash, code hash and export are not shown.
    fields = [
        "tenant",
        "subject",
        "kind",
        "law",
        "source",
        "state",
        "received_at",
        "verified_at",
        "acknowledge_by",
        "due_at",
        "extended_due_at",
        "extension_reason",
        "decided_by",
        "rejection_reason",
        "started_at",
        "completed_at",
        "attempts",
        "last_error",
        "code_attempts",
        "export_downloaded_at",
    ]
    readonly_fields = fields  # type: ignore[assignment]  # django-stubs: invariant list types

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(effective_due=deadlines.effective_due_expression())
        )

    @admin.display(description="due", ordering="effective_due")
    def due(self, obj: WithAnnotations[SubjectRequest, _Due]) -> datetime | None:
        return obj.effective_due

    @admin.display(description="overdue", boolean=True)
    def overdue(self, obj: SubjectRequest) -> bool:
        return deadlines.is_overdue(obj)

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        # The actions need the change permission; the change form itself stays read-only.
        return obj is None and super().has_change_permission(request)

    @admin.action(
        description="Approve selected verified requests (and run them)", permissions=["change"]
    )
    def approve(self, request: HttpRequest, queryset: QuerySet[SubjectRequest]) -> None:
        approved, skipped = 0, 0
        for subject_request in queryset:
            if subject_request.state not in request_services.APPROVABLE_STATES:
                skipped += 1
                continue
            try:
                request_services.subject_request_approve(
                    actor=Actor.for_user(request.user), request=subject_request
                )
            except request_services.SubjectRequestError:  # changed state since the list was shown
                skipped += 1
            else:
                approved += 1
        self.message_user(request, f"Approved {approved} request(s).", messages.SUCCESS)
        if skipped:
            self.message_user(
                request,
                f"Skipped {skipped} request(s) that are not verified "
                "(or failed): identity comes first.",
                messages.WARNING,
            )

    def _with_reason(self, request, queryset, *, form_class, title, verb, apply):
        form = form_class(request.POST if "apply" in request.POST else None)
        if "apply" in request.POST and form.is_valid():
            done, refused = 0, 0
            for subject_request in queryset:
                try:
                    apply(subject_request, form.cleaned_data)
                except request_services.SubjectRequestError as exc:
                    refused += 1
                    self.message_user(
                        request, f"{subject_request}: {exc.message}", messages.WARNING
                    )
                else:
                    done += 1
            self.message_user(
                request,
                f"{verb} {done} request(s).",
                messages.SUCCESS if done else messages.WARNING,
            )
            return None
        return TemplateResponse(
            request,
            "admin/privacy/subjectrequest/reason.html",
            {
                **self.admin_site.each_context(request),
                "title": title,
                "form": form,
                "queryset": queryset,
                "opts": self.model._meta,
                "action": request.POST.get("action"),
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            },
        )

    @admin.action(description="Reject selected requests (with a reason)", permissions=["change"])
    def reject(self, request, queryset):
        return self._with_reason(
            request,
            queryset,
            form_class=ReasonForm,
            title="Reject requests",
            verb="Rejected",
            apply=lambda r, data: request_services.subject_request_reject(
                actor=Actor.for_user(request.user), request=r, reason=data["reason"]
            ),
        )

    @admin.action(
        description="Extend the deadline of selected GDPR requests (with a reason)",
        permissions=["change"],
    )
    def extend(self, request, queryset):
        return self._with_reason(
            request,
            queryset,
            form_class=ExtendForm,
            title="Extend deadlines",
            verb="Extended",
            apply=lambda r, data: request_services.subject_request_extend(
                actor=Actor.for_user(request.user),
                request=r,
                reason=data["reason"],
                months=data["months"],
            ),
        )


@admin.register(ErasureReceipt)
class ErasureReceiptAdmin(admin.ModelAdmin):
    list_display = ["__str__", "tenant", "subject_ref", "started_at", "finished_at", "duration"]
    list_select_related = ["tenant"]
    search_fields = ["=subject_ref", "=request__id"]
    readonly_fields = ["request", "tenant", "subject_ref", "counts", "started_at", "finished_at"]

    @admin.display(description="duration")
    def duration(self, obj: ErasureReceipt) -> timedelta:
        return obj.finished_at - obj.started_at

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
