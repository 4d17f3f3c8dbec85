"""The audit log, read-only."""

from __future__ import annotations

from django.contrib import admin

from llmplatform.admin.readonly import ReadOnlyAdmin
from llmplatform.models import AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    """Read-only: the audit log cannot be changed or deleted, not even here."""

    list_display = ["created_at", "actor", "action", "object_type", "object_repr", "tenant"]
    list_filter = ["action", "object_type"]
    search_fields = ["actor", "object_repr", "object_id", "request_id", "client_request_id"]
    list_select_related = ["tenant"]
    date_hierarchy = "created_at"
    show_full_result_count = False
