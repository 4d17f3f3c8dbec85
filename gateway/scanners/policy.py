"""What a scanner's configuration may say (configuration is input: whoever can edit a scanner must
not be able to aim the gateway at the cloud's metadata service, read the server's own secrets,
or hold every request for minutes).

The admin's form and ``apply_config`` call ``check_scanner``; the adapters call
``check_scanner_url`` again before each call (a row saved before the allow-list tightened is
refused too), and their HTTP connections resolve names through ``GuardedResolver``, so a name
that resolves to a link-local address is refused as a literal one is.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from django.conf import settings

from gateway.egress import validate_upstream_url
from gateway.secrets import validate_provider_secret_ref

KINDS = ("http", "bedrock", "presidio")
TIMEOUT_MS_MIN, TIMEOUT_MS_MAX = 50, 30_000
# Names of cloud metadata services (the addresses are link-local, refused below).
METADATA_HOSTS = frozenset(
    {
        "metadata.google.internal",
        "metadata.goog",
        "metadata",
        "instance-data",
        "instance-data.ec2.internal",
    }
)
# Not link-local but metadata all the same (Alibaba Cloud; AWS's IPv6 endpoint).
METADATA_ADDRESSES = frozenset(
    {ipaddress.ip_address("100.100.100.200"), ipaddress.ip_address("fd00:ec2::254")}
)
_HEADER_NAME = re.compile(r"[A-Za-z0-9-]{1,64}")
_GUARDRAIL_ID = re.compile(
    r"[a-z0-9]{1,64}|arn:aws(-[a-z]+)*:bedrock:[a-z0-9-]{1,20}:[0-9]{12}:guardrail/[a-z0-9]+"
)
_GUARDRAIL_VERSION = re.compile(r"[1-9][0-9]{0,7}|DRAFT")
_LANGUAGE = re.compile(r"[a-z]{2,3}(-[A-Za-z]{2,4})?")
_ENTITY = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-[0-9]")
# Headers the gateway sets itself, or that would change how the request is framed.
_RESERVED_HEADERS = frozenset(
    {"host", "content-length", "content-type", "transfer-encoding", "connection"}
)


def _explicitly_allowed(host: str) -> bool:
    """An operator who names a link-local host in ``LLMP_UPSTREAM_HOSTS`` (exactly, not by a
    wildcard) means it."""
    for entry in settings.LLMP_UPSTREAM_HOSTS or ():
        if entry.startswith("*."):
            continue
        named = (urlsplit(f"//{entry}").hostname or "").rstrip(".").lower()
        if named == host:
            return True
    return False


def forbidden_address(address: str) -> bool:
    """A link-local (169.254.0.0/16, fe80::/10) or cloud-metadata address."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_link_local or ip in METADATA_ADDRESSES


def check_scanner_url(url: str) -> None:
    """Raise ``ValueError`` unless ``url`` is http(s), allowed by ``LLMP_UPSTREAM_HOSTS`` and not
    a link-local or metadata host (unless named there exactly). The message names the host,
    never credentials in the URL."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise ValueError("not a valid URL") from None
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError("the URL must be http:// or https:// with a host")
    if parts.username or parts.password:
        raise ValueError("credentials go in the auth header's secret reference, not the URL")
    host = parts.hostname.rstrip(".").lower()
    if (host in METADATA_HOSTS or forbidden_address(host)) and not _explicitly_allowed(host):
        raise ValueError(
            f"the host {host} is link-local or a cloud metadata service; name it in "
            "LLMP_UPSTREAM_HOSTS to allow it"
        )
    validate_upstream_url(url)


def _need(value: Any, field: str, message: str) -> None:
    if not value:
        raise ValueError(f"{field}: {message}")


def check_scanner(
    *,
    kind: str,
    url: str,
    timeout_ms: int,
    auth_header: str = "",
    auth_secret_ref: str = "",
    guardrail_id: str = "",
    guardrail_version: str = "",
    region: str = "",
    language: str = "en",
    score_threshold: float = 0.5,
    entities: Iterable[Any] = (),
    pre_call: bool = True,
    post_call: bool = False,
) -> None:
    """Raise ``ValueError`` (``"<field>: <why>"``) on the first thing a scanner's configuration
    may not say. Messages never repeat a secret reference's value."""
    if kind not in KINDS:
        raise ValueError(f"kind: one of {', '.join(KINDS)}")
    if not isinstance(timeout_ms, int) or not TIMEOUT_MS_MIN <= timeout_ms <= TIMEOUT_MS_MAX:
        raise ValueError(f"timeout_ms: between {TIMEOUT_MS_MIN} and {TIMEOUT_MS_MAX}")
    if not pre_call and not post_call:
        raise ValueError("pre_call: a scanner checks before the call, after it, or both")
    if kind in {"http", "presidio"}:
        _need(url, "url", f"required for a {kind} scanner")
    if url:
        try:
            check_scanner_url(url)
        except ValueError as exc:
            raise ValueError(f"url: {exc}") from None
    if auth_secret_ref:
        if kind == "bedrock":
            raise ValueError("auth_secret_ref: Bedrock signs with AWS credentials, not a header")
        if (
            not _HEADER_NAME.fullmatch(auth_header or "")
            or auth_header.lower() in _RESERVED_HEADERS
        ):
            raise ValueError("auth_header: a header name (letters, digits, '-'), not a framing one")
        try:
            validate_provider_secret_ref(auth_secret_ref)
        except ValueError as exc:
            raise ValueError(f"auth_secret_ref: {exc}") from None
    if kind == "bedrock":
        _need(guardrail_id, "guardrail_id", "required for a Bedrock scanner")
        if not _GUARDRAIL_ID.fullmatch(guardrail_id):
            raise ValueError("guardrail_id: a guardrail id or ARN")
        if not _GUARDRAIL_VERSION.fullmatch(guardrail_version or ""):
            raise ValueError("guardrail_version: a version number or DRAFT")
        if region and not _REGION.fullmatch(region):
            raise ValueError("region: an AWS region such as eu-west-1")
    if kind == "presidio":
        if not _LANGUAGE.fullmatch(language or ""):
            raise ValueError("language: a language code such as en or de")
        if not isinstance(score_threshold, int | float) or not 0 <= score_threshold <= 1:
            raise ValueError("score_threshold: between 0 and 1")
        entities = list(entities) if isinstance(entities, list | tuple) else entities
        if not isinstance(entities, list) or not all(
            isinstance(e, str) and _ENTITY.fullmatch(e) for e in entities
        ):
            raise ValueError("entities: a list of entity types such as PERSON, EMAIL_ADDRESS")


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver, minus link-local and metadata addresses (unless the host is named
    exactly in ``LLMP_UPSTREAM_HOSTS``): a scanner's host name that resolves to one is refused
    as the address itself would be."""

    def __init__(self) -> None:
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        if _explicitly_allowed(host.rstrip(".").lower()):
            return found
        kept = [r for r in found if not forbidden_address(r["host"])]
        if not kept:
            raise OSError(f"{host} resolves only to link-local or metadata addresses")
        return kept

    async def close(self) -> None:
        await self._inner.close()
