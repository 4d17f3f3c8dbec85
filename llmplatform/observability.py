"""Who may read ``/metrics`` and ``/readyz``'s details: they name aliases, deployments, providers,
costs and process ids. A caller with ``Authorization: Bearer <LLMP_OBSERVABILITY_TOKEN>`` or from
``LLMP_OBSERVABILITY_NETWORKS`` (default loopback: a sidecar, the container's own health check,
``make run``'s terminal) may; anyone else gets 403 from ``/metrics`` and only the status from
``/readyz`` (enough for a load balancer or Kubernetes probe)."""

from __future__ import annotations

import hmac
import ipaddress

from django.conf import settings
from django.http import HttpRequest

from llmplatform.request_context import client_ip


def may_observe(request: HttpRequest) -> bool:
    token = settings.LLMP_OBSERVABILITY_TOKEN
    if token:
        given = request.META.get("HTTP_AUTHORIZATION", "")
        if given.startswith("Bearer ") and hmac.compare_digest(
            given.removeprefix("Bearer ").strip().encode(), token.encode()
        ):
            return True
    try:
        address = ipaddress.ip_address(client_ip(request.META))
    except ValueError:
        return False
    return any(address in network for network in settings.LLMP_OBSERVABILITY_NETWORKS)
