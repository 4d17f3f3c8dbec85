"""What each provider kind requires of a ``Provider`` row beyond what every kind shares, checked
the same way by the admin's form and ``apply_config``: values an operator (or a configuration
file) writes are hostile input until checked, because some of them end up in a URL's host or
path (a Vertex location, a project id) or decide where a credential is sent (a default base
URL, which must pass ``LLMP_UPSTREAM_HOSTS`` too)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from gateway.egress import validate_upstream_url

ANTHROPIC_VERSION = re.compile(r"\d{4}-\d{2}-\d{2}")
GOOGLE_API_VERSION = re.compile(r"v\d+(?:alpha|beta)?\d*")
VERTEX_LOCATION = re.compile(r"global|[a-z]+(?:-[a-z0-9]+)+")
# Google's rule: 6 to 30 lower-case letters, digits or hyphens, starting with a letter.
GCP_PROJECT_ID = re.compile(r"[a-z][a-z0-9-]{4,28}[a-z0-9]")
DEFAULT_BASE_URLS = {
    "anthropic": "https://api.anthropic.com",
    "gemini": "https://generativelanguage.googleapis.com",
}
MAX_DEFAULT_MAX_TOKENS = 1_000_000


class ProviderFieldError(ValueError):
    """``field`` (a ``Provider`` field name, or ``extra.<key>``) is wrong; the message never
    repeats the value."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class ProviderFields:
    kind: str
    base_url: str = ""
    api_key_ref: str = ""
    api_version: str = ""
    region: str = ""
    extra: dict[str, Any] | None = None


def vertex_base_url(location: str) -> str:
    host = (
        "aiplatform.googleapis.com"
        if location == "global"
        else (f"{location}-aiplatform.googleapis.com")
    )
    return f"https://{host}"


def check_kind_fields(fields: ProviderFields) -> None:
    """Raise ``ProviderFieldError`` for the first field the kind needs and does not have right.
    Kinds other than anthropic, gemini and vertex are checked elsewhere, as before."""
    kind, extra = fields.kind, fields.extra or {}
    if kind == "anthropic":
        if fields.api_version and not ANTHROPIC_VERSION.fullmatch(fields.api_version):
            raise ProviderFieldError(
                "api_version", "must be an anthropic-version date such as 2023-06-01"
            )
        max_tokens = extra.get("default_max_tokens")
        if max_tokens is not None and (
            isinstance(max_tokens, bool)
            or not isinstance(max_tokens, int)
            or not 1 <= max_tokens <= MAX_DEFAULT_MAX_TOKENS
        ):
            raise ProviderFieldError(
                "extra.default_max_tokens",
                f"must be a whole number from 1 to {MAX_DEFAULT_MAX_TOKENS}",
            )
    if kind in ("gemini", "vertex"):
        if fields.api_version and not GOOGLE_API_VERSION.fullmatch(fields.api_version):
            raise ProviderFieldError("api_version", "must be an API version such as v1 or v1beta")
        if not fields.api_key_ref:
            what = "the API key" if kind == "gemini" else "the service account's JSON key"
            raise ProviderFieldError("api_key_ref", f"is required: a secret reference to {what}")
    if kind == "vertex":
        if not VERTEX_LOCATION.fullmatch(fields.region):
            raise ProviderFieldError(
                "region", "must be a Vertex AI location such as europe-west4, or global"
            )
        project = extra.get("project")
        if not isinstance(project, str) or not GCP_PROJECT_ID.fullmatch(project):
            raise ProviderFieldError(
                "extra.project",
                "must be a Google Cloud project id (6-30 lower-case letters, digits or hyphens)",
            )
    if not fields.base_url:
        default = DEFAULT_BASE_URLS.get(kind)
        if kind == "vertex":
            default = vertex_base_url(fields.region)
        if default:
            try:
                validate_upstream_url(default)
            except ValueError as exc:
                raise ProviderFieldError(
                    "base_url", f"the default endpoint is not allowed: {exc}"
                ) from None
