"""Service accounts and their API keys: created, rotated and revoked through the service."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, TypedDict

from django import forms
from django.contrib import admin, messages
from django.db import transaction
from django.db.models import Count, Q
from django.template.response import TemplateResponse
from django.utils import timezone

from gateway import services
from gateway.models import ApiKey, ServiceAccount
from llmplatform.actors import Actor
from llmplatform.errors import DomainError, InvalidInput

if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations


class ServiceAccountStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [("active", "active"), ("disabled", "disabled")]

    def queryset(self, request, queryset):
        if self.value() == "active":
            return queryset.filter(disabled_at__isnull=True)
        if self.value() == "disabled":
            return queryset.filter(disabled_at__isnull=False)
        return queryset


class _KeyCount(TypedDict):
    """What ``ServiceAccountAdmin.get_queryset`` adds to each account."""

    active_key_count: int


@admin.register(ServiceAccount)
class ServiceAccountAdmin(admin.ModelAdmin):
    """Machine identities of tenants. Created through the service (audited); disabling one
    revokes every key it holds. Never deleted here: the audit trail points at it."""

    list_display = [
        "name",
        "tenant",
        "description",
        "active_keys",
        "created_at",
        "created_by",
        "disabled_at",
    ]
    list_filter = [ServiceAccountStateFilter, "tenant"]
    list_select_related = ["tenant"]
    search_fields = ["name", "tenant__name", "tenant__slug"]
    actions = ["disable"]
    readonly_fields = ["tenant", "name", "description", "created_at", "created_by", "disabled_at"]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                active_key_count=Count("api_keys", filter=Q(api_keys__revoked_at__isnull=True))
            )
        )

    @admin.display(description="active keys", ordering="active_key_count")
    def active_keys(self, obj: WithAnnotations[ServiceAccount, _KeyCount]) -> int:
        return obj.active_key_count

    def get_readonly_fields(self, request, obj=None):
        return self.readonly_fields if obj else []

    def get_fields(self, request, obj=None):
        return self.readonly_fields if obj else ["tenant", "name", "description"]

    def has_change_permission(self, request, obj=None):
        return obj is None and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        if change:
            return
        account = services.service_account_create(
            actor=Actor.for_user(request.user),
            tenant=form.cleaned_data["tenant"],
            name=form.cleaned_data["name"],
            description=form.cleaned_data["description"],
        )
        form.instance = account
        obj.pk = account.pk

    @admin.action(
        description="Disable selected service accounts (revokes their keys)", permissions=["change"]
    )
    def disable(self, request, queryset):
        count = 0
        with transaction.atomic():
            for account in queryset.filter(disabled_at__isnull=True):
                services.service_account_disable(
                    actor=Actor.for_user(request.user), account=account
                )
                count += 1
        self.message_user(request, f"Disabled {count} service account(s) and revoked their keys.")


class IpRangesField(forms.CharField):
    """CIDR ranges, one per line (or comma-separated), checked and normalised by the service's
    own rule."""

    widget = forms.Textarea(attrs={"rows": 3})

    # A list, not CharField's str: django-stubs pins to_python to the parent's value type.
    def to_python(self, value) -> list[str]:  # type: ignore[override]
        text = super().to_python(value) or ""
        try:
            return services.normalize_ip_ranges(text.replace(",", "\n").splitlines())
        except InvalidInput as exc:
            raise forms.ValidationError(exc.message) from exc


class ApiKeyCreateForm(forms.ModelForm):
    class Meta:
        model = ApiKey
        fields = [
            "tenant",
            "service_account",
            "name",
            "scopes",
            "expires_at",
            "allowed_ips",
            "daily_budget",
            "monthly_budget",
        ]

    scopes = forms.MultipleChoiceField(
        choices=ApiKey.Scope.choices,
        widget=forms.CheckboxSelectMultiple,
        initial=services.DEFAULT_SCOPES,
    )
    allowed_ips = IpRangesField(
        required=False,
        label="Allowed IP ranges",
        help_text="CIDR ranges (IPv4 or IPv6), one per line; empty = anywhere.",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["service_account"].queryset = ServiceAccount.objects.filter(
            disabled_at__isnull=True
        ).select_related("tenant")

    def clean(self):
        cleaned = super().clean()
        account, tenant = cleaned.get("service_account"), cleaned.get("tenant")
        if account is not None and tenant is not None and account.tenant_id != tenant.pk:
            self.add_error("service_account", "This service account belongs to another tenant.")
        return cleaned


class ApiKeyStateFilter(admin.SimpleListFilter):
    """The officer's questions: which keys work, which stop working soon, which were rotated
    and still overlap."""

    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [
            ("active", "active"),
            ("expiring", "expiring within 7 days"),
            ("rotated", "rotated, still in overlap"),
            ("expired", "expired"),
            ("revoked", "revoked"),
        ]

    def queryset(self, request, queryset):
        now = timezone.now()
        live = Q(revoked_at__isnull=True) & (Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        match self.value():
            case "active":
                return queryset.filter(live)
            case "expiring":
                return queryset.filter(live, expires_at__lte=now + timedelta(days=7))
            case "rotated":
                return queryset.filter(live, replaced_by__isnull=False)
            case "expired":
                return queryset.filter(revoked_at__isnull=True, expires_at__lte=now)
            case "revoked":
                return queryset.filter(revoked_at__isnull=False)
        return queryset


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """Keys are created and rotated through the service (the plaintext is shown once, here, as
    a message) and revoked by an action; the hash is never shown."""

    list_display = [
        "name",
        "tenant",
        "service_account",
        "display",
        "state",
        "scopes",
        "allowed_ips",
        "created_at",
        "expires_at",
        "last_used_at",
    ]
    list_filter = [ApiKeyStateFilter, "tenant"]
    list_select_related = ["tenant", "service_account__tenant"]
    search_fields = ["name", "lookup", "tenant__name"]
    actions = ["rotate", "revoke"]
    readonly_fields = [
        "tenant",
        "service_account",
        "name",
        "display",
        "state",
        "scopes",
        "allowed_ips",
        "daily_budget",
        "monthly_budget",
        "created_at",
        "created_by",
        "expires_at",
        "replaced_by",
        "revoked_at",
        "last_used_at",
    ]
    create_fields = ApiKeyCreateForm.Meta.fields
    #: how long a rotated key keeps working next to its replacement
    rotation_overlap = timedelta(hours=24)

    @admin.display(description="state")
    def state(self, obj: ApiKey) -> str:
        now = timezone.now()
        if obj.revoked_at is not None:
            return "revoked"
        if obj.expires_at is not None and obj.expires_at <= now:
            return "expired"
        if obj.replaced_by_id is not None:
            return f"rotated, works until {obj.expires_at:%Y-%m-%d %H:%M} UTC"
        return "active"

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = ApiKeyCreateForm
        return super().get_form(request, obj, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        return self.readonly_fields if obj else []

    def get_fields(self, request, obj=None):
        return self.readonly_fields if obj else self.create_fields

    def has_change_permission(self, request, obj=None):
        return obj is None and super().has_change_permission(request, obj)

    def save_model(self, request, obj, form, change):
        if change:
            return
        data = form.cleaned_data
        key, plaintext = services.api_key_create(
            actor=Actor.for_user(request.user),
            tenant=data["tenant"],
            name=data["name"],
            scopes=list(data["scopes"]),
            expires_at=data["expires_at"],
            service_account=data.get("service_account"),
            allowed_ips=data.get("allowed_ips"),
            daily_budget=data.get("daily_budget"),
            monthly_budget=data.get("monthly_budget"),
        )
        form.instance = key
        obj.pk = key.pk
        request._llmp_new_keys = [{"key": key, "plaintext": plaintext, "replaces": None}]

    def response_add(self, request, obj, post_url_continue=None):
        new_keys = getattr(request, "_llmp_new_keys", None)
        if not new_keys:
            return super().response_add(request, obj, post_url_continue)
        return self._show_new_keys(request, new_keys, [], title="API key created")

    def _show_new_keys(self, request, keys, errors, *, title):
        """The plaintext goes in this response's body only: not in a message (the messages
        cookie is signed, not encrypted) and not in the session."""
        response = TemplateResponse(
            request,
            "admin/new_api_keys.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "title": title,
                "keys": keys,
                "errors": errors,
            },
        )
        response["Cache-Control"] = "no-store"
        return response

    def delete_model(self, request, obj):
        services.api_key_revoke(actor=Actor.for_user(request.user), key=obj)

    def delete_queryset(self, request, queryset):
        self.revoke(request, queryset)

    @admin.action(
        description="Rotate selected keys (the old ones keep working for 24 hours)",
        permissions=["change"],
    )
    def rotate(self, request, queryset):
        rotated, errors = [], []
        for key in queryset:
            try:
                new, plaintext = services.api_key_rotate(
                    actor=Actor.for_user(request.user), key=key, overlap=self.rotation_overlap
                )
            except DomainError as exc:
                errors.append(f"{key.display} was not rotated: {exc.message}")
                continue
            rotated.append({"key": new, "plaintext": plaintext, "replaces": key})
        if not rotated:
            for error in errors:
                self.message_user(request, error, messages.ERROR)
            return None
        return self._show_new_keys(request, rotated, errors, title="API keys rotated")

    @admin.action(description="Revoke selected keys", permissions=["change"])
    def revoke(self, request, queryset):
        with transaction.atomic():
            count = 0
            for key in queryset.filter(revoked_at__isnull=True):
                services.api_key_revoke(actor=Actor.for_user(request.user), key=key)
                count += 1
        self.message_user(request, f"Revoked {count} key(s).")
