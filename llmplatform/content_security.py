"""The Content-Security-Policy header (django-csp), plus the identity providers' origins.

The policy itself is ``CONTENT_SECURITY_POLICY`` in settings. A portal sign-in through an
identity provider is a form posted to ``/oauth/login/<backend>/`` that is redirected to the
provider, and browsers apply ``form-action`` to that redirect too; so the origins of the
providers that are switched on are added to ``form-action``, read from the same settings that
switch them on (``LLMP_OIDC_*``).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from csp.middleware import CSPMiddleware, PolicyParts
from django.conf import settings
from django.http import HttpRequest, HttpResponseBase

# Sign-in providers whose authorization endpoints are at fixed, well-known origins.
_FIXED_ORIGINS = {
    "SOCIAL_AUTH_AZUREAD_V2_TENANT_OAUTH2_KEY": "https://login.microsoftonline.com",
    "SOCIAL_AUTH_GOOGLE_OAUTH2_KEY": "https://accounts.google.com",
}


def identity_provider_origins() -> list[str]:
    origins = [origin for name, origin in _FIXED_ORIGINS.items() if getattr(settings, name, None)]
    issuer = getattr(settings, "SOCIAL_AUTH_OIDC_OIDC_ENDPOINT", None)
    if issuer:
        parts = urlsplit(issuer)
        origins.append(f"{parts.scheme}://{parts.netloc}")
    return origins


class ContentSecurityPolicyMiddleware(CSPMiddleware):
    def get_policy_parts(
        self, request: HttpRequest, response: HttpResponseBase, report_only: bool = False
    ) -> PolicyParts:
        parts = super().get_policy_parts(request, response, report_only)
        origins = identity_provider_origins()
        if origins:
            update = dict(parts.update or {})
            update["form-action"] = [*update.get("form-action", ()), *origins]
            parts.update = update
        return parts
