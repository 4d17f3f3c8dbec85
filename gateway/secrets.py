"""Resolving provider credentials from secret references, never stored in plain text.

A reference is one of:
- ``env:NAME`` — the environment variable NAME (or the file named by ``NAME_FILE``);
- ``file:/path`` — the content of a file (a mounted Docker/Kubernetes secret);
- ``aws-sm:SECRET_ID`` or ``aws-sm:SECRET_ID#json_key`` — AWS Secrets Manager (TODO: helper).
An empty reference resolves to an empty string (an upstream that needs no key).
"""

from __future__ import annotations

import os
from pathlib import Path


class SecretNotFound(Exception):
    """A reference that cannot be resolved. The message names the reference, never a value."""


def resolve_secret(ref: str) -> str:
    if not ref:
        return ""
    scheme, _, rest = ref.partition(":")
    if scheme == "env":
        value = os.environ.get(rest)
        if value is None and os.environ.get(f"{rest}_FILE"):
            value = Path(os.environ[f"{rest}_FILE"]).read_text().strip()
        if value is None:
            raise SecretNotFound(f"environment variable {rest} is not set")
        return value
    if scheme == "file":
        try:
            return Path(rest).read_text().strip()
        except OSError as exc:
            raise SecretNotFound(f"secret file {rest} cannot be read") from exc
    raise SecretNotFound(f"unknown secret reference scheme {scheme!r}")


async def aresolve_secret(ref: str) -> str:
    return resolve_secret(ref)


def invalidate_secret(ref: str) -> None:
    """Forget a cached value (called after an upstream rejected it, e.g. after a rotation)."""
