"""The current request's id, readable from services (for the audit log) without passing it down."""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar

request_id_var: ContextVar[str] = ContextVar("llmp_request_id", default="")
# The id a client sent (X-Client-Request-ID / X-Request-ID), kept apart from ours.
client_request_id_var: ContextVar[str] = ContextVar("llmp_client_request_id", default="")


def client_ip(meta: Mapping[str, str]) -> str:
    """The caller's address from a request's META: REMOTE_ADDR, or with
    ``LLMP_TRUSTED_PROXY_HOPS`` = n > 0 (behind n proxies that append to X-Forwarded-For), the
    n-th address from the right of that header. Addresses further left are set by the client and
    never trusted. One rule for the API, the portal, the admin and the public pages."""
    from django.conf import settings

    hops = settings.LLMP_TRUSTED_PROXY_HOPS
    if hops > 0:
        forwarded = [
            p.strip() for p in meta.get("HTTP_X_FORWARDED_FOR", "").split(",") if p.strip()
        ]
        if len(forwarded) >= hops:
            return forwarded[-hops]
    return meta.get("REMOTE_ADDR", "") or ""


def client_network(meta: Mapping[str, str]) -> str:
    """``client_ip``, with an IPv6 caller counted as its /64 (one host usually holds a whole
    /64, so keying on the full address would give it 2^64 buckets). The key of every per-address
    throttle and lockout: the API's, the portal's, the admin's and the public pages'."""
    import ipaddress

    address = client_ip(meta)
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address or "unknown"
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False).network_address)
    return str(ip)
