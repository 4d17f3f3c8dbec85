"""Resolving provider credentials from secret references, never stored in plain text.

A reference is one of:
- ``env:NAME`` — the environment variable NAME (or the file named by ``NAME_FILE``);
- ``file:/path`` — the content of a file (a mounted Docker/Kubernetes secret), stripped;
- ``aws-sm:SECRET_ID`` or ``aws-sm:SECRET_ID#json_key`` — AWS Secrets Manager: the secret's
  string, or one key of it when the string is a JSON object. SECRET_ID is a name or an ARN;
- ``azure-kv:VAULT/NAME`` or ``azure-kv:VAULT/NAME#version`` — Azure Key Vault;
- ``gcp-sm:PROJECT/NAME`` or ``gcp-sm:PROJECT/NAME#version`` — GCP Secret Manager (``latest``
  when no version is given);
- ``vault:MOUNT/PATH#KEY`` — one key of a HashiCorp Vault KV version 2 secret.
An empty reference resolves to an empty string (an upstream that needs no key). The stores'
clients are in ``llmplatform.secret_stores``.

Values from the stores are cached in-process for ``LLMP_SECRETS_CACHE_SECONDS`` (0 disables the
cache), so the request path does not call a store per request; ``invalidate_secret`` drops a
cached value, and adapters call it after an upstream 401 or 403 so a rotated key is picked up at
once. While a store is down, a cached value is served until its TTL ends, then the reference
fails with an error that names it. Environment and file references are read on every call: they
are local and cheap, and a rotated mounted file should take effect without waiting for a TTL.

No message raised or logged here contains a secret value, or a malformed reference (which may be
a key pasted where a reference belongs).

What a reference may point at is confined (configuration is input: whoever can edit a provider
must not be able to read the server's own secrets through it):
- ``env:`` names must start with a prefix in ``LLMP_SECRET_ENV_PREFIXES``, and never name one of
  the platform's own variables (``RESERVED_ENV_PREFIXES``: ``SECRET_KEY``, ``LLMP_*``,
  ``DATABASE_*``, ``AWS_*``, ...), whatever that setting says;
- ``file:`` paths must lie, after resolving symlinks, inside a directory of
  ``LLMP_SECRET_FILE_DIRS``, and never inside the data directory (the platform's key files),
  ``/proc``, ``/sys`` or ``/dev``;
- ``aws-sm:`` ids (the name part of an ARN) must start with a prefix in
  ``LLMP_SECRET_AWS_PREFIXES``; none is allowed until an operator names one;
- ``azure-kv:`` and ``gcp-sm:`` references must name a vault (project) listed in
  ``LLMP_SECRET_AZURE_VAULTS`` (``LLMP_SECRET_GCP_PROJECTS``), or match an entry
  ``VAULT/name-prefix`` there; ``vault:`` paths must start with a prefix in
  ``LLMP_SECRET_VAULT_PATHS``. Each is empty, allowing nothing, until an operator fills it.
The same check runs when a reference is saved (admin form, ``apply_config``) and again when it
is resolved, so a row written before a setting tightened is refused too.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from llmplatform import secret_stores
from llmplatform.secret_stores import SecretStoreConfig, SecretStoreError

SCHEMES = ("env", "file", "aws-sm", "azure-kv", "gcp-sm", "vault")
REMOTE_SCHEMES = ("aws-sm", "azure-kv", "gcp-sm", "vault")
REFERENCE_HELP = (
    "env:NAME, file:/absolute/path, aws-sm:SECRET_ID[#json_key], azure-kv:VAULT/NAME[#version], "
    "gcp-sm:PROJECT/NAME[#version] or vault:MOUNT/PATH#KEY"
)

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Secrets Manager names use these characters; an ARN adds ':'.
_AWS_SECRET_ID = re.compile(r"[A-Za-z0-9/_+=.@:-]{1,2048}")
# Key Vault: vault names 3-24 letters, digits and '-'; secret names 1-127 of the same; versions
# are 32 hex digits.
_AZURE_REF = re.compile(
    r"([A-Za-z][A-Za-z0-9-]{2,23})/([A-Za-z0-9-]{1,127})(?:#([A-Za-z0-9]{1,64}))?"
)
# Secret Manager: a project id or number, a secret id, a version number, 'latest' or an alias.
_GCP_REF = re.compile(
    r"([a-z][a-z0-9-]{4,28}[a-z0-9]|[0-9]{1,20})/([A-Za-z0-9_-]{1,255})"
    r"(?:#([A-Za-z0-9_-]{1,63}))?"
)
# Vault: MOUNT/PATH (at least two segments, no '.' or '..' segment) and the key.
_VAULT_SEGMENT = r"[A-Za-z0-9_@+=-][A-Za-z0-9_.@+=-]*"
_VAULT_REF = re.compile(rf"({_VAULT_SEGMENT}(?:/{_VAULT_SEGMENT})+)#([A-Za-z0-9_.@+=-]{{1,128}})")
_MAX_REF_LENGTH = 300  # Provider.api_key_ref's max_length


# The platform's own configuration: never readable through a provider's reference, whatever
# LLMP_SECRET_ENV_PREFIXES says.
RESERVED_ENV_PREFIXES = (
    "SECRET_KEY",
    "DJANGO_",
    "LLMP_",
    "DATABASE_",
    "POSTGRES",
    "PG",
    "REDIS_",
    "CELERY_",
    "EMAIL_",
    "AWS_",
    # The stores' sign-in: Azure's service principal and managed identity, Google's
    # credentials file, Vault's token and address.
    "AZURE_CLIENT_",
    "AZURE_TENANT_ID",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_USERNAME",
    "AZURE_PASSWORD",
    "AZURE_AUTHORITY_HOST",
    "IDENTITY_",
    "MSI_",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "VAULT_",
    "SOCIAL_AUTH_",
    "SENTRY_",
    "OTEL_",
)
_NEVER_DIRS = ("/proc", "/sys", "/dev")


class SecretNotFound(Exception):
    """A reference that cannot be resolved. The message names the reference, never a value."""


# ---------------------------------------------------------------------------------------------
# Validation


def validate_secret_ref(ref: str) -> None:
    """Raise ``ValueError`` unless ``ref`` is empty or a well-formed secret reference.

    Checks the form only (nothing is fetched). Messages never repeat the input, since a
    malformed reference is often a raw key pasted in the wrong place.
    """
    if not ref:
        return
    if not isinstance(ref, str):
        raise ValueError(f"a secret reference must be a string ({REFERENCE_HELP})")
    if len(ref) > _MAX_REF_LENGTH:
        raise ValueError(f"a secret reference is at most {_MAX_REF_LENGTH} characters")
    scheme, sep, rest = ref.partition(":")
    if not sep or scheme not in SCHEMES:
        raise ValueError(
            f"not a secret reference: expected {REFERENCE_HELP}; plain-text keys are not accepted"
        )
    if scheme == "env":
        if not _ENV_NAME.fullmatch(rest):
            raise ValueError("env: needs an environment variable name (letters, digits, '_')")
    elif scheme == "file":
        if not rest.startswith("/") or "\x00" in rest or any(c.isspace() for c in rest):
            raise ValueError("file: needs an absolute path without spaces")
    elif scheme == "aws-sm":
        secret_id, hash_sign, json_key = rest.partition("#")
        if not _AWS_SECRET_ID.fullmatch(secret_id):
            raise ValueError("aws-sm: needs a secret name or ARN (letters, digits and /_+=.@-:)")
        if hash_sign and not json_key:
            raise ValueError("aws-sm: the JSON key after '#' is empty")
    elif scheme == "azure-kv":
        if not _AZURE_REF.fullmatch(rest):
            raise ValueError(
                "azure-kv: needs VAULT/NAME[#version] (a vault name, a secret name of letters, "
                "digits and '-', an optional version)"
            )
    elif scheme == "gcp-sm":
        if not _GCP_REF.fullmatch(rest):
            raise ValueError(
                "gcp-sm: needs PROJECT/NAME[#version] (a project id or number, a secret id, an "
                "optional version number, alias or 'latest')"
            )
    elif not _VAULT_REF.fullmatch(rest):
        raise ValueError("vault: needs MOUNT/PATH#KEY (a KV v2 mount, the secret's path, a key)")


def _prefixes(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = value.split(",")
    return tuple(p.strip() for p in value or () if p and p.strip())


def _under(path: str, directory: str) -> bool:
    directory = directory.rstrip("/") or "/"
    return path == directory or path.startswith(directory if directory == "/" else directory + "/")


def _aws_name(secret_id: str) -> str:
    """The secret's name: an ARN's part after ``:secret:``, else the id itself."""
    if secret_id.startswith("arn:"):
        _, _, name = secret_id.partition(":secret:")
        return name
    return secret_id


def _in_containers(container: str, name: str, entries: tuple[str, ...]) -> bool:
    """``VAULT`` allows every secret of that vault; ``VAULT/prefix`` the names it starts."""
    return any(
        container == entry or ("/" in entry and f"{container}/{name}".startswith(entry))
        for entry in entries
    )


def check_secret_ref_allowed(ref: str, *, resolved_path: str | None = None) -> None:
    """Raise ``ValueError`` unless a well-formed ``ref`` points where operators allow.

    ``resolved_path`` (at resolve time) is the file's real path after symlinks.
    """
    if not ref:
        return
    scheme, _, rest = ref.partition(":")
    if scheme == "env":
        if rest.upper().startswith(RESERVED_ENV_PREFIXES):
            raise ValueError(
                f"env:{rest} is one of the platform's own settings and cannot be referenced"
            )
        allowed = _prefixes(settings.LLMP_SECRET_ENV_PREFIXES)
        if not rest.startswith(allowed):
            raise ValueError(
                f"env:{rest} is not allowed: environment variables must start with one of "
                f"LLMP_SECRET_ENV_PREFIXES ({', '.join(allowed) or 'none set'})"
            )
    elif scheme == "file":
        path = resolved_path or os.path.normpath(rest)
        if "/../" in f"{rest}/" or any(_under(path, d) for d in _NEVER_DIRS):
            raise ValueError(f"file:{rest} is outside the allowed secret directories")
        data_dir = os.path.realpath(str(settings.DATA_DIR))
        if _under(path, data_dir) or _under(path, str(settings.DATA_DIR)):
            raise ValueError(f"file:{rest} is in the platform's data directory")
        allowed = _prefixes(settings.LLMP_SECRET_FILE_DIRS)
        if not any(
            _under(path, os.path.realpath(d) if resolved_path else os.path.normpath(d))
            for d in allowed
        ):
            raise ValueError(
                f"file:{rest} is not allowed: secret files must lie in one of "
                f"LLMP_SECRET_FILE_DIRS ({', '.join(allowed) or 'none set'})"
            )
    elif scheme == "aws-sm":
        name = _aws_name(rest.partition("#")[0])
        allowed = _prefixes(settings.LLMP_SECRET_AWS_PREFIXES)
        if not name or not name.startswith(allowed):
            raise ValueError(
                f"aws-sm:{rest.partition('#')[0]} is not allowed: secret names must start with "
                f"one of LLMP_SECRET_AWS_PREFIXES ({', '.join(allowed) or 'none set'})"
            )
    elif scheme in ("azure-kv", "gcp-sm"):
        container, _, name = rest.partition("#")[0].partition("/")
        setting = "LLMP_SECRET_AZURE_VAULTS" if scheme == "azure-kv" else "LLMP_SECRET_GCP_PROJECTS"
        what = "vault" if scheme == "azure-kv" else "project"
        allowed = _prefixes(getattr(settings, setting))
        if not _in_containers(container, name, allowed):
            raise ValueError(
                f"{scheme}:{container}/{name} is not allowed: the {what} (or {what}/name-prefix) "
                f"must be listed in {setting} ({', '.join(allowed) or 'none set'})"
            )
    elif scheme == "vault":
        path = rest.partition("#")[0]
        allowed = _prefixes(settings.LLMP_SECRET_VAULT_PATHS)
        if not path.startswith(allowed):
            raise ValueError(
                f"vault:{path} is not allowed: paths must start with one of "
                f"LLMP_SECRET_VAULT_PATHS ({', '.join(allowed) or 'none set'})"
            )


def validate_provider_secret_ref(ref: str) -> None:
    """Well-formed and allowed: what a provider's ``api_key`` may hold (``ValueError`` if not)."""
    validate_secret_ref(ref)
    check_secret_ref_allowed(ref)


def _parse(ref: str) -> tuple[str, str]:
    try:
        validate_secret_ref(ref)
    except ValueError as exc:
        raise SecretNotFound(f"malformed secret reference: {exc}") from None
    try:
        check_secret_ref_allowed(ref)
    except ValueError as exc:
        raise SecretNotFound(f"refused secret reference: {exc}") from None
    scheme, _, rest = ref.partition(":")
    return scheme, rest


def _read_allowed_file(path: str) -> str:
    """A ``file:`` secret, refused when its real path (after symlinks) leaves the allowed
    directories (a symlink planted in a secrets directory must not reach other files)."""
    try:
        check_secret_ref_allowed(f"file:{path}", resolved_path=os.path.realpath(path))
    except ValueError as exc:
        raise SecretNotFound(f"refused secret reference: {exc}") from None
    return _read_file(path, what=f"secret file {path}")


# ---------------------------------------------------------------------------------------------
# Environment and files


def _read_file(path: str, *, what: str) -> str:
    try:
        return Path(path).read_text().strip()
    except (OSError, UnicodeDecodeError):
        # Not chained: the reference named in the message is enough to act on.
        raise SecretNotFound(f"{what} cannot be read") from None


def _resolve_env(name: str) -> str:
    value = os.environ.get(name)
    if value is not None:
        return value
    file_path = os.environ.get(f"{name}_FILE")
    if file_path:
        return _read_file(file_path, what=f"the file named by environment variable {name}_FILE")
    raise SecretNotFound(f"environment variable {name} (or {name}_FILE) is not set")


# ---------------------------------------------------------------------------------------------
# The cache, shared by the stores

_lock = threading.Lock()
_client: Any = None
# document id (``scheme:id``, a secret's whole value; ``#version`` included where the reference
# pins one) -> (expires at on the monotonic clock, the whole value: text, or Vault's JSON map)
_cache: dict[str, tuple[float, str]] = {}


def _cached(document_id: str) -> str | None:
    entry = _cache.get(document_id)
    if entry is None:
        return None
    expires_at, value = entry
    if time.monotonic() >= expires_at:
        _cache.pop(document_id, None)
        return None
    return value


def _remember(document_id: str, value: str) -> None:
    ttl = float(settings.LLMP_SECRETS_CACHE_SECONDS)
    if ttl > 0:
        _cache[document_id] = (time.monotonic() + ttl, value)


def _document_id(scheme: str, rest: str) -> str:
    """The cache key of what a reference reads: the JSON key (``aws-sm:``, ``vault:``) is not
    part of it, so every key of one secret shares one fetch; a version is."""
    if scheme in ("aws-sm", "vault"):
        rest = rest.partition("#")[0]
    return f"{scheme}:{rest}"


def _store_config() -> SecretStoreConfig:
    return SecretStoreConfig.from_settings(settings)


# ---------------------------------------------------------------------------------------------
# AWS Secrets Manager


def _aws_client() -> Any:
    """One boto3 client per process (boto3 clients are thread-safe; creating one is slow)."""
    global _client
    if _client is None:
        with _lock:
            if _client is None:
                _client = secret_stores.aws_client(_store_config())
    return _client


def _fetch_aws(secret_id: str) -> str:
    try:
        return secret_stores.fetch_aws(_aws_client(), secret_id)
    except SecretStoreError as exc:
        raise SecretNotFound(str(exc)) from None


def _select_json_key(label: str, document: str, key: str) -> str:
    try:
        data = json.loads(document)
    except ValueError:
        # ``from None``: a JSONDecodeError holds the whole document, i.e. the secret.
        raise SecretNotFound(f"{label} is not a JSON object") from None
    if not isinstance(data, dict):
        raise SecretNotFound(f"{label} is not a JSON object")
    if key not in data:
        raise SecretNotFound(f"{label} has no key {key!r}")
    value = data[key]
    if not isinstance(value, str):
        raise SecretNotFound(f"{label} key {key!r} is not a string")
    return value


# ---------------------------------------------------------------------------------------------
# Every store


def _fetch_document(scheme: str, rest: str, config: SecretStoreConfig) -> str:
    """A secret's whole value from its store, uncached."""
    if scheme == "aws-sm":
        return _fetch_aws(rest.partition("#")[0])
    target, _, version = rest.partition("#")
    try:
        if scheme == "azure-kv":
            vault, _, name = target.partition("/")
            return secret_stores.fetch_azure(config, vault, name, version or None)
        if scheme == "gcp-sm":
            project, _, name = target.partition("/")
            return secret_stores.fetch_gcp(config, project, name, version or None)
        return json.dumps(secret_stores.fetch_vault(config, target))
    except SecretStoreError as exc:
        raise SecretNotFound(str(exc)) from None


def _from_document(scheme: str, rest: str, document: str) -> str:
    if scheme == "aws-sm":
        secret_id, _, key = rest.partition("#")
        return _select_json_key(f"AWS secret {secret_id}", document, key) if key else document
    if scheme == "vault":
        path, _, key = rest.partition("#")
        return _select_json_key(f"Vault secret {path}", document, key)
    return document


def _resolve_remote(scheme: str, rest: str, *, document: str | None = None) -> str:
    document_id = _document_id(scheme, rest)
    if document is None:
        document = _cached(document_id)
    if document is None:
        document = _fetch_document(scheme, rest, _store_config())
        _remember(document_id, document)
    return _from_document(scheme, rest, document)


def resolve_platform_secret(ref: str, config: SecretStoreConfig) -> str:
    """A platform secret (``SECRET_KEY_REF`` and the like) while settings load: any kind of
    reference, not confined by the providers' allow-lists (the operator wrote it into the
    environment), not cached. Raises ``SecretNotFound`` naming the reference only."""
    try:
        validate_secret_ref(ref)
    except ValueError as exc:
        raise SecretNotFound(f"malformed secret reference: {exc}") from None
    if not ref:
        raise SecretNotFound("the secret reference is empty")
    scheme, _, rest = ref.partition(":")
    if scheme == "env":
        return _resolve_env(rest)
    if scheme == "file":
        return _read_file(rest, what=f"secret file {rest}")
    if scheme == "aws-sm":
        try:
            document = secret_stores.fetch_aws(
                secret_stores.aws_client(config), rest.partition("#")[0]
            )
        except SecretStoreError as exc:
            raise SecretNotFound(str(exc)) from None
    else:
        document = _fetch_document(scheme, rest, config)
    return _from_document(scheme, rest, document)


# ---------------------------------------------------------------------------------------------
# Public interface


def resolve_secret(ref: str) -> str:
    """The value a reference points at. Raises ``SecretNotFound`` (naming the reference only)."""
    if not ref:
        return ""
    scheme, rest = _parse(ref)
    if scheme == "env":
        return _resolve_env(rest)
    if scheme == "file":
        return _read_allowed_file(rest)
    return _resolve_remote(scheme, rest)


async def aresolve_secret(ref: str) -> str:
    """``resolve_secret`` for the event loop: cache hits and set environment variables return
    at once; anything that does I/O (the stores, files) runs in a worker thread."""
    if not ref:
        return ""
    scheme, rest = _parse(ref)
    if scheme in REMOTE_SCHEMES:
        document = _cached(_document_id(scheme, rest))
        if document is not None:
            return _resolve_remote(scheme, rest, document=document)
    elif scheme == "env":
        value = os.environ.get(rest)
        if value is not None:
            return value
    return await asyncio.to_thread(resolve_secret, ref)


def invalidate_secret(ref: str) -> None:
    """Forget a cached value (called after an upstream rejected it, e.g. after a rotation).

    Every reference to the same secret (any ``#json_key`` or ``#KEY``) is refetched on next use.
    Unknown or malformed references are ignored: there is nothing cached for them.
    """
    if not ref:
        return
    scheme, _, rest = ref.partition(":")
    if scheme in REMOTE_SCHEMES:
        _cache.pop(_document_id(scheme, rest), None)


def clear_secret_cache() -> None:
    """Forget every cached value and the stores' clients (settings changed, or between tests)."""
    global _client
    with _lock:
        _cache.clear()
        _client = None
    secret_stores.clear_clients()


_STORE_SETTINGS = {
    "AWS_REGION",
    "LLMP_AWS_ENDPOINT_URL",
    "LLMP_SECRETS_CACHE_SECONDS",
    "LLMP_SECRETS_CA_BUNDLE",
}


@receiver(setting_changed)
def _on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    # Tests point the resolver at a local endpoint with override_settings / the settings fixture.
    if setting in _STORE_SETTINGS or setting.startswith(("LLMP_AZURE_", "LLMP_GCP_", "LLMP_VAULT")):
        clear_secret_cache()
