"""Sign-in through an identity provider (social-auth pipeline steps, see SOCIAL_AUTH_PIPELINE).

There is no self-signup: an identity provider proves who someone is, not that they may use a
tenant. A first sign-in is matched by a *verified* email address to one existing active user
(social-core's ``associate_by_email``), and only a user with a membership of an active tenant
gets in; later sign-ins find the user by the stored (provider, subject) link. Everything else
is refused with a message shown on the login page. Tenant owners (or an administrator) add
people by creating the user and the membership first.
"""

from __future__ import annotations

from typing import Any

import structlog
from django.conf import settings
from social_core.exceptions import AuthException

from llmplatform.models import Membership

log = structlog.get_logger("gateway.portal")

NO_ACCESS = (
    "Your account has no access to this portal. Ask an owner of your tenant to add you; "
    "accounts are not created by signing in."
)


class SignInRefused(AuthException):
    """A provider sign-in the portal does not accept; its message is shown to the person."""

    def __init__(self, backend: Any, message: str, *, reason: str) -> None:
        super().__init__(backend, message)
        self.reason = reason

    def __str__(self) -> str:
        return str(self.args[0])


def ignore_current_session(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """Start from no user even when someone is signed in already, so a provider identity is
    never linked to whoever happens to hold the session: it must match on its own."""
    return {"user": None}


def _email_verified(backend: Any, response: dict[str, Any]) -> bool:
    if backend.name == "azuread-v2-tenant-oauth2":
        from gateway.portal.entra import email_verified

        return email_verified(response)
    claim = response.get("email_verified")
    if claim is None:
        # Generic OIDC: the claim may be only in the ID token, not in the userinfo response.
        claim = (getattr(backend, "id_token", None) or {}).get("email_verified")
    return claim is True or str(claim).lower() == "true"


def require_verified_email(
    backend: Any,
    details: dict[str, Any],
    response: dict[str, Any],
    user: Any = None,
    *args: Any,
    **kwargs: Any,
) -> None:
    """A first sign-in must carry an email address the provider vouches for; an identity
    linked before (``user`` found by its subject) needs none."""
    if user is not None:
        return
    if not (details.get("email") or "").strip():
        log.info("portal_sign_in_refused", backend=backend.name, reason="no_email")
        raise SignInRefused(
            backend,
            "Your identity provider did not share an email address, so the sign-in cannot be "
            "matched to a portal account.",
            reason="no_email",
        )
    if backend.name in settings.PORTAL_OIDC_TRUSTED_EMAIL_BACKENDS:
        return
    if not _email_verified(backend, response):
        log.info("portal_sign_in_refused", backend=backend.name, reason="email_not_verified")
        raise SignInRefused(
            backend,
            "Your identity provider has not verified your email address, so the sign-in cannot "
            "be matched to a portal account.",
            reason="email_not_verified",
        )


def require_membership(backend: Any, user: Any = None, *args: Any, **kwargs: Any) -> None:
    """Only an active user who belongs to an active tenant gets in. The same message whether
    no user matched or the user has no membership, so the answer says nothing about which
    addresses have accounts."""
    if (
        user is None
        or not user.is_active
        or not Membership.objects.filter(user=user, tenant__is_active=True).exists()
    ):
        log.info("portal_sign_in_refused", backend=backend.name, reason="no_membership")
        raise SignInRefused(backend, NO_ACCESS, reason="no_membership")
