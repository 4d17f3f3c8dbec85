"""Which hosts providers may be sent to (``LLMP_UPSTREAM_HOSTS``).

An entry is a host (``api.openai.com``), a host and port (``10.0.0.5:8080``) or a suffix
wildcard (``*.openai.azure.com``, which matches sub-domains only). With no entries every host is
allowed. The embedded model's URL (``LLMP_LOCAL_MODEL_URL``) is always allowed.

The check runs when a provider is saved (admin form, ``apply_config``) and again before any
request or health probe leaves with a credential, so a row saved before the list tightened never
sends its key to a host that is no longer allowed.
"""

from __future__ import annotations

import os
from functools import lru_cache
from urllib.parse import urlsplit

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

DEFAULT_PORTS = {"http": 80, "https": 443}


def _host_port(url: str) -> tuple[str, int | None] | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    return parts.hostname.lower().rstrip("."), port or DEFAULT_PORTS.get(parts.scheme)


@lru_cache(maxsize=1)
def _rules() -> tuple[tuple[str, int | None], ...]:
    """The allow-list as (host, port or None for any). Entries were checked at start-up
    (``llmplatform.settings._host_patterns``)."""
    if not settings.LLMP_UPSTREAM_HOSTS:
        return ()
    rules: list[tuple[str, int | None]] = []
    for entry in settings.LLMP_UPSTREAM_HOSTS:
        wildcard = entry.startswith("*.")
        parts = urlsplit(f"//{entry[2:] if wildcard else entry}")
        host = (parts.hostname or "").rstrip(".")
        rules.append((f"*.{host}" if wildcard else host, parts.port))
    local = _host_port(os.environ.get("LLMP_LOCAL_MODEL_URL", "http://127.0.0.1:8081/v1"))
    if local:
        rules.append(local)
    return tuple(rules)


def host_allowed(url: str) -> bool:
    """True when ``url``'s host (and port, where an entry names one) is allowed."""
    rules = _rules()
    if not rules:
        return True
    found = _host_port(url)
    if found is None:
        return False
    host, port = found
    for rule_host, rule_port in rules:
        if rule_port is not None and rule_port != port:
            continue
        if rule_host.startswith("*."):
            if host.endswith(rule_host[1:]) and host != rule_host[2:]:
                return True
        elif host == rule_host:
            return True
    return False


def host_listed(url: str) -> bool:
    """True only when ``LLMP_UPSTREAM_HOSTS`` has entries and one of them allows ``url``: for
    hosts that configuration names on its own (a service account's ``token_uri``), where an
    empty list must not mean "anywhere"."""
    return bool(settings.LLMP_UPSTREAM_HOSTS) and host_allowed(url)


def validate_upstream_url(url: str) -> None:
    """Raise ``ValueError`` when a provider's URL points at a host that is not allowed."""
    if url and not host_allowed(url):
        found = _host_port(url)
        host = found[0] if found else "this URL"
        raise ValueError(f"the host {host} is not in LLMP_UPSTREAM_HOSTS")


@receiver(setting_changed)
def _on_setting_changed(*, setting: str, **kwargs: object) -> None:
    if setting == "LLMP_UPSTREAM_HOSTS":
        _rules.cache_clear()
