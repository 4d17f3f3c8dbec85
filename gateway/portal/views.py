"""Portal pages. A tenant page takes its tenant from the URL (``/portal/t/<slug>/...``) and the
signed-in user's membership of it (``TenantView``); writes go through gateway.services with the
user as the actor, so each one leaves an audit row."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any, ClassVar, Protocol, cast

import requests
import structlog
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.utils.module_loading import import_string
from django.views import View
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django_otp import login as otp_login
from django_otp.plugins.otp_totp.models import TOTPDevice
from social_core.backends.base import BaseAuth
from social_core.exceptions import (
    AuthConnectionError,
    AuthUnreachableProvider,
    SocialAuthBaseException,
)
from social_django import views as social_views

from gateway import services
from gateway.models import ApiKey, TenantPlan
from gateway.portal import selectors
from gateway.portal.charts import bar_chart
from gateway.portal.forms import (
    ApiKeyCreateForm,
    ApiKeyRotateForm,
    PortalAuthenticationForm,
    ServiceAccountCreateForm,
    TotpConfirmForm,
)
from gateway.portal.oidc import SignInRefused
from gateway.portal.throttle import rate_exceeded
from llmplatform import staff_signin
from llmplatform.actors import Actor
from llmplatform.errors import DomainError
from llmplatform.models import Membership, Tenant

log = structlog.get_logger("gateway.portal")

# A new key's plaintext waits here between the POST that made it and the one page that shows
# it; that page removes it, and so does any other portal page.
NEW_KEY_SESSION = "portal_new_key"
THROTTLED = "Too many sign-in attempts from your address. Wait a minute and try again."


class _OtpUser(Protocol):
    """``request.user`` as django_otp's ``OTPMiddleware`` leaves it."""

    def is_verified(self) -> bool:
        """Whether this session was confirmed with a second factor."""
        ...


def _otp_user(request: HttpRequest) -> _OtpUser:
    # OTPMiddleware (in settings.MIDDLEWARE, after the authentication middleware) gives every
    # request's user, anonymous or not, an ``is_verified()``; Django's types do not know it.
    return cast(_OtpUser, request.user)


# --- Sign-in --------------------------------------------------------------------------------


def enabled_providers() -> list[tuple[str, str]]:
    """(backend name, button label) of each identity provider that settings switch on."""
    providers = []
    for path in settings.AUTHENTICATION_BACKENDS:
        backend = import_string(path)
        if isinstance(backend, type) and issubclass(backend, BaseAuth):
            label = settings.PORTAL_OIDC_LABELS.get(backend.name, backend.name)
            providers.append((backend.name, label))
    return providers


class PortalLoginView(auth_views.LoginView):
    template_name = "portal/login.html"
    authentication_form = PortalAuthenticationForm
    redirect_authenticated_user = True

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        # Counted before the password is checked, so a guesser over the rate gets no answer.
        if rate_exceeded(request, group="portal:login", rate=settings.LLMP_PORTAL_LOGIN_RATE):
            form = self.authentication_form(
                request, initial={"username": request.POST.get("username", "")[:150]}
            )
            context = self.get_context_data(form=form, throttled=THROTTLED)
            return self.render_to_response(context, status=429)
        return super().post(request, *args, **kwargs)

    def form_valid(self, form: Any) -> HttpResponse:
        device = getattr(form, "otp_device", None)
        if device is not None:
            # django-otp's login receiver marks the session as verified with this device.
            form.get_user().otp_device = device
        return super().form_valid(form)

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        return {**super().get_context_data(**kwargs), "providers": enabled_providers()}


portal_logout = auth_views.LogoutView.as_view(next_page="portal:login")


def _provider_view(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """social-auth's begin or complete view, limited per IP, for enabled providers only, with
    every refusal or provider failure shown as a message on the login page."""

    def wrapper(request: HttpRequest, backend: str) -> HttpResponse:
        labels = dict(enabled_providers())
        if backend not in labels:
            raise Http404("No such sign-in provider")
        if rate_exceeded(request, group="portal:oidc", rate=settings.LLMP_PORTAL_OIDC_RATE):
            messages.error(request, THROTTLED)
            return redirect(settings.LOGIN_URL)
        try:
            return view(request, backend)
        except SignInRefused as exc:
            messages.error(request, str(exc))
        except (AuthConnectionError, AuthUnreachableProvider, requests.RequestException):
            # The details (addresses, errors) go to the log, not to the page.
            log.warning("portal_provider_unreachable", backend=backend, exc_info=True)
            messages.error(
                request, f"{labels[backend]} could not be reached. Try again in a moment."
            )
        except SocialAuthBaseException as exc:
            log.info("portal_sign_in_failed", backend=backend, error=type(exc).__name__)
            messages.error(request, f"Sign-in with {labels[backend]} failed: {exc}")
        return redirect(settings.LOGIN_URL)

    wrapper.__name__ = f"portal_{view.__name__}"
    return never_cache(wrapper)


provider_begin = _provider_view(social_views.auth)
# The provider sends the browser back here; social-auth checks the state parameter (and the
# nonce and PKCE verifier) instead of a CSRF token.
provider_complete = csrf_exempt(_provider_view(social_views.complete))


@login_required
def home(request: HttpRequest) -> HttpResponse:
    memberships = list(selectors.memberships_for_user(request.user))
    if len(memberships) == 1:
        return redirect("portal:keys", slug=memberships[0].tenant.slug)
    return render(request, "portal/home.html", {"memberships": memberships})


# --- Tenant pages ---------------------------------------------------------------------------


class TenantView(View):
    """Base of every tenant page. The tenant is the one in the URL that the user belongs to;
    without a membership it is a 404, exactly like a tenant that does not exist. Owner-only
    pages give members 403, for GET and POST alike."""

    owner_only: ClassVar[bool] = False
    section: ClassVar[str] = ""
    template_name: ClassVar[str] = ""

    tenant: Tenant
    membership: Membership
    is_owner: bool

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        self.membership = selectors.get_membership_for_user(request.user, kwargs.pop("slug"))
        self.tenant = self.membership.tenant
        self.is_owner = self.membership.role == Membership.Role.OWNER
        if self.is_owner and self.tenant.require_owner_2fa and not _otp_user(request).is_verified():
            # The tenant requires its owners to confirm each session with an authenticator.
            messages.info(
                request,
                f"{self.tenant.name} requires owners to confirm their "
                "sign-in with an authenticator code.",
            )
            return redirect(f"{reverse('portal:security')}?{urlencode({'next': request.path})}")
        if self.owner_only and not self.is_owner:
            raise PermissionDenied("Only an owner of the tenant may do this.")
        # Sessions from before keys were shown on the creating response only may still hold one.
        request.session.pop(NEW_KEY_SESSION, None)
        return super().dispatch(request, *args, **kwargs)

    def page(self, context: dict[str, Any] | None = None, *, status: int = 200) -> HttpResponse:
        base = {
            "tenant": self.tenant,
            "is_owner": self.is_owner,
            "section": self.section,
            "memberships": selectors.memberships_for_user(self.request.user),
        }
        return render(self.request, self.template_name, {**base, **(context or {})}, status=status)


def _show_once(view: TenantView, key: ApiKey, plaintext: str) -> HttpResponse:
    """The new key's plaintext, in this response only: not kept in the session (or anywhere
    else) for a later page, and marked not to be stored by the browser or a proxy. A reload
    asks to submit the form again, which the browser warns about."""
    response = render(
        view.request,
        KeySecretView.template_name,
        {
            "tenant": view.tenant,
            "is_owner": view.is_owner,
            "section": "keys",
            "memberships": selectors.memberships_for_user(view.request.user),
            "key": key,
            "plaintext": plaintext,
            "replaced": selectors.api_keys_for_tenant(view.tenant).filter(replaced_by=key).first(),
            "api_base": view.request.build_absolute_uri("/v1"),
        },
    )
    response["Cache-Control"] = "no-store"
    return response


@dataclass(frozen=True, slots=True)
class KeyRow:
    key: ApiKey
    state: str


class KeyListView(TenantView):
    section = "keys"
    template_name = "portal/keys.html"

    def get(self, request: HttpRequest) -> HttpResponse:
        now = timezone.now()
        rows = [
            KeyRow(key, selectors.key_state(key, now))
            for key in selectors.api_keys_for_tenant(self.tenant)
        ]
        return self.page({"rows": rows})


class KeyCreateView(TenantView):
    owner_only = True
    section = "keys"
    template_name = "portal/key_create.html"

    def get(self, request: HttpRequest) -> HttpResponse:
        initial = {}
        account = request.GET.get("service_account", "")
        if account.isdigit():
            initial["service_account"] = int(account)
        return self.page({"form": ApiKeyCreateForm(tenant=self.tenant, initial=initial)})

    def post(self, request: HttpRequest) -> HttpResponse:
        form = ApiKeyCreateForm(request.POST, tenant=self.tenant)
        if form.is_valid():
            data = form.cleaned_data
            try:
                key, plaintext = services.api_key_create(
                    actor=Actor.for_user(request.user),
                    tenant=self.tenant,
                    name=data["name"],
                    scopes=data["scopes"],
                    expires_at=form.expires_at,
                    service_account=data["service_account"],
                    allowed_ips=data["allowed_ips"],
                    daily_budget=data["daily_budget"],
                    monthly_budget=data["monthly_budget"],
                )
            except DomainError as exc:
                form.add_error(None, exc.message)
            else:
                return _show_once(self, key, plaintext)
        return self.page({"form": form})


@method_decorator(never_cache, name="dispatch")
class KeySecretView(TenantView):
    owner_only = True
    section = "keys"
    template_name = "portal/key_secret.html"

    def get(self, request: HttpRequest, key_id: int) -> HttpResponse:
        # The plaintext was on the response that created the key; never again.
        key = selectors.get_api_key_for_tenant(self.tenant, key_id)
        replaced = selectors.api_keys_for_tenant(self.tenant).filter(replaced_by=key).first()
        return self.page(
            {
                "key": key,
                "plaintext": None,
                "replaced": replaced,
                "api_base": request.build_absolute_uri("/v1"),
            }
        )


class KeyRotateView(TenantView):
    owner_only = True
    section = "keys"
    template_name = "portal/key_rotate.html"

    def get(self, request: HttpRequest, key_id: int) -> HttpResponse:
        key = selectors.get_api_key_for_tenant(self.tenant, key_id)
        return self.page({"key": key, "form": ApiKeyRotateForm()})

    def post(self, request: HttpRequest, key_id: int) -> HttpResponse:
        key = selectors.get_api_key_for_tenant(self.tenant, key_id)
        form = ApiKeyRotateForm(request.POST)
        if form.is_valid():
            overlap = timedelta(hours=form.cleaned_data["overlap_hours"])
            try:
                new, plaintext = services.api_key_rotate(
                    actor=Actor.for_user(request.user), key=key, overlap=overlap
                )
            except DomainError as exc:
                form.add_error(None, exc.message)
            else:
                return _show_once(self, new, plaintext)
        return self.page({"key": key, "form": form})


class KeyRevokeView(TenantView):
    owner_only = True
    section = "keys"
    template_name = "portal/key_revoke.html"

    def get(self, request: HttpRequest, key_id: int) -> HttpResponse:
        key = selectors.get_api_key_for_tenant(self.tenant, key_id)
        return self.page({"key": key})

    def post(self, request: HttpRequest, key_id: int) -> HttpResponse:
        key = selectors.get_api_key_for_tenant(self.tenant, key_id)
        services.api_key_revoke(actor=Actor.for_user(request.user), key=key)
        messages.success(request, f"Key {key.name} ({key.display}) is revoked.")
        return redirect("portal:keys", slug=self.tenant.slug)


# --- Usage ----------------------------------------------------------------------------------


def _count(value: float | Decimal) -> str:
    # Whole numbers, but an axis tick halfway up to an odd peak keeps its half.
    return f"{value:,.0f}" if value == int(value) else f"{value:,.1f}"


def _usd(value: float | Decimal) -> str:
    return f"${Decimal(value):,.4f}"


class UsageView(TenantView):
    section = "usage"
    template_name = "portal/usage.html"

    def get(self, request: HttpRequest) -> HttpResponse:
        days = selectors.usage_by_day_for_tenant(self.tenant)
        charts = [
            bar_chart(
                key="requests",
                title="Requests",
                points=[(d.day, d.requests) for d in days],
                fmt=_count,
            ),
            bar_chart(
                key="tokens", title="Tokens", points=[(d.day, d.tokens) for d in days], fmt=_count
            ),
            bar_chart(
                key="cost", title="Cost (USD)", points=[(d.day, d.cost) for d in days], fmt=_usd
            ),
        ]
        totals = selectors.DayUsage(
            day=days[0].day,
            requests=sum(d.requests for d in days),
            errors=sum(d.errors for d in days),
            prompt_tokens=sum(d.prompt_tokens for d in days),
            completion_tokens=sum(d.completion_tokens for d in days),
            cost=sum((d.cost for d in days), Decimal(0)),
        )
        rows = [(d, _usd(d.cost)) for d in reversed(days)]
        return self.page(
            {
                "charts": charts,
                "rows": rows,
                "totals": totals,
                "total_cost": _usd(totals.cost),
                "first_day": days[0].day,
                "last_day": days[-1].day,
            }
        )


# --- Tier -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Limit:
    label: str
    value: str
    note: str = ""


def _per(value: int) -> str:
    return f"{value:,}" if value else "unlimited"


def _budget(amount: Decimal) -> str:
    return _usd(amount) if amount else "unlimited"


def _budget_limit(label: str, plan: TenantPlan, field: str) -> Limit:
    tier_value = getattr(plan.tier, field)
    override = getattr(plan, field)
    if override is None:
        return Limit(label, _budget(tier_value), "the tier's")
    return Limit(label, _budget(override), f"this tenant's own (the tier's: {_budget(tier_value)})")


def limit_groups(plan: TenantPlan, spend: selectors.Spend) -> list[tuple[str, list[Limit]]]:
    tier = plan.tier
    windows = ("minute", "hour", "day")
    aliases = sorted(alias.name for alias in tier.allowed_aliases.all())
    screening = plan.screening_mode or tier.screening_mode
    threshold = (
        plan.screening_threshold
        if plan.screening_threshold is not None
        else tier.screening_threshold
    )
    return [
        (
            "Requests for the whole tenant",
            [Limit(f"per {w}", _per(getattr(tier, f"requests_per_{w}"))) for w in windows],
        ),
        (
            "Requests per API key",
            [Limit(f"per {w}", _per(getattr(tier, f"key_requests_per_{w}"))) for w in windows],
        ),
        (
            "Requests per end user (the request's user field)",
            [Limit(f"per {w}", _per(getattr(tier, f"user_requests_per_{w}"))) for w in windows],
        ),
        (
            "Tokens",
            [
                Limit("per minute", _per(tier.tokens_per_minute)),
                Limit("per day", _per(tier.tokens_per_day)),
            ],
        ),
        (
            "Spend (USD)",
            [
                _budget_limit("daily budget", plan, "daily_budget"),
                _budget_limit("monthly budget", plan, "monthly_budget"),
                Limit("spent today (UTC)", _usd(spend.today)),
                Limit("spent this month", _usd(spend.this_month)),
            ],
        ),
        (
            "Request size",
            [
                Limit("longest prompt", f"{tier.max_prompt_chars:,} characters"),
                Limit(
                    "largest max_tokens",
                    f"{tier.max_output_tokens:,} tokens"
                    if tier.max_output_tokens
                    else "the model's own limit",
                ),
            ],
        ),
        (
            "Models",
            [
                Limit("allowed", ", ".join(aliases) if aliases else "every enabled model"),
            ],
        ),
        (
            "Safety",
            [
                Limit(
                    "prompt-injection screening",
                    screening if screening == "off" else f"{screening} from a score of {threshold}",
                    "this tenant's own" if plan.screening_mode else "",
                ),
                Limit(
                    "system-prompt leak",
                    plan.leak_mode or tier.leak_mode,
                    "this tenant's own" if plan.leak_mode else "",
                ),
            ],
        ),
    ]


class TierView(TenantView):
    section = "tier"
    template_name = "portal/tier.html"

    def get(self, request: HttpRequest) -> HttpResponse:
        plan = selectors.get_plan_for_tenant(self.tenant)
        if plan is None:
            return self.page({"plan": None})
        spend = selectors.spend_for_tenant(self.tenant)
        return self.page({"plan": plan, "groups": limit_groups(plan, spend)})


# --- Service accounts -----------------------------------------------------------------------


class ServiceAccountListView(TenantView):
    section = "service-accounts"
    template_name = "portal/service_accounts.html"

    def get(self, request: HttpRequest) -> HttpResponse:
        form = ServiceAccountCreateForm(tenant=self.tenant) if self.is_owner else None
        return self._page(form)

    def post(self, request: HttpRequest) -> HttpResponse:
        if not self.is_owner:
            raise PermissionDenied("Only an owner of the tenant may do this.")
        form = ServiceAccountCreateForm(request.POST, tenant=self.tenant)
        if form.is_valid():
            try:
                account = services.service_account_create(
                    actor=Actor.for_user(request.user),
                    tenant=self.tenant,
                    name=form.cleaned_data["name"],
                    description=form.cleaned_data["description"],
                )
            except IntegrityError:  # created concurrently under the same name
                form.add_error("name", "A service account with this name exists already.")
            except DomainError as exc:
                form.add_error(None, exc.message)
            else:
                messages.success(request, f"Service account {account.name} is created.")
                return redirect("portal:service-accounts", slug=self.tenant.slug)
        return self._page(form)

    def _page(self, form: ServiceAccountCreateForm | None) -> HttpResponse:
        accounts = selectors.service_accounts_for_tenant(self.tenant)
        return self.page({"accounts": accounts, "form": form})


class ServiceAccountDisableView(TenantView):
    owner_only = True
    section = "service-accounts"
    template_name = "portal/service_account_disable.html"

    def get(self, request: HttpRequest, account_id: int) -> HttpResponse:
        account = selectors.get_service_account_for_tenant(self.tenant, account_id)
        return self.page({"account": account})

    def post(self, request: HttpRequest, account_id: int) -> HttpResponse:
        account = selectors.get_service_account_for_tenant(self.tenant, account_id)
        services.service_account_disable(actor=Actor.for_user(request.user), account=account)
        messages.success(
            request, f"Service account {account.name} is disabled and its keys are revoked."
        )
        return redirect("portal:service-accounts", slug=self.tenant.slug)


# --- Your authenticator ---------------------------------------------------------------------

PORTAL_ENROLMENT_SESSION = "portal_totp_enrolment"


def _safe_next(request: HttpRequest) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return reverse("portal:home")


@method_decorator(never_cache, name="dispatch")
class SecurityView(View):
    """Set up an authenticator (TOTP), confirm this session with it, or remove it.

    Enrolment needs the signed-in person's session (their password or their identity
    provider), and a code from the new authenticator before it counts; removal needs a current
    code. Both are audited."""

    template_name = "portal/security.html"

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        return super().dispatch(request, *args, **kwargs)

    def _pending(self, request: HttpRequest) -> TOTPDevice | None:
        """The authenticator being set up. A staff account's is the one an administrator
        allowed (the admin's rule: a password alone never binds a second factor, and the portal
        must not be a way round it), or None without such a grant."""
        if request.user.is_staff:
            return staff_signin.enrolment_grant(request.user)
        device_id = request.session.get(PORTAL_ENROLMENT_SESSION)
        device = (
            TOTPDevice.objects.filter(pk=device_id, user=request.user, confirmed=False).first()
            if device_id
            else None
        )
        if device is None:
            device = staff_signin.totp_device_start(user=request.user)
            request.session[PORTAL_ENROLMENT_SESSION] = device.pk
        return device

    def _page(
        self,
        request: HttpRequest,
        device: TOTPDevice | None,
        *,
        form: Any = None,
        status: int = 200,
        error: str = "",
    ) -> HttpResponse:
        """``device`` is the confirmed authenticator, or the one being set up."""
        confirmed = device is not None and device.confirmed
        context: dict[str, Any] = {
            "form": form or TotpConfirmForm(device=device),
            "device": device if confirmed else None,
            "next": _safe_next(request),
            "verified": _otp_user(request).is_verified(),
            "error": error,
            "needs_grant": device is None,
        }
        if device is not None and not confirmed:
            context.update(staff_signin.enrolment_display(device))
        return render(request, self.template_name, context, status=status)

    def get(self, request: HttpRequest) -> HttpResponse:
        device = staff_signin.confirmed_totp_device(request.user) or self._pending(request)
        return self._page(request, device)

    def post(self, request: HttpRequest) -> HttpResponse:
        action = request.POST.get("action", "confirm")
        device = staff_signin.confirmed_totp_device(request.user)
        if device is None:  # enrolment
            pending = self._pending(request)
            if pending is None:
                return self._page(request, None, status=403)
            confirmed = staff_signin.totp_device_confirm(
                actor=Actor.for_user(request.user),
                device=pending,
                token=request.POST.get("code", ""),
            )
            if confirmed is None:
                return self._page(
                    request,
                    pending,
                    status=400,
                    error="That code is not right. Enter the current one.",
                )
            request.session.pop(PORTAL_ENROLMENT_SESSION, None)
            otp_login(request, confirmed)
            messages.success(request, "Your authenticator is set up.")
            return redirect(_safe_next(request))
        form = TotpConfirmForm(request.POST, device=device)
        if not form.is_valid():
            return self._page(request, device, form=form, status=400)
        if action == "remove":
            staff_signin.totp_devices_reset(actor=Actor.for_user(request.user), user=request.user)
            messages.success(request, "Your authenticator was removed.")
            return redirect("portal:security")
        otp_login(request, device)
        return redirect(_safe_next(request))
