from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db import transaction

from gateway import services
from gateway.models import (
    ApiKey,
    ModelAlias,
    ModelVersion,
    Provider,
    ProviderDeployment,
    TenantPlan,
    Tier,
    UsageRecord,
)
from gateway.secrets import validate_secret_ref
from llmplatform.admin import ReadOnlyAdmin, TenantAdmin
from llmplatform.admin_audit import AuditedModelAdmin
from llmplatform.models import Tenant


class TenantPlanInline(admin.StackedInline):
    model = TenantPlan
    extra = 1
    max_num = 1
    can_delete = False


class GatewayTenantAdmin(AuditedModelAdmin, TenantAdmin):
    inlines = [*TenantAdmin.inlines, TenantPlanInline]
    actions = ["invalidate_cache"]

    @admin.action(description="Invalidate the response cache of selected tenants")
    def invalidate_cache(self, request, queryset):
        for tenant in queryset:
            services.cache_invalidate_tenant(actor=request.user, tenant=tenant)
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
    list_display = ["name", "requests_per_minute", "tokens_per_minute", "daily_budget",
                    "monthly_budget", "max_prompt_chars"]
    filter_horizontal = ["allowed_aliases"]


class ApiKeyCreateForm(forms.ModelForm):
    class Meta:
        model = ApiKey
        fields = ["tenant", "name", "scopes", "expires_at"]

    scopes = forms.MultipleChoiceField(choices=ApiKey.Scope.choices,
                                       widget=forms.CheckboxSelectMultiple,
                                       initial=services.DEFAULT_SCOPES)


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """Keys are created through the service (the plaintext is shown once, here, as a message)
    and revoked by an action; the hash is never shown."""

    list_display = ["name", "tenant", "display", "scopes", "created_at", "expires_at",
                    "revoked_at", "last_used_at"]
    list_filter = ["revoked_at", "tenant"]
    list_select_related = ["tenant"]
    search_fields = ["name", "lookup", "tenant__name"]
    actions = ["revoke"]
    readonly_fields = ["tenant", "name", "display", "scopes", "created_at", "created_by",
                       "expires_at", "revoked_at", "last_used_at"]

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = ApiKeyCreateForm
        return super().get_form(request, obj, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        return self.readonly_fields if obj else []

    def get_fields(self, request, obj=None):
        return self.readonly_fields if obj else ["tenant", "name", "scopes", "expires_at"]

    def has_change_permission(self, request, obj=None):
        return obj is None and super().has_change_permission(request, obj)

    def save_model(self, request, obj, form, change):
        if change:
            return
        key, plaintext = services.api_key_create(
            actor=request.user, tenant=form.cleaned_data["tenant"],
            name=form.cleaned_data["name"], scopes=list(form.cleaned_data["scopes"]),
            expires_at=form.cleaned_data["expires_at"],
        )
        form.instance = key
        obj.pk = key.pk
        self.message_user(
            request,
            f"API key created. Copy it now, it will not be shown again: {plaintext}",
            messages.WARNING,
        )

    def delete_model(self, request, obj):
        services.api_key_revoke(actor=request.user, key=obj)

    def delete_queryset(self, request, queryset):
        self.revoke(request, queryset)

    @admin.action(description="Revoke selected keys")
    def revoke(self, request, queryset):
        with transaction.atomic():
            count = 0
            for key in queryset.filter(revoked_at__isnull=True):
                services.api_key_revoke(actor=request.user, key=key)
                count += 1
        self.message_user(request, f"Revoked {count} key(s).")


class ProviderForm(forms.ModelForm):
    base_url = forms.URLField(max_length=500, required=False, assume_scheme="https")

    class Meta:
        model = Provider
        fields = ["name", "kind", "base_url", "api_key_ref", "api_version", "region",
                  "connect_timeout", "read_timeout", "extra", "enabled"]

    def clean_api_key_ref(self) -> str:
        ref = self.cleaned_data["api_key_ref"]
        try:
            validate_secret_ref(ref)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from exc
        return ref


@admin.register(Provider)
class ProviderAdmin(AuditedModelAdmin):
    form = ProviderForm
    list_display = ["name", "kind", "base_url", "enabled", "updated_at"]
    list_filter = ["kind", "enabled"]


@admin.register(ProviderDeployment)
class ProviderDeploymentAdmin(AuditedModelAdmin):
    list_display = ["name", "provider", "model", "input_price_per_1k", "output_price_per_1k",
                    "enabled"]
    list_select_related = ["provider"]
    list_filter = ["provider", "enabled"]


class ModelVersionInline(admin.TabularInline):
    model = ModelVersion
    extra = 0
    fields = ["version", "deployment", "weight", "system_prompt", "params"]


@admin.register(ModelAlias)
class ModelAliasAdmin(AuditedModelAdmin):
    list_display = ["name", "description", "enabled", "updated_at"]
    inlines = [ModelVersionInline]
    actions = ["invalidate_cache"]

    @admin.action(description="Invalidate the response cache of selected aliases")
    def invalidate_cache(self, request, queryset):
        for alias in queryset:
            services.cache_invalidate_alias(actor=request.user, alias_name=alias.name)
        self.message_user(request, f"Invalidated the cache of {queryset.count()} alias(es).")


@admin.register(UsageRecord)
class UsageRecordAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "tenant", "api_key", "route", "alias", "deployment",
                    "status_code", "cache_hit", "prompt_tokens", "completion_tokens", "cost",
                    "latency_ms"]
    list_filter = ["status_code", "route", "alias", "cache_hit"]
    list_select_related = ["tenant", "api_key"]
    date_hierarchy = "created_at"
    show_full_result_count = False


# Last: it extends ModelAliasAdmin with the fallback inline.
from gateway import admin_resilience  # noqa: E402, F401
