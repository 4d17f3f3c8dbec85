"""Providers, their deployments, and the model aliases routed to them."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin

from gateway import services
from gateway.egress import validate_upstream_url
from gateway.models import ModelAlias, ModelVersion, Provider, ProviderDeployment
from gateway.providers.capabilities import check_declaration, unsupported_for
from gateway.providers.kind_settings import ProviderFieldError, ProviderFields, check_kind_fields
from gateway.secrets import REFERENCE_HELP, validate_provider_secret_ref
from llmplatform.actors import Actor
from llmplatform.admin.audit import AuditedModelAdmin


class ProviderForm(forms.ModelForm):
    base_url = forms.URLField(max_length=500, required=False, assume_scheme="https")

    class Meta:
        model = Provider
        fields = [
            "name",
            "kind",
            "base_url",
            "api_key_ref",
            "api_version",
            "region",
            "connect_timeout",
            "read_timeout",
            "extra",
            "enabled",
        ]
        # The model's help text names the first three kinds; this one every kind (no migration
        # for a form's wording).
        help_texts = {"api_key_ref": f"Secret reference: {REFERENCE_HELP}."}

    def _checked(self, name: str, check):
        """The field's value once ``check`` accepts it; its ValueError as the form's error."""
        value = self.cleaned_data[name]
        try:
            check(value)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from exc
        return value

    def clean_api_key_ref(self) -> str:
        return self._checked("api_key_ref", validate_provider_secret_ref)

    def clean_base_url(self) -> str:
        return self._checked("base_url", validate_upstream_url)

    def clean_extra(self) -> dict:
        def check(extra) -> None:
            if not isinstance(extra, dict):
                raise ValueError("Enter a JSON object.")
            if "unsupported" in extra:
                try:
                    check_declaration(extra["unsupported"])
                except ValueError as exc:
                    raise ValueError(f"'unsupported' {exc}.") from exc

        return self._checked("extra", check)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if self.errors:
            return cleaned  # a field already refused: its own message says what is wrong
        try:
            check_kind_fields(
                ProviderFields(
                    kind=cleaned.get("kind") or "",
                    base_url=cleaned.get("base_url") or "",
                    api_key_ref=cleaned.get("api_key_ref") or "",
                    api_version=cleaned.get("api_version") or "",
                    region=cleaned.get("region") or "",
                    extra=cleaned.get("extra") or {},
                )
            )
        except ProviderFieldError as exc:
            field, _, key = exc.field.partition(".")
            self.add_error(field, f"'{key}' {exc}" if key else str(exc))
        return cleaned


@admin.register(Provider)
class ProviderAdmin(AuditedModelAdmin):
    form = ProviderForm
    list_display = ["name", "kind", "base_url", "enabled", "updated_at"]
    list_filter = ["kind", "enabled"]


@admin.register(ProviderDeployment)
class ProviderDeploymentAdmin(AuditedModelAdmin):
    list_display = [
        "name",
        "provider",
        "model",
        "input_price_per_1k",
        "output_price_per_1k",
        "enabled",
    ]
    list_select_related = ["provider"]
    list_filter = ["provider", "enabled"]


class ModelVersionInline(admin.TabularInline):
    model = ModelVersion
    extra = 0
    fields = ["version", "deployment", "weight", "system_prompt", "params"]


def semantic_embeddings_problem(alias_name: str, embeddings_alias: str) -> str | None:
    """Why ``embeddings_alias`` cannot compare questions for ``alias_name``'s semantic cache
    (None: it can): it must be another alias, exist, and be served only by providers that make
    embeddings."""
    if not embeddings_alias:
        return "Choose the alias whose embeddings compare questions."
    if embeddings_alias == alias_name:
        return "Choose another alias: one that makes embeddings."
    alias = ModelAlias.objects.filter(name=embeddings_alias).first()
    if alias is None:
        return "No alias has this name."
    providers = [
        v.deployment.provider for v in alias.versions.select_related("deployment__provider")
    ]
    if not providers:
        return "This alias has no version to route to."
    for provider in providers:
        if "embeddings" in unsupported_for(provider.kind, provider.extra):
            return f"Provider {provider.name!r} of this alias does not make embeddings."
    return None


class ModelAliasForm(forms.ModelForm):
    class Meta:
        model = ModelAlias
        fields = [
            "name",
            "description",
            "enabled",
            "degraded_mode",
            "degraded_message",
            "resilience",
            "semantic_cache",
            "semantic_cache_embeddings",
            "semantic_cache_threshold",
        ]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if self.errors or not cleaned.get("semantic_cache"):
            return cleaned
        problem = semantic_embeddings_problem(
            cleaned.get("name") or "", cleaned.get("semantic_cache_embeddings") or ""
        )
        if problem:
            self.add_error("semantic_cache_embeddings", problem)
        return cleaned


@admin.register(ModelAlias)
class ModelAliasAdmin(AuditedModelAdmin):
    form = ModelAliasForm
    list_display = ["name", "description", "enabled", "semantic_cache", "updated_at"]
    inlines = [ModelVersionInline]
    actions = ["invalidate_cache"]

    @admin.action(
        description="Invalidate the response cache of selected aliases", permissions=["change"]
    )
    def invalidate_cache(self, request, queryset):
        for alias in queryset:
            services.cache_invalidate_alias(
                actor=Actor.for_user(request.user), alias_name=alias.name
            )
        self.message_user(request, f"Invalidated the cache of {queryset.count()} alias(es).")
