"""The admin site: password plus a TOTP code for every staff member (``LLMP_ADMIN_REQUIRE_2FA``).

A staff member signs in with username, password and the code of their authenticator. One who
has no authenticator yet, after a correct password, is sent to ``/admin/otp/setup/``, scans a
QR code (or types the secret) and confirms one code; only then is the session logged in. The
admin lets a session in only when django-otp's middleware finds the verified device in it
(``request.user.is_verified()``), so a session logged in some other way (the portal, a test's
``force_login``) does not reach the admin without going through here.

A wrong code counts as a failed login for django-axes, and gets the same message as a wrong
password, so the form does not tell a guesser that the password was right.
"""

from __future__ import annotations

import time
from typing import Any, Protocol, cast

from django import forms
from django.conf import settings
from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import REDIRECT_FIELD_NAME, get_user_model
from django.contrib.auth import login as auth_login
from django.contrib.auth.decorators import login_not_required
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.signals import user_login_failed
from django.contrib.auth.views import LoginView
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, URLResolver, path, reverse
from django.utils.decorators import method_decorator
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django_otp.plugins.otp_totp.models import TOTPDevice

from llmplatform import staff_signin
from llmplatform.actors import Actor
from llmplatform.adminsite import dashboard as admin_dashboard

#: Session key of an enrolment in progress: the user whose password was right, the backend that
#: accepted it, when, where to go afterwards and the unconfirmed device.
ENROLLMENT_SESSION_KEY = "llmp_admin_enrollment"
ENROLMENT_NOT_ALLOWED = (
    "This account has no authenticator yet, and setting one up has not been allowed. Ask a "
    "superuser to allow it (Users, action \u201cAllow authenticator enrolment\u201d), or run "
    "manage.py allow_enrolment USERNAME on the server."
)
#: An enrolment must be finished this many seconds after the password was given.
ENROLLMENT_SECONDS = 600


def second_factor_required() -> bool:
    return settings.LLMP_ADMIN_REQUIRE_2FA


class _VerifiedUser(Protocol):
    """A user whose second factor was checked: django-otp's ``user_logged_in`` receiver keeps
    ``otp_device`` in the session."""

    otp_device: TOTPDevice


class _AuthenticatedUser(Protocol):
    """A user ``authenticate()`` returned: it names the backend that accepted the password."""

    backend: str


class StaffAuthenticationForm(AdminAuthenticationForm):
    otp_token = forms.CharField(
        label="Authentication code",
        required=False,
        max_length=10,
        help_text="The 6-digit code from your authenticator app. The first time, leave it "
        "empty: you will be asked to set one up.",
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric"}),
    )
    error_messages = {
        **AdminAuthenticationForm.error_messages,
        "invalid_login": "Please enter the correct %(username)s, password and authentication "
        "code for a staff account. Note that the password is case-sensitive.",
    }

    def __init__(self, request: HttpRequest | None = None, *args: Any, **kwargs: Any) -> None:
        super().__init__(request, *args, **kwargs)
        self.enrollment_needed = False

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()  # the password (and axes' lockout check) first
        if not second_factor_required():
            return cleaned
        user = self.get_user()
        if staff_signin.confirmed_totp_device(user) is None:
            if staff_signin.enrolment_grant(user) is None:
                raise forms.ValidationError(ENROLMENT_NOT_ALLOWED, code="enrolment_not_allowed")
            self.enrollment_needed = True
            return cleaned
        device = staff_signin.totp_verify(user=user, token=cleaned.get("otp_token", ""))
        if device is None:
            # Counted by axes like a wrong password (and audited), so codes cannot be guessed
            # faster than passwords.
            user_login_failed.send(
                sender=__name__,
                credentials={get_user_model().USERNAME_FIELD: cleaned.get("username")},
                request=self.request,
                reason="second_factor",
            )
            raise self.get_invalid_login_error()
        # django-otp's user_logged_in receiver stores this device in the session (cast: the
        # attribute it reads is set here).
        cast(_VerifiedUser, user).otp_device = device
        return cleaned


class EnrollmentForm(forms.Form):
    otp_token = forms.CharField(
        label="Code from your authenticator",
        max_length=10,
        widget=forms.TextInput(
            attrs={"autocomplete": "one-time-code", "inputmode": "numeric", "autofocus": True}
        ),
    )


class StaffLoginView(LoginView):
    def form_valid(self, form: AuthenticationForm) -> HttpResponse:
        assert isinstance(form, StaffAuthenticationForm)  # the site's login_form
        if form.enrollment_needed:
            user = form.get_user()
            # A new session id, as a login would get: the page behind it shows a secret.
            self.request.session.cycle_key()
            self.request.session[ENROLLMENT_SESSION_KEY] = {
                "user_id": user.pk,
                # cast: the form's user is the one authenticate() returned.
                "backend": cast(_AuthenticatedUser, user).backend,
                "started_at": time.time(),
                "next": self.get_success_url(),
                "device_id": None,
            }
            return HttpResponseRedirect(
                reverse("admin:otp_setup", current_app=self.request.current_app)
            )
        return super().form_valid(form)


class GovernanceAdminSite(admin.AdminSite):
    login_form = StaffAuthenticationForm
    login_template = "llmplatform/admin/login.html"
    enrollment_template = "llmplatform/admin/otp_setup.html"
    # The officer's dashboard above the app list; the apps fill it
    # (llmplatform.adminsite.dashboard).
    index_template = "llmplatform/admin/index.html"

    def has_permission(self, request: HttpRequest) -> bool:
        if not super().has_permission(request):
            return False
        if not second_factor_required():
            return True
        is_verified = getattr(request.user, "is_verified", None)
        return bool(is_verified and is_verified())

    def index(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> TemplateResponse:
        context = {"dashboard_panels": admin_dashboard.panels(request), **(extra_context or {})}
        return super().index(request, context)

    def get_urls(self) -> list[URLResolver | URLPattern]:
        setup = login_not_required(never_cache(csrf_protect(self.otp_setup)))
        return [path("otp/setup/", setup, name="otp_setup"), *super().get_urls()]

    @method_decorator(never_cache)
    @login_not_required
    def login(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        """Django's admin login, with the view that sends a staff member without an
        authenticator to the enrolment page instead of logging them in."""
        if request.method == "GET" and self.has_permission(request):
            return HttpResponseRedirect(reverse("admin:index", current_app=self.name))
        context = {
            **self.each_context(request),
            "title": "Log in",
            "subtitle": None,
            "app_path": request.get_full_path(),
            "username": request.user.get_username(),
            "second_factor_required": second_factor_required(),
        }
        if REDIRECT_FIELD_NAME not in request.GET and REDIRECT_FIELD_NAME not in request.POST:
            context[REDIRECT_FIELD_NAME] = reverse("admin:index", current_app=self.name)
        context.update(extra_context or {})
        request.current_app = self.name
        response = StaffLoginView.as_view(
            extra_context=context,
            authentication_form=self.login_form,
            template_name=self.login_template,
        )(request)
        # cast: LoginView answers with its page or a redirect, both HttpResponses.
        return cast(HttpResponse, response)

    def _enrollment_user(self, request: HttpRequest) -> Any | None:
        """The staff member whose enrolment this session is in, or None if there is none, it
        is stale, or the user has meanwhile lost staff status or gained an authenticator."""
        state = request.session.get(ENROLLMENT_SESSION_KEY)
        if (
            not isinstance(state, dict)
            or time.time() - state.get("started_at", 0) > ENROLLMENT_SECONDS
        ):
            return None
        # Django takes pk=None (no row matches); the stubs' lookup type leaves None out.
        user = get_user_model()._default_manager.filter(pk=state.get("user_id")).first()  # type: ignore[misc]
        if user is None or not (user.is_active and user.is_staff):
            return None
        if staff_signin.confirmed_totp_device(user) is not None:
            return None
        return user

    def otp_setup(self, request: HttpRequest) -> HttpResponse:
        """Enrolment: show a new authenticator's QR code and secret; one correct code confirms
        it and logs the session in, verified."""
        user = self._enrollment_user(request)
        if user is None:
            request.session.pop(ENROLLMENT_SESSION_KEY, None)
            return HttpResponseRedirect(reverse("admin:login", current_app=self.name))
        state = request.session[ENROLLMENT_SESSION_KEY]
        device = TOTPDevice.objects.filter(
            pk=state.get("device_id"), user=user, confirmed=False
        ).first()
        if device is None:
            device = staff_signin.enrolment_grant(user)
            if device is None:  # the grant expired or was withdrawn meanwhile
                request.session.pop(ENROLLMENT_SESSION_KEY, None)
                return HttpResponseRedirect(reverse("admin:login", current_app=self.name))
            state["device_id"] = device.pk
            request.session[ENROLLMENT_SESSION_KEY] = state

        form = EnrollmentForm(request.POST if request.method == "POST" else None)
        if form.is_valid():
            confirmed = staff_signin.totp_device_confirm(
                actor=Actor.for_user(user), device=device, token=form.cleaned_data["otp_token"]
            )
            if confirmed is not None:
                del request.session[ENROLLMENT_SESSION_KEY]
                user.otp_device = confirmed  # django-otp's receiver keeps it in the session
                auth_login(request, user, backend=state["backend"])
                return HttpResponseRedirect(
                    state.get("next") or reverse("admin:index", current_app=self.name)
                )
            form.add_error(
                "otp_token",
                "That code was not accepted. Check that your phone's "
                "clock is right, wait for the next code and try again.",
            )

        request.current_app = self.name
        context = {
            **self.each_context(request),
            "title": "Set up your authenticator",
            "form": form,
            "enrolling_username": user.get_username(),
            **staff_signin.enrolment_display(device),
        }
        return TemplateResponse(request, self.enrollment_template, context)
