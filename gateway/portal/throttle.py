"""Per-IP rate limits of the portal's unauthenticated routes (django-ratelimit)."""

from __future__ import annotations

import structlog
from django.http import HttpRequest
from django_ratelimit.core import is_ratelimited

from llmplatform.request_context import client_network as request_client_network

log = structlog.get_logger("gateway.portal")


def client_network(group: str, request: HttpRequest) -> str:
    """django-ratelimit's key: the caller's address, an IPv6 caller as its /64."""
    return request_client_network(request.META)


def rate_exceeded(request: HttpRequest, *, group: str, rate: str) -> bool:
    """Count this request against ``rate`` for the caller's address; True once over it."""
    try:
        return is_ratelimited(request, group=group, key=client_network, rate=rate, increment=True)
    except Exception:
        # Fail open: refusing every sign-in while the cache (Redis) is down would lock everyone
        # out of the portal, and django-axes still counts failed passwords in the database.
        log.warning("portal_rate_limit_unavailable", group=group, exc_info=True)
        return False
