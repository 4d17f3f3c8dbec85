"""Per-IP rate limits of the portal's unauthenticated routes (django-ratelimit)."""

from __future__ import annotations

import ipaddress

import structlog
from django.http import HttpRequest
from django_ratelimit.core import is_ratelimited

from llmplatform.request_context import client_ip

log = structlog.get_logger("gateway.portal")


def client_network(group: str, request: HttpRequest) -> str:
    """The caller's address as the gateway sees it (``LLMP_TRUSTED_PROXY_HOPS`` applies); an
    IPv6 caller counts as its /64, which one host usually holds whole."""
    address = client_ip(request.META)
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address or "unknown"
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False).network_address)
    return str(ip)


def rate_exceeded(request: HttpRequest, *, group: str, rate: str) -> bool:
    """Count this request against ``rate`` for the caller's address; True once over it."""
    try:
        return is_ratelimited(request, group=group, key=client_network, rate=rate, increment=True)
    except Exception:
        # Fail open: refusing every sign-in while the cache (Redis) is down would lock everyone
        # out of the portal, and django-axes still counts failed passwords in the database.
        log.warning("portal_rate_limit_unavailable", group=group, exc_info=True)
        return False
