"""The usage log, read-only."""

from __future__ import annotations

from django.contrib import admin

from gateway.models import UsageRecord
from llmplatform.admin.readonly import ReadOnlyAdmin


@admin.register(UsageRecord)
class UsageRecordAdmin(ReadOnlyAdmin):
    list_display = [
        "created_at",
        "tenant",
        "api_key",
        "route",
        "alias",
        "deployment",
        "status_code",
        "cache_hit",
        "prompt_tokens",
        "completion_tokens",
        "cost",
        "latency_ms",
    ]
    list_filter = ["status_code", "route", "alias", "cache_hit"]
    list_select_related = ["tenant", "api_key"]
    date_hierarchy = "created_at"
    show_full_result_count = False
