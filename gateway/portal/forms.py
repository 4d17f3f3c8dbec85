"""Portal forms. They check input; the services check the rules again and their ValueErrors
become form errors in the views."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django import forms
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.signals import user_login_failed
from django.core.validators import MinValueValidator
from django.utils import timezone

from gateway import services
from gateway.models import ApiKey, ServiceAccount
from gateway.portal import selectors
from llmplatform.errors import InvalidInput
from llmplatform.models import Tenant
from llmplatform.staff_signin import confirmed_totp_device

MAX_IP_RANGES = 50
MAX_KEY_LIFETIME = timedelta(days=5 * 366)


class PortalAuthenticationForm(AuthenticationForm):
    """Password sign-in, and the authenticator code of those who set one up; only people who
    belong to a tenant get in, as with a provider.

    Every refusal reads the same (wrong password, no membership, missing or wrong code), so the
    form never tells a guesser that a password was right; a wrong code counts as a failed
    sign-in for the lockouts."""

    otp_token = forms.CharField(
        label="Authenticator code",
        required=False,
        max_length=8,
        help_text="Only if you set up an authenticator.",
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric"}),
    )

    otp_device: Any = None

    def confirm_login_allowed(self, user: Any) -> None:
        super().confirm_login_allowed(user)
        if not selectors.memberships_for_user(user).exists():
            raise self.get_invalid_login_error()
        device = confirmed_totp_device(user)
        if device is not None:
            token = (self.cleaned_data.get("otp_token") or "").strip()
            if not (token.isdigit() and device.verify_token(token)):
                user_login_failed.send(
                    sender=__name__,
                    request=self.request,
                    credentials={"username": self.cleaned_data.get("username")},
                )
                raise self.get_invalid_login_error()
            self.otp_device = device


class TotpConfirmForm(forms.Form):
    code = forms.CharField(
        label="Code from your authenticator",
        max_length=8,
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric"}),
    )

    def __init__(self, *args: Any, device: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.device = device

    def clean_code(self) -> str:
        code = self.cleaned_data["code"].strip()
        if not (code.isdigit() and self.device.verify_token(code)):
            raise forms.ValidationError("That code is not right. Enter the current one.")
        return code


def _today_utc() -> date:
    return timezone.now().astimezone(UTC).date()


class BudgetField(forms.DecimalField):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            required=False,
            max_digits=12,
            decimal_places=4,
            validators=[MinValueValidator(Decimal("0.0001"), "Leave it empty for no budget.")],
            widget=forms.NumberInput(attrs={"step": "0.01", "min": "0"}),
            **kwargs,
        )


class ApiKeyCreateForm(forms.Form):
    name = forms.CharField(max_length=100)
    scopes = forms.MultipleChoiceField(
        choices=ApiKey.Scope.choices,
        widget=forms.CheckboxSelectMultiple,
        initial=services.DEFAULT_SCOPES,
        error_messages={"required": "Choose at least one scope."},
        help_text="admin also allows every other scope and cache invalidation.",
    )
    expires_on = forms.DateField(
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
        label="Expires on",
        help_text="The key works until the end of this day (UTC). Empty: no expiry.",
    )
    service_account = forms.ModelChoiceField(
        queryset=ServiceAccount.objects.none(),
        required=False,
        empty_label="— none (a tenant key) —",
    )
    allowed_ips = forms.CharField(
        required=False,
        label="Allowed IP ranges",
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "10.0.0.0/8\n2001:db8::/32"}),
        help_text="One address or CIDR range per line (or comma-separated). Empty: anywhere.",
    )
    daily_budget = BudgetField(label="Daily budget (USD)", help_text="Empty: no budget of its own.")
    monthly_budget = BudgetField(label="Monthly budget (USD)")

    def __init__(self, *args: Any, tenant: Tenant, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        service_account = self.fields["service_account"]
        assert isinstance(service_account, forms.ModelChoiceField)  # declared above
        service_account.queryset = selectors.enabled_service_accounts_for_tenant(tenant)

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        if not name:
            raise forms.ValidationError("Give the key a name.")
        return name

    def clean_expires_on(self) -> date | None:
        day = self.cleaned_data.get("expires_on")
        if day is None:
            return None
        today = _today_utc()
        if day < today:
            raise forms.ValidationError("The expiry date is in the past.")
        if day > today + MAX_KEY_LIFETIME:
            raise forms.ValidationError("A key may be valid for at most five years.")
        return day

    def clean_allowed_ips(self) -> list[str]:
        parts = [p for p in re.split(r"[\s,]+", self.cleaned_data.get("allowed_ips", "")) if p]
        if len(parts) > MAX_IP_RANGES:
            raise forms.ValidationError(f"At most {MAX_IP_RANGES} ranges.")
        try:
            return services.normalize_ip_ranges(parts)
        except InvalidInput as exc:
            raise forms.ValidationError(exc.message) from exc

    @property
    def expires_at(self) -> datetime | None:
        day = self.cleaned_data.get("expires_on")
        if day is None:
            return None
        return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)


class ApiKeyRotateForm(forms.Form):
    overlap_hours = forms.IntegerField(
        min_value=0,
        max_value=int(services.MAX_ROTATION_OVERLAP.total_seconds() // 3600),
        initial=int(services.DEFAULT_ROTATION_OVERLAP.total_seconds() // 3600),
        label="Overlap (hours)",
        help_text="How long the old key keeps working, so deployments can switch over (0 to 720).",
    )


class ServiceAccountCreateForm(forms.Form):
    name = forms.SlugField(
        max_length=64, help_text="Letters, digits, hyphens and underscores, e.g. billing-sync."
    )
    description = forms.CharField(max_length=200, required=False)

    def __init__(self, *args: Any, tenant: Tenant, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tenant = tenant

    def clean_name(self) -> str:
        name = self.cleaned_data["name"]
        if ServiceAccount.objects.for_tenant(self.tenant).filter(name=name).exists():
            raise forms.ValidationError("A service account with this name exists already.")
        return name
