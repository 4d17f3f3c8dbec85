"""Staff sign-in: the second factor (TOTP, django-otp), login throttling (django-axes) and the
audit rows for sign-ins, failures, lockouts and authenticator enrolment.

Audit rows hold the username, the client address and what happened, never a password, an
authentication code or an authenticator's key.
"""

from __future__ import annotations

import math
from base64 import b32encode
from datetime import timedelta
from typing import Any

import qrcode
import qrcode.image.svg
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.safestring import mark_safe
from django_otp.plugins.otp_totp.models import TOTPDevice

from llmplatform.actors import Actor
from llmplatform.audit import AuditAction, audit_record
from llmplatform.models import AuditEvent
from llmplatform.request_context import client_ip as request_client_ip
from llmplatform.request_context import client_network as request_client_network

ANONYMOUS_ACTOR = Actor.anonymous()
DEVICE_NAME = "authenticator"


def client_ip(request: HttpRequest | None) -> str:
    """The caller's address (``LLMP_TRUSTED_PROXY_HOPS`` applies), "" without a request."""
    return request_client_ip(request.META) if request is not None else ""


def axes_client_ip(request: HttpRequest) -> str:
    """AXES_CLIENT_IP_CALLABLE: lockouts count per real client, not per proxy, and an IPv6
    client as its /64 (a host that holds a /64 cannot spread its guesses over it)."""
    network = request_client_network(request.META)
    return network if network != "unknown" else "0.0.0.0"  # noqa: S104 - a bucket, not a bind


# --- Second factor --------------------------------------------------------------------------


def confirmed_totp_device(user: Any) -> TOTPDevice | None:
    return TOTPDevice.objects.devices_for_user(user, confirmed=True).order_by("pk").first()


def totp_verify(*, user: Any, token: str) -> TOTPDevice | None:
    """The user's confirmed authenticator if ``token`` is a current code of it, else None. A
    wrong code counts towards the device's own throttling (django-otp doubles the wait after
    each failure) as well as towards the login lockout, which the caller reports."""
    token = (token or "").strip()
    if not token.isdigit():
        return None
    with transaction.atomic():
        device = (
            TOTPDevice.objects.devices_for_user(user, confirmed=True)
            .select_for_update()
            .order_by("pk")
            .first()
        )
        if device is not None and device.verify_token(token):
            return device
    return None


def enrolment_display(device: TOTPDevice) -> dict[str, Any]:
    """What an enrolment page shows of a new authenticator: its base32 key and a QR code (our
    own SVG markup, made from our own otpauth:// URL: nothing user-typed in it)."""
    image = qrcode.make(device.config_url, image_factory=qrcode.image.svg.SvgPathImage, box_size=8)
    return {
        "secret": b32encode(device.bin_key).decode(),
        "qr_svg": mark_safe(image.to_string(encoding="unicode")),  # noqa: S308
    }


def user_by_username(username: str) -> Any | None:
    user_model = get_user_model()
    return user_model._default_manager.filter(**{user_model.USERNAME_FIELD: username}).first()


# The marker of an enrolment an administrator allowed: an unconfirmed authenticator with this
# name. A staff member without an authenticator can enrol only with one (no trust on first use:
# knowing the password is not enough to bind the second factor).
ENROLMENT_GRANT = "enrolment allowed"


def enrolment_grant(user: Any) -> TOTPDevice | None:
    """The user's open enrolment grant (an administrator's, younger than
    ``LLMP_ENROLMENT_GRANT_HOURS``), or None."""
    since = timezone.now() - timedelta(hours=settings.LLMP_ENROLMENT_GRANT_HOURS)
    return (
        TOTPDevice.objects.filter(
            user=user, confirmed=False, name=ENROLMENT_GRANT, created_at__gte=since
        )
        .order_by("-pk")
        .first()
    )


def enrolment_allow(*, actor: Actor, user: Any) -> TOTPDevice:
    """Let a staff member enrol an authenticator at their next sign-in (a superuser's action,
    or ``manage.py allow_enrolment`` on the server). Audited; replaces an earlier grant."""
    with transaction.atomic():
        TOTPDevice.objects.filter(user=user, confirmed=False).delete()
        device = TOTPDevice.objects.create(user=user, name=ENROLMENT_GRANT, confirmed=False)
        audit_record(
            actor=actor,
            action=AuditAction.OTP_DEVICE_ENROLMENT_ALLOWED,
            object_type=_user_label(),
            object_id=str(user.pk),
            object_repr=user.get_username(),
            after={"user": user.get_username()},
        )
    return device


def totp_device_start(*, user: Any) -> TOTPDevice:
    """A new, unconfirmed authenticator for a staff member who has none; it replaces an
    earlier unconfirmed one (an abandoned enrolment)."""
    with transaction.atomic():
        TOTPDevice.objects.filter(user=user, confirmed=False).delete()
        return TOTPDevice.objects.create(user=user, name=DEVICE_NAME, confirmed=False)


def totp_device_confirm(*, actor: Actor, device: TOTPDevice, token: str) -> TOTPDevice | None:
    """Confirm an enrolment with one code from the new authenticator; audited. None if the
    code is wrong (or the device is gone or already confirmed)."""
    token = (token or "").strip()
    if not token.isdigit():
        return None
    with transaction.atomic():
        device = (
            TOTPDevice.objects.select_for_update().filter(pk=device.pk, confirmed=False).first()
        )
        if device is None or not device.verify_token(token):
            return None
        device.confirmed = True
        device.name = DEVICE_NAME
        device.save(update_fields=["confirmed", "name"])
        username = device.user.get_username()
        audit_record(
            actor=actor,
            action=AuditAction.OTP_DEVICE_ENROLL,
            object_type="otp_totp.TOTPDevice",
            object_id=str(device.pk),
            object_repr=f"{username}: {device.name}",
            after={"user": username, "kind": "totp", "name": device.name},
        )
    return device


def totp_devices_reset(*, actor: Actor, user: Any) -> int:
    """Remove a user's authenticators (a lost phone); audited. A staff member then needs an
    enrolment grant (``enrolment_allow``) to set up a new one."""
    with transaction.atomic():
        removed: int  # QuerySet.delete(): (rows deleted, per model); django-otp is untyped
        removed, _ = TOTPDevice.objects.filter(user=user).delete()
        audit_record(
            actor=actor,
            action=AuditAction.OTP_DEVICE_RESET,
            object_type=_user_label(),
            object_id=str(user.pk),
            object_repr=user.get_username(),
            after={"devices_removed": removed},
        )
    return removed


# --- Audit of sign-ins ----------------------------------------------------------------------


def _user_label() -> str:
    return get_user_model()._meta.label


def _channel(request: HttpRequest | None) -> str:
    path = getattr(request, "path", "") or ""
    return "admin" if path.startswith("/admin/") else "other"


def record_login(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    device = getattr(user, "otp_device", None)
    # A sign-in changes no row of ours: its audit row is the record, in a transaction of its
    # own (or the caller's). The same holds for a failure and a lockout below.
    with transaction.atomic():
        audit_record(
            actor=Actor.for_user(user),
            action=AuditAction.AUTH_LOGIN,
            object_type=_user_label(),
            object_id=str(user.pk),
            object_repr=user.get_username(),
            after={
                "channel": _channel(request),
                "ip_address": client_ip(request),
                "second_factor": "totp" if device is not None else None,
                "is_staff": user.is_staff,
            },
        )


def record_login_failure(
    sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None, **kwargs: Any
) -> None:
    # Only the username is copied: Django masks the password in ``credentials``, but nothing
    # else of what was typed belongs in the log.
    username = str(credentials.get(get_user_model().USERNAME_FIELD) or "")[:150]
    with transaction.atomic():
        audit_record(
            actor=ANONYMOUS_ACTOR,
            action=AuditAction.AUTH_LOGIN_FAILED,
            object_type=_user_label(),
            object_repr=username,
            after={
                "username": username,
                "channel": _channel(request),
                "ip_address": client_ip(request),
                "reason": kwargs.get("reason", "credentials"),
            },
        )


def record_lockout(
    sender: Any,
    request: HttpRequest | None,
    username: str | None,
    ip_address: str | None,
    **kwargs: Any,
) -> None:
    """One row when a username and address are locked. axes signals again for every attempt
    refused while the lock lasts; those are already in the log as failed logins."""
    username = str(username or "")[:150]
    ip_address = ip_address or ""
    lock_started = timezone.now() - timedelta(minutes=settings.LLMP_SIGNIN_LOCKOUT_MINUTES)
    with transaction.atomic():
        if AuditEvent.objects.filter(
            action=AuditAction.AUTH_LOCKOUT,
            object_repr=username,
            after__ip_address=ip_address,
            created_at__gte=lock_started,
        ).exists():
            return
        audit_record(
            actor=ANONYMOUS_ACTOR,
            action=AuditAction.AUTH_LOCKOUT,
            object_type=_user_label(),
            object_repr=username,
            after={
                "username": username,
                "ip_address": ip_address,
                "channel": _channel(request),
                "failure_limit": settings.AXES_FAILURE_LIMIT,
                "cooloff_minutes": settings.LLMP_SIGNIN_LOCKOUT_MINUTES,
            },
        )


def connect_audit_receivers() -> None:
    from axes.signals import user_locked_out

    user_logged_in.connect(record_login, dispatch_uid="llmp_audit_login")
    user_login_failed.connect(record_login_failure, dispatch_uid="llmp_audit_login_failed")
    user_locked_out.connect(record_lockout, dispatch_uid="llmp_audit_lockout")


# --- Lockout page ---------------------------------------------------------------------------


def lockout_response(
    request: HttpRequest, original_response: Any = None, credentials: Any = None
) -> HttpResponse:
    """AXES_LOCKOUT_CALLABLE: a page that says what happened and for how long, status 429.
    Takes no notice of its other arguments: axes passes them in different orders from its
    sync and async middleware."""
    minutes = settings.LLMP_SIGNIN_LOCKOUT_MINUTES
    response = TemplateResponse(
        request,
        "llmplatform/locked_out.html",
        {"failure_limit": settings.AXES_FAILURE_LIMIT, "cooloff_minutes": minutes},
        status=settings.AXES_HTTP_RESPONSE_CODE,
    )
    response["Retry-After"] = str(math.ceil(minutes * 60))
    return response.render()
