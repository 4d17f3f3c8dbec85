"""The current request's id, readable from services (for the audit log) without passing it down."""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar

request_id_var: ContextVar[str] = ContextVar("llmp_request_id", default="")


def client_ip(meta: Mapping[str, str]) -> str:
    """The caller's address from a request's META: REMOTE_ADDR, or with
    ``LLMP_TRUSTED_PROXY_HOPS`` = n > 0 (behind n proxies that append to X-Forwarded-For), the
    n-th address from the right of that header. Addresses further left are set by the client and
    never trusted. One rule for the API, the portal, the admin and the public pages."""
    from django.conf import settings

    hops = settings.LLMP_TRUSTED_PROXY_HOPS
    if hops > 0:
        forwarded = [p.strip() for p in meta.get("HTTP_X_FORWARDED_FOR", "").split(",")
                     if p.strip()]
        if len(forwarded) >= hops:
            return forwarded[-hops]
    return meta.get("REMOTE_ADDR", "") or ""
