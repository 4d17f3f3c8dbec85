"""Tenants with their plan, and the tiers plans are made of."""

from __future__ import annotations

from django.contrib import admin

from gateway import services
from gateway.models import TenantPlan, Tier
from llmplatform.actors import Actor
from llmplatform.admin.audit import AuditedModelAdmin
from llmplatform.admin.tenants import TenantAdmin
from llmplatform.models import Tenant


class TenantPlanInline(admin.StackedInline):
    model = TenantPlan
    extra = 1
    max_num = 1
    can_delete = False


class GatewayTenantAdmin(AuditedModelAdmin, TenantAdmin):
    inlines = [*TenantAdmin.inlines, TenantPlanInline]
    actions = ["invalidate_cache"]

    @admin.action(
        description="Invalidate the response cache of selected tenants", permissions=["change"]
    )
    def invalidate_cache(self, request, queryset):
        for tenant in queryset:
            services.cache_invalidate_tenant(actor=Actor.for_user(request.user), tenant=tenant)
        self.message_user(request, f"Invalidated the cache of {queryset.count()} tenant(s).")

    list_display = [*TenantAdmin.list_display, "tier_name"]
    list_select_related = ["plan__tier"]

    @admin.display(description="tier", ordering="plan__tier__name")
    def tier_name(self, obj: Tenant) -> str:
        plan = getattr(obj, "plan", None)
        return plan.tier.name if plan else "—"


admin.site.unregister(Tenant)
admin.site.register(Tenant, GatewayTenantAdmin)


@admin.register(Tier)
class TierAdmin(AuditedModelAdmin):
    list_display = [
        "name",
        "requests_per_minute",
        "tokens_per_minute",
        "daily_budget",
        "monthly_budget",
        "max_prompt_chars",
        "screening_mode",
    ]
    filter_horizontal = ["allowed_aliases"]
    fieldsets = [
        (None, {"fields": ["name", "description", "allowed_aliases"]}),
        (
            "Requests per tenant",
            {
                "fields": [("requests_per_minute", "requests_per_hour", "requests_per_day")],
                "description": "0 = unlimited.",
            },
        ),
        (
            "Requests per API key",
            {
                "fields": [
                    ("key_requests_per_minute", "key_requests_per_hour", "key_requests_per_day")
                ],
                "description": "0 = unlimited.",
            },
        ),
        (
            "Requests per end user",
            {
                "fields": [
                    ("user_requests_per_minute", "user_requests_per_hour", "user_requests_per_day")
                ],
                "description": "End users are told apart by the request's <code>user</code> "
                "field. 0 = unlimited.",
            },
        ),
        (
            "Tokens and request size",
            {
                "fields": [
                    ("tokens_per_minute", "tokens_per_day"),
                    ("max_prompt_chars", "max_output_tokens"),
                    ("max_choices", "max_media_parts", "max_media_part_chars"),
                ],
                "description": "Token limits: 0 = unlimited. Choices (n) and image, audio and file "
                "parts per request are capped here.",
            },
        ),
        (
            "Spend budgets (USD)",
            {
                "fields": [("daily_budget", "monthly_budget")],
                "description": "Per tenant; a tenant's plan and a key may set their own. "
                "0 = unlimited.",
            },
        ),
        (
            "Screening",
            {
                "fields": ["screening_mode", "screening_threshold", "leak_mode"],
                "description": "Prompt-injection and system-prompt-leak screening; a tenant's plan "
                "may override.",
            },
        ),
    ]
