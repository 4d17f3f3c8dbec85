"""External scanners (bring-your-own guardrails): added, changed and switched by officers, each
save audited. The form checks a scanner as ``apply_config`` does (``check_scanner``): the egress
allow-list, no link-local or metadata host, a secret reference for the auth header, bounded
timeouts."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.db import transaction

from gateway import services
from gateway.models import GuardrailScanner
from gateway.scanners.policy import check_scanner
from llmplatform.actors import Actor
from llmplatform.admin.audit import AuditedModelAdmin


class GuardrailScannerForm(forms.ModelForm):
    url = forms.URLField(max_length=500, required=False, assume_scheme="https")

    class Meta:
        model = GuardrailScanner
        fields = [
            "name",
            "kind",
            "enabled",
            "tenant",
            "alias",
            "pre_call",
            "post_call",
            "fail_mode",
            "timeout_ms",
            "url",
            "auth_header",
            "auth_secret_ref",
            "guardrail_id",
            "guardrail_version",
            "region",
            "language",
            "score_threshold",
            "entities",
            "on_detect",
        ]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if self.errors:
            return data
        try:
            check_scanner(
                kind=data.get("kind", ""),
                url=data.get("url") or "",
                timeout_ms=data.get("timeout_ms") or 0,
                auth_header=data.get("auth_header") or "",
                auth_secret_ref=data.get("auth_secret_ref") or "",
                guardrail_id=data.get("guardrail_id") or "",
                guardrail_version=data.get("guardrail_version") or "",
                region=data.get("region") or "",
                language=data.get("language") or "",
                score_threshold=data.get("score_threshold", 0.5),
                entities=data.get("entities") or [],
                pre_call=bool(data.get("pre_call")),
                post_call=bool(data.get("post_call")),
            )
        except ValueError as exc:
            field, _, message = str(exc).partition(": ")
            if field in self.fields and message:
                self.add_error(field, message)
            else:
                self.add_error(None, str(exc))
        return data


@admin.register(GuardrailScanner)
class GuardrailScannerAdmin(AuditedModelAdmin):
    form = GuardrailScannerForm
    list_display = [
        "name",
        "kind",
        "tenant",
        "alias",
        "pre_call",
        "post_call",
        "fail_mode",
        "timeout_ms",
        "enabled",
        "updated_at",
    ]
    list_filter = ["kind", "enabled", "fail_mode", "tenant"]
    list_select_related = ["tenant", "alias"]
    search_fields = ["name"]
    actions = ["enable", "disable"]

    def _switch(self, request, queryset, enabled: bool) -> int:
        count = 0
        with transaction.atomic():
            for scanner in queryset.filter(enabled=not enabled):
                services.guardrail_scanner_set_enabled(
                    actor=Actor.for_user(request.user), scanner=scanner, enabled=enabled
                )
                count += 1
        return count

    @admin.action(description="Enable selected scanners", permissions=["change"])
    def enable(self, request, queryset):
        self.message_user(request, f"Enabled {self._switch(request, queryset, True)} scanner(s).")

    @admin.action(description="Disable selected scanners", permissions=["change"])
    def disable(self, request, queryset):
        count = self._switch(request, queryset, False)
        self.message_user(request, f"Disabled {count} scanner(s).")
