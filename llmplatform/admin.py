from __future__ import annotations

from django.contrib import admin

from llmplatform.models import AuditEvent, Membership, Tenant


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "is_active", "created_at"]
    list_filter = ["is_active"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [MembershipInline]


class ReadOnlyAdmin(admin.ModelAdmin):
    """A log officers read but nobody adds to, changes or deletes from here."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    """Read-only: the audit log cannot be changed or deleted, not even here."""

    list_display = ["created_at", "actor", "action", "object_type", "object_repr", "tenant"]
    list_filter = ["action", "object_type"]
    search_fields = ["actor", "object_repr", "object_id", "request_id"]
    list_select_related = ["tenant"]
    date_hierarchy = "created_at"
    show_full_result_count = False
