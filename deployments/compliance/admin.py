"""Compliance admin: frameworks and their items (edited here, audited), attestations (added
here with a note and/or a file through the service, withdrawn with a reason, never edited or
deleted) and the evidence history (read-only). The reports themselves are at
/deployments/compliance/ (linked from the framework list)."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import ValidationError
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from deployments import evidence
from deployments.compliance import selectors, services
from deployments.compliance.models import (
    Attestation,
    ComplianceFramework,
    ComplianceItem,
    EvidenceCheck,
)
from llmplatform.actors import Actor
from llmplatform.admin.audit import AuditedModelAdmin
from llmplatform.admin.readonly import ReadOnlyAdmin


def _check_choices(current: str = "") -> list[tuple[str, str]]:
    choices = [("", "— (manual item)")] + [
        (code, f"{code}: {check.title}") for code, check in sorted(evidence.registered().items())
    ]
    if current and current not in evidence.registered():
        choices.append((current, f"{current} (not installed)"))
    return choices


class ComplianceItemForm(forms.ModelForm):
    class Meta:
        model = ComplianceItem
        fields = [
            "framework",
            "code",
            "text",
            "reference",
            "kind",
            "check_code",
            "guidance",
            "order",
        ]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "check_code" in self.fields:
            self.fields["check_code"] = forms.ChoiceField(
                choices=_check_choices(self.instance.check_code or ""),
                required=False,
                help_text="Live items: the check that evidences them.",
            )


class ComplianceItemInline(admin.TabularInline):
    model = ComplianceItem
    form = ComplianceItemForm
    fields = ["order", "code", "text", "reference", "kind", "check_code"]
    extra = 0
    show_change_link = True


@admin.register(ComplianceFramework)
class ComplianceFrameworkAdmin(AuditedModelAdmin):
    list_display = ["name", "code", "scope", "order", "report"]
    search_fields = ["name", "code"]
    inlines = [ComplianceItemInline]
    change_list_template = "admin/compliance/complianceframework/change_list.html"

    @admin.display(description="report")
    def report(self, obj: ComplianceFramework):
        return format_html(
            '<a href="{}">{} report</a>', reverse("compliance:report", args=[obj.code]), obj.name
        )


class ComplianceStateFilter(admin.SimpleListFilter):
    """The items in one state now (failing, passing, ...), as the selectors compute it (the
    officer's dashboard links here for failing items)."""

    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [(state, state) for state in selectors.STATES]

    def queryset(self, request, queryset):
        if self.value() not in selectors.STATES:
            return queryset
        return queryset.filter(
            pk__in=[
                s.item.pk
                for s in selectors.item_statuses(items=queryset)
                if s.state == self.value()
            ]
        )


@admin.register(ComplianceItem)
class ComplianceItemAdmin(AuditedModelAdmin):
    form = ComplianceItemForm
    list_display = [
        "text",
        "framework",
        "kind",
        "check_code",
        "state",
        "last_evidence",
        "last_checked",
    ]
    list_filter = [ComplianceStateFilter, "framework", "kind"]
    list_select_related = ["framework"]
    search_fields = ["text", "code", "check_code", "reference"]
    ordering = ["framework__order", "order", "id"]

    def get_changelist_instance(self, request):
        changelist = super().get_changelist_instance(request)
        rows = list(changelist.result_list)
        # One pass for the page's rows: their states and newest evidence (three queries).
        statuses = {
            s.item.pk: s
            for s in selectors.item_statuses(
                items=ComplianceItem.objects.filter(pk__in=[r.pk for r in rows])
            )
        }
        for row in rows:
            row.compliance_status = statuses.get(row.pk)
        return changelist

    def _status(self, obj: ComplianceItem) -> selectors.ItemStatus | None:
        if not hasattr(obj, "compliance_status"):
            found = selectors.item_statuses(items=ComplianceItem.objects.filter(pk=obj.pk))
            obj.compliance_status = found[0] if found else None
        return obj.compliance_status

    @admin.display(description="state")
    def state(self, obj: ComplianceItem) -> str:
        status = self._status(obj)
        return status.state if status else "—"

    @admin.display(description="last evidence")
    def last_evidence(self, obj: ComplianceItem) -> str:
        status = self._status(obj)
        if status is None:
            return "—"
        if status.evidence is not None:
            return status.evidence.summary
        if status.attestation is not None:
            text = status.attestation.note or status.attestation.file_name
            return f"{status.attestation.attested_by}: {text[:120]}"
        return "—"

    @admin.display(description="last checked")
    def last_checked(self, obj: ComplianceItem):
        status = self._status(obj)
        return status.last_checked if status and status.last_checked else "—"


class AttestationForm(forms.ModelForm):
    file = forms.FileField(
        required=False,
        help_text=(
            f"Optional evidence file ({', '.join(services.ALLOWED_EVIDENCE_EXTENSIONS)}; at most "
            f"{services.MAX_EVIDENCE_FILE_BYTES // 1048576} MB). Kept in the database."
        ),
    )

    class Meta:
        model = Attestation
        fields = ["item", "note", "expires_at"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "item" in self.fields:
            self.fields["item"].queryset = ComplianceItem.objects.filter(
                kind=ComplianceItem.Kind.MANUAL
            ).select_related("framework")

    def clean_file(self):
        upload = self.cleaned_data.get("file")
        if upload is not None:
            services.validate_evidence_file(upload.name, upload.size)
        return upload

    def clean(self):
        cleaned = super().clean()
        if not (cleaned.get("note") or "").strip() and not cleaned.get("file"):
            raise ValidationError("Give a note, a file, or both.")
        return cleaned


class WithdrawForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 4, "cols": 60}), max_length=2000)


@admin.register(Attestation)
class AttestationAdmin(admin.ModelAdmin):
    form = AttestationForm
    list_display = [
        "item",
        "framework",
        "attested_by",
        "attested_at",
        "expires_at",
        "file_name",
        "withdrawn_at",
    ]
    list_filter = ["item__framework", ("withdrawn_at", admin.EmptyFieldListFilter)]
    list_select_related = ["item__framework"]
    search_fields = ["item__text", "attested_by", "note", "file_name"]
    date_hierarchy = "attested_at"
    actions = ["withdraw"]
    detail_fields = [
        "item",
        "note",
        "evidence_file",
        "file_sha256",
        "attested_by",
        "attested_at",
        "expires_at",
        "withdrawn_at",
        "withdrawn_by",
        "withdrawal_reason",
    ]

    def get_queryset(self, request):
        return super().get_queryset(request).defer("file_data")

    @admin.display(description="framework", ordering="item__framework__order")
    def framework(self, obj: Attestation):
        return obj.item.framework

    @admin.display(description="file")
    def evidence_file(self, obj: Attestation):
        if not obj.file_name:
            return "—"
        return format_html(
            '<a href="{}">{}</a> ({} bytes, {})',
            reverse("compliance:attestation_file", args=[obj.pk]),
            obj.file_name,
            obj.file_size,
            obj.file_content_type,
        )

    def get_fields(self, request, obj=None):
        return self.detail_fields if obj is not None else ["item", "note", "file", "expires_at"]

    def get_readonly_fields(self, request, obj=None):
        return self.detail_fields if obj is not None else []

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        created = services.attestation_create(
            actor=Actor.for_user(request.user),
            item=form.cleaned_data["item"],
            note=form.cleaned_data.get("note") or "",
            file=form.cleaned_data.get("file"),
            expires_at=form.cleaned_data.get("expires_at"),
        )
        obj.pk, obj.attested_at, obj.attested_by = (
            created.pk,
            created.attested_at,
            created.attested_by,
        )

    def save_related(self, request, form, formsets, change):
        pass  # no relations beyond the item; the service saved everything

    @admin.action(description="Withdraw selected attestations (with a reason)", permissions=["add"])
    def withdraw(self, request, queryset):
        form = WithdrawForm(request.POST if "apply" in request.POST else None)
        if "apply" in request.POST and form.is_valid():
            done = 0
            for attestation in queryset.filter(withdrawn_at__isnull=True):
                services.attestation_withdraw(
                    actor=Actor.for_user(request.user),
                    attestation=attestation,
                    reason=form.cleaned_data["reason"],
                )
                done += 1
            self.message_user(request, f"Withdrew {done} attestation(s).", messages.SUCCESS)
            return None
        return TemplateResponse(
            request,
            "admin/compliance/attestation/withdraw.html",
            {
                **self.admin_site.each_context(request),
                "title": "Withdraw attestations",
                "form": form,
                "queryset": queryset,
                "opts": self.model._meta,
                "action": request.POST.get("action"),
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            },
        )


@admin.register(EvidenceCheck)
class EvidenceCheckAdmin(ReadOnlyAdmin):
    """Every run of every live check, newest first; nothing here is changed or deleted."""

    list_display = ["checked_at", "check_code", "ok", "summary", "trigger", "actor", "duration_ms"]
    list_filter = ["ok", "trigger", "check_code"]
    search_fields = ["check_code", "summary"]
    date_hierarchy = "checked_at"
    show_full_result_count = False
    fields = [
        "check_code",
        "title",
        "ok",
        "summary",
        "details_pretty",
        "checked_at",
        "duration_ms",
        "trigger",
        "actor",
    ]
    readonly_fields = fields  # type: ignore[assignment]  # django-stubs: invariant list types

    @admin.display(description="details")
    def details_pretty(self, obj: EvidenceCheck):
        import json

        return format_html("<pre>{}</pre>", json.dumps(obj.details, indent=2, sort_keys=True))
