"""Staff accounts and their sign-in: Django's users and the admin records of django-otp and
django-axes, each replacing the admin its app registered, audited."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from axes.admin import AccessAttemptAdmin as AxesAccessAttemptAdmin
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib import admin
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.models import User
from django.db import models, transaction
from django.http import HttpRequest, HttpResponse
from django_otp.plugins.otp_totp.models import TOTPDevice

from llmplatform import staff_signin
from llmplatform.actors import Actor
from llmplatform.admin.audit import AuditedModelAdmin
from llmplatform.audit import AuditAction, audit_record

if TYPE_CHECKING:
    # Generic only in django-stubs; at runtime it takes no type arguments.
    _UserAdmin = UserAdmin[User]
else:
    _UserAdmin = UserAdmin


# --- Staff sign-in: the admin records of django-otp and django-axes, audited ----------------


class AuthenticatorAdmin(AuditedModelAdmin):
    """Staff authenticators. Never shows a key; nobody adds or edits one here (each staff
    member enrols their own at sign-in). Deleting one (a lost phone) is audited and makes its
    owner enrol a new one at their next sign-in."""

    list_display = ["user", "name", "confirmed", "created_at", "last_used_at"]
    list_filter = ["confirmed"]
    list_select_related = ["user"]
    search_fields = ["user__username", "name"]
    fields = [
        "user",
        "name",
        "confirmed",
        "created_at",
        "last_used_at",
        "throttling_failure_count",
        "throttling_failure_timestamp",
    ]
    readonly_fields = cast("list[str]", fields)  # the list above: field names only
    audit_exclude = ("key",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: TOTPDevice | None = None) -> bool:
        return False


class AuditedAccessAttemptAdmin(AxesAccessAttemptAdmin):  # type: ignore[misc]  # axes is untyped
    """django-axes' failed-login records. Deleting one lifts a lockout: audited."""

    def _audit_unlock(self, request: HttpRequest, attempt: AccessAttempt) -> None:
        audit_record(
            actor=Actor.for_user(request.user),
            action=AuditAction.AUTH_UNLOCK,
            obj=attempt,
            object_repr=attempt.username or "",
            before={
                "username": attempt.username,
                "ip_address": attempt.ip_address,
                "failures": attempt.failures_since_start,
            },
        )

    def delete_model(self, request: HttpRequest, obj: AccessAttempt) -> None:
        with transaction.atomic():
            self._audit_unlock(request, obj)
            super().delete_model(request, obj)

    # axes declares this action without a permission; it deletes records, so it needs delete.
    @admin.action(description="Clean up expired attempts", permissions=["delete"])
    def cleanup_expired_attempts(
        self, request: HttpRequest, queryset: models.QuerySet[AccessAttempt]
    ) -> None:
        with transaction.atomic():
            count = self.handler.clean_expired_user_attempts(request=request)
            audit_record(
                actor=Actor.for_user(request.user),
                action=AuditAction.AUTH_CLEANUP_EXPIRED_ATTEMPTS,
                after={"deleted": count},
            )
        self.message_user(request, f"Cleaned up {count} expired access attempts.")

    def delete_queryset(
        self, request: HttpRequest, queryset: models.QuerySet[AccessAttempt]
    ) -> None:
        with transaction.atomic():
            for attempt in queryset:
                self._audit_unlock(request, attempt)
            super().delete_queryset(request, queryset)


class AuditedUserAdmin(AuditedModelAdmin, _UserAdmin):
    """Django's user admin; who made whom staff or superuser, and password resets, are in the
    audit log (never the password or its hash)."""

    audit_exclude = ("password", "last_login")
    actions = ["allow_enrolment"]

    @admin.action(
        description="Allow authenticator enrolment at the next sign-in", permissions=["superuser"]
    )
    def allow_enrolment(self, request: HttpRequest, queryset: models.QuerySet[User]) -> None:
        for user in queryset:
            staff_signin.enrolment_allow(actor=Actor.for_user(request.user), user=user)
        self.message_user(
            request,
            f"{queryset.count()} user(s) may set up an authenticator at "
            f"their next sign-in (for {settings.LLMP_ENROLMENT_GRANT_HOURS}"
            " hours).",
        )

    def has_superuser_permission(self, request: HttpRequest) -> bool:
        return request.user.is_active and request.user.is_superuser

    def user_change_password(
        self, request: HttpRequest, id: str, form_url: str = ""
    ) -> HttpResponse:
        with transaction.atomic():
            return super().user_change_password(request, id, form_url)

    def log_change(
        self, request: HttpRequest, obj: User, message: str | list[dict[str, Any]]
    ) -> LogEntry:
        match = request.resolver_match
        # cast: every admin URL has a name.
        if match is not None and cast(str, match.url_name).endswith("_password_change"):
            audit_record(
                actor=Actor.for_user(request.user),
                action=AuditAction.ADMIN_USER_SET_PASSWORD,
                obj=obj,
                after={"usable_password": obj.has_usable_password()},
            )
        return super().log_change(request, obj, message)


for _model, _model_admin in [
    (TOTPDevice, AuthenticatorAdmin),
    (AccessAttempt, AuditedAccessAttemptAdmin),
    (get_user_model(), AuditedUserAdmin),
]:
    if admin.site.is_registered(_model):
        admin.site.unregister(_model)
    admin.site.register(_model, _model_admin)
