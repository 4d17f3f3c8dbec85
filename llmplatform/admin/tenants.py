"""Tenants and their members."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.contrib import admin

from llmplatform.models import Membership, Tenant

if TYPE_CHECKING:
    # Generic only in django-stubs; at runtime these classes take no type arguments.
    _MembershipInline = admin.TabularInline[Membership, Tenant]
    _TenantAdmin = admin.ModelAdmin[Tenant]
else:
    _MembershipInline = admin.TabularInline
    _TenantAdmin = admin.ModelAdmin


class MembershipInline(_MembershipInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Tenant)
class TenantAdmin(_TenantAdmin):
    list_display = ["name", "slug", "is_active", "require_owner_2fa", "created_at"]
    list_filter = ["is_active", "require_owner_2fa"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [MembershipInline]
