"""The security events (screened prompts, leaked system prompts), read-only."""

from __future__ import annotations

from django.contrib import admin

from gateway.models import SecurityEvent
from llmplatform.admin.readonly import ReadOnlyAdmin


@admin.register(SecurityEvent)
class SecurityEventAdmin(ReadOnlyAdmin):
    """Blocked and flagged prompts and leaked system prompts. The text (kept only when the
    tenant opted in) is on the detail page, never in the list."""

    list_display = ["created_at", "tenant", "kind", "action", "score", "reasons", "alias"]
    list_filter = ["kind", "action", "tenant"]
    list_select_related = ["tenant"]
    search_fields = ["request_id", "text_sha256", "alias"]
    date_hierarchy = "created_at"
    show_full_result_count = False
    fields = [
        "created_at",
        "tenant",
        "api_key",
        "request_id",
        "kind",
        "action",
        "alias",
        "score",
        "reasons",
        "text_sha256",
        "text",
        "kept_encrypted",
        "text_expires_at",
    ]
    readonly_fields = ["kept_encrypted"]

    @admin.display(description="text kept encrypted", boolean=True)
    def kept_encrypted(self, obj: SecurityEvent) -> bool:
        # Readable only through the subject's access request (the data map), never here.
        return obj.text_ciphertext is not None
