"""Clients for the cloud secret stores: Azure Key Vault, GCP Secret Manager, HashiCorp Vault.

Kept in the kernel, apart from the resolver (``gateway.secrets``), because settings use them
too: the platform's own secrets (``SECRET_KEY_REF`` and the like) are read from a store while
settings load, before Django's settings exist. Everything here takes a ``SecretStoreConfig``;
nothing reads ``django.conf.settings``.

Each ``fetch_*`` returns the secret's text (Vault: its key/value map) or raises
``SecretStoreError`` with a message that names the secret and the kind of failure, never a value
or a credential.

Libraries: azure-keyvault-secrets with azure-identity; for Secret Manager, google-auth's
authorized session on the REST API (``projects/*/secrets/*/versions/*:access``) rather than
google-cloud-secret-manager, whose gRPC client would add grpcio, protobuf and google-api-core
for one GET that google-auth already authenticates (service-account files, workload identity
federation and the metadata server all come from ``google.auth``); hvac for Vault.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

CONNECT_TIMEOUT = 3.0
READ_TIMEOUT = 5.0

AZURE_CREDENTIALS = ("default", "environment", "workload-identity", "managed-identity")
VAULT_AUTH_METHODS = ("token", "approle", "kubernetes")
GCP_SCOPE = "https://www.googleapis.com/auth/cloud-platform"


class SecretStoreError(Exception):
    """A store could not give the secret. The message names the secret, never a value."""


class SecretStoreConfigError(ValueError):
    """A store setting that cannot be used (a URL an attacker might have planted, a bad mode)."""


@dataclass(frozen=True)
class SecretStoreConfig:
    """Where the stores are and how the platform signs in to them (``LLMP_AZURE_*``,
    ``LLMP_GCP_*``, ``LLMP_VAULT_*`` and ``LLMP_SECRETS_CA_BUNDLE``)."""

    ca_bundle: str | None = None
    aws_region: str | None = None
    aws_endpoint_url: str | None = None
    azure_vault_url: str = "https://{vault}.vault.azure.net"
    azure_authority_host: str | None = None
    azure_credential: str = "default"
    gcp_endpoint: str = "https://secretmanager.googleapis.com"
    gcp_credentials_file: str | None = None
    vault_addr: str | None = None
    vault_namespace: str | None = None
    vault_auth: str = "token"
    vault_token: str | None = field(default=None, repr=False)
    vault_approle_role_id: str | None = None
    vault_approle_secret_id: str | None = field(default=None, repr=False)
    vault_approle_mount: str = "approle"
    vault_kubernetes_role: str | None = None
    # A path, not a password.
    vault_kubernetes_token_file: str = "/var/run/secrets/kubernetes.io/serviceaccount/token"  # noqa: S105
    vault_kubernetes_mount: str = "kubernetes"

    @classmethod
    def from_settings(cls, source: Any) -> SecretStoreConfig:
        """From an object with the ``LLMP_*`` settings as attributes (Django's settings, or the
        settings module while it loads)."""

        def get(name: str, default: Any = None) -> Any:
            value = getattr(source, name, default)
            return default if value in (None, "") else value

        return cls(
            ca_bundle=get("LLMP_SECRETS_CA_BUNDLE"),
            aws_region=get("AWS_REGION"),
            aws_endpoint_url=get("LLMP_AWS_ENDPOINT_URL"),
            azure_vault_url=get("LLMP_AZURE_KEYVAULT_URL", cls.azure_vault_url),
            azure_authority_host=get("LLMP_AZURE_AUTHORITY_HOST"),
            azure_credential=get("LLMP_AZURE_CREDENTIAL", cls.azure_credential),
            gcp_endpoint=get("LLMP_GCP_SECRETMANAGER_URL", cls.gcp_endpoint),
            gcp_credentials_file=get("LLMP_GCP_CREDENTIALS_FILE"),
            vault_addr=get("LLMP_VAULT_ADDR"),
            vault_namespace=get("LLMP_VAULT_NAMESPACE"),
            vault_auth=get("LLMP_VAULT_AUTH", cls.vault_auth),
            vault_token=get("LLMP_VAULT_TOKEN"),
            vault_approle_role_id=get("LLMP_VAULT_ROLE_ID"),
            vault_approle_secret_id=get("LLMP_VAULT_SECRET_ID"),
            vault_approle_mount=get("LLMP_VAULT_APPROLE_MOUNT", cls.vault_approle_mount),
            vault_kubernetes_role=get("LLMP_VAULT_KUBERNETES_ROLE"),
            vault_kubernetes_token_file=get(
                "LLMP_VAULT_KUBERNETES_TOKEN_FILE", cls.vault_kubernetes_token_file
            ),
            vault_kubernetes_mount=get("LLMP_VAULT_KUBERNETES_MOUNT", cls.vault_kubernetes_mount),
        )

    def validate(self) -> None:
        """Raise ``SecretStoreConfigError`` on a setting that would send credentials somewhere
        unsafe: a URL that is not HTTPS (plain HTTP only to a Vault agent on loopback), carries
        a user, query or fragment, or an unknown sign-in mode."""
        check_service_url("LLMP_AZURE_KEYVAULT_URL", self.azure_vault_url.replace("{vault}", "v"))
        if self.azure_authority_host:
            check_service_url("LLMP_AZURE_AUTHORITY_HOST", self.azure_authority_host)
        if self.azure_credential not in AZURE_CREDENTIALS:
            raise SecretStoreConfigError(
                f"LLMP_AZURE_CREDENTIAL must be one of {', '.join(AZURE_CREDENTIALS)}"
            )
        check_service_url("LLMP_GCP_SECRETMANAGER_URL", self.gcp_endpoint)
        if self.vault_addr:
            check_service_url("LLMP_VAULT_ADDR", self.vault_addr, http_on_loopback=True)
        if self.vault_auth not in VAULT_AUTH_METHODS:
            raise SecretStoreConfigError(
                f"LLMP_VAULT_AUTH must be one of {', '.join(VAULT_AUTH_METHODS)}"
            )
        if self.ca_bundle and not Path(self.ca_bundle).is_file():
            raise SecretStoreConfigError("LLMP_SECRETS_CA_BUNDLE is not a readable file")


def check_service_url(name: str, url: str, *, http_on_loopback: bool = False) -> None:
    """A store's base URL: ``https://host[:port]`` with no credentials, path, query or fragment
    (``http`` only to loopback when allowed: a local Vault agent)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise SecretStoreConfigError(f"{name} is not a URL") from None
    host = parts.hostname or ""
    loopback = host == "localhost" or _is_loopback_ip(host)
    if parts.scheme != "https" and not (parts.scheme == "http" and http_on_loopback and loopback):
        allowed = (
            "https (http only to 127.0.0.1, ::1 or localhost)" if http_on_loopback else "https"
        )
        raise SecretStoreConfigError(f"{name} must use {allowed}")
    if not host or parts.username is not None or parts.password is not None:
        raise SecretStoreConfigError(f"{name} must name a host, without user or password")
    if parts.path not in ("", "/") or parts.query or parts.fragment or url.endswith(("?", "#")):
        raise SecretStoreConfigError(f"{name} must be a scheme and host only, no path or query")
    if port == 0:
        raise SecretStoreConfigError(f"{name} has an invalid port")


def _is_loopback_ip(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ---------------------------------------------------------------------------------------------
# Clients, one per store and process (each is thread-safe and slow to create)

# Re-entrant: an Azure client's factory asks for the shared credential.
_lock = threading.RLock()
_clients: dict[tuple[str, str], Any] = {}


def clear_clients() -> None:
    with _lock:
        _clients.clear()


def _client(kind: str, key: str, make: Any) -> Any:
    client = _clients.get((kind, key))
    if client is None:
        with _lock:
            client = _clients.get((kind, key))
            if client is None:
                client = _clients[(kind, key)] = make()
    return client


# ---------------------------------------------------------------------------------------------
# AWS Secrets Manager


def aws_client(config: SecretStoreConfig) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "secretsmanager",
        region_name=config.aws_region,
        endpoint_url=config.aws_endpoint_url,
        # A miss happens on the request path: fail in seconds, not minutes.
        config=Config(
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=READ_TIMEOUT,
            retries={"max_attempts": 3, "mode": "standard"},
        ),
    )


def fetch_aws(client: Any, secret_id: str) -> str:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        response = client.get_secret_value(SecretId=secret_id)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        if code == "ResourceNotFoundException":
            raise SecretStoreError(f"AWS secret {secret_id} does not exist") from None
        raise SecretStoreError(f"AWS secret {secret_id} cannot be read ({code})") from None
    except BotoCoreError as exc:
        # Connection and credential errors; their messages carry no secret material.
        raise SecretStoreError(
            f"AWS secret {secret_id} cannot be read ({type(exc).__name__})"
        ) from None
    if "SecretString" in response:
        return str(response["SecretString"])
    try:
        return bytes(response["SecretBinary"]).decode()
    except (KeyError, UnicodeDecodeError):
        raise SecretStoreError(f"AWS secret {secret_id} has no text value") from None


# ---------------------------------------------------------------------------------------------
# Azure Key Vault


def _azure_credential(config: SecretStoreConfig) -> Any:
    from azure import identity

    # Sign-in happens on a cache miss, on the request path: seconds, not azure-core's 300 s.
    kwargs: dict[str, Any] = {"connection_timeout": CONNECT_TIMEOUT, "read_timeout": READ_TIMEOUT}
    if config.ca_bundle:
        kwargs["connection_verify"] = config.ca_bundle
    if config.azure_credential == "managed-identity":
        # A user-assigned identity is named by AZURE_CLIENT_ID, as DefaultAzureCredential does.
        return identity.ManagedIdentityCredential(
            client_id=os.environ.get("AZURE_CLIENT_ID") or None, **kwargs
        )
    if config.azure_authority_host:
        kwargs["authority"] = config.azure_authority_host
        # A private authority is not in Microsoft's instance list: do not ask the public cloud.
        kwargs["disable_instance_discovery"] = True
    if config.azure_credential == "environment":
        return identity.EnvironmentCredential(**kwargs)
    if config.azure_credential == "workload-identity":
        return identity.WorkloadIdentityCredential(**kwargs)
    return identity.DefaultAzureCredential(exclude_interactive_browser_credential=True, **kwargs)


def azure_vault_url(config: SecretStoreConfig, vault: str) -> str:
    return config.azure_vault_url.replace("{vault}", vault).rstrip("/")


def _azure_client(config: SecretStoreConfig, vault: str) -> Any:
    def make() -> Any:
        from azure.keyvault.secrets import SecretClient

        kwargs: dict[str, Any] = {
            "connection_timeout": CONNECT_TIMEOUT,
            "read_timeout": READ_TIMEOUT,
            "retry_total": 2,
        }
        if config.ca_bundle:
            kwargs["connection_verify"] = config.ca_bundle
        return SecretClient(
            vault_url=azure_vault_url(config, vault),
            credential=_client("azure-credential", repr(config), lambda: _azure_credential(config)),
            **kwargs,
        )

    return _client("azure-kv", f"{config!r}|{vault}", make)


def fetch_azure(config: SecretStoreConfig, vault: str, name: str, version: str | None) -> str:
    from azure.core.exceptions import (
        AzureError,
        ClientAuthenticationError,
        HttpResponseError,
        ResourceNotFoundError,
    )

    label = f"Azure Key Vault secret {vault}/{name}" + (f"#{version}" if version else "")
    try:
        secret = _azure_client(config, vault).get_secret(name, version or None)
    except ResourceNotFoundError:
        raise SecretStoreError(f"{label} does not exist") from None
    except ClientAuthenticationError as exc:
        status = getattr(exc, "status_code", None)
        detail = f"HTTP {status}" if status else "sign-in failed"
        raise SecretStoreError(f"{label} cannot be read ({detail})") from None
    except HttpResponseError as exc:
        raise SecretStoreError(f"{label} cannot be read (HTTP {exc.status_code})") from None
    except (AzureError, ValueError) as exc:
        # Connection failures; their messages carry no secret material, but are not kept.
        raise SecretStoreError(f"{label} cannot be read ({type(exc).__name__})") from None
    if secret.value is None:
        raise SecretStoreError(f"{label} has no value")
    return str(secret.value)


# ---------------------------------------------------------------------------------------------
# GCP Secret Manager


def _gcp_session(config: SecretStoreConfig) -> Any:
    def make() -> Any:
        import google.auth
        import requests
        from google.auth.transport.requests import AuthorizedSession, Request

        if config.gcp_credentials_file:
            # A service account's key only: a file the operator names, loaded by its type (a
            # workload identity federation config goes in GOOGLE_APPLICATION_CREDENTIALS).
            from google.oauth2 import service_account

            try:
                credentials = service_account.Credentials.from_service_account_file(  # type: ignore[no-untyped-call]
                    config.gcp_credentials_file, scopes=[GCP_SCOPE]
                )
            except (OSError, ValueError, KeyError):
                raise SecretStoreError(
                    "LLMP_GCP_CREDENTIALS_FILE is not a readable service account key"
                ) from None
        else:
            # GOOGLE_APPLICATION_CREDENTIALS, workload identity federation, or the metadata
            # server on GCE, GKE and Cloud Run.
            credentials, _ = google.auth.default(scopes=[GCP_SCOPE])

        class TokenSession(requests.Session):
            # requests lets REQUESTS_CA_BUNDLE override a session's own CA bundle; the token
            # request is made by google-auth, which passes no ``verify`` of its own.
            def merge_environment_settings(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
                merged = super().merge_environment_settings(*args, **kwargs)
                if config.ca_bundle:
                    merged["verify"] = config.ca_bundle
                return merged

            def request(self, *args: Any, **kwargs: Any) -> Any:
                # google-auth allows a token request 120 s; this one is on the request path.
                kwargs["timeout"] = (CONNECT_TIMEOUT, READ_TIMEOUT)
                return super().request(*args, **kwargs)

        return AuthorizedSession(  # type: ignore[no-untyped-call]
            credentials, auth_request=Request(TokenSession())
        )

    return _client("gcp-sm", repr(config), make)


def fetch_gcp(config: SecretStoreConfig, project: str, name: str, version: str | None) -> str:
    import google.auth.exceptions
    import requests

    label = f"GCP secret {project}/{name}" + (f"#{version}" if version else "")
    url = (
        f"{config.gcp_endpoint.rstrip('/')}/v1/projects/{project}/secrets/{name}"
        f"/versions/{version or 'latest'}:access"
    )
    try:
        # AuthorizedSession refreshes its token and retries once on a 401 by itself.
        response = _gcp_session(config).get(
            url, timeout=(CONNECT_TIMEOUT, READ_TIMEOUT), verify=config.ca_bundle or True
        )
    except google.auth.exceptions.GoogleAuthError as exc:
        raise SecretStoreError(f"{label} cannot be read ({type(exc).__name__})") from None
    except (requests.RequestException, OSError) as exc:
        raise SecretStoreError(f"{label} cannot be read ({type(exc).__name__})") from None
    if response.status_code == 404:
        raise SecretStoreError(f"{label} does not exist")
    if response.status_code != 200:
        raise SecretStoreError(f"{label} cannot be read (HTTP {response.status_code})")
    try:
        data = response.json()["payload"]["data"]
        return base64.b64decode(data, validate=True).decode()
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        # Not chained: the body holds the secret.
        raise SecretStoreError(f"{label} has no text value") from None


# ---------------------------------------------------------------------------------------------
# HashiCorp Vault (KV version 2)


class _VaultSession:
    """An hvac client and the sign-in that gives it a token, repeated when Vault refuses it."""

    def __init__(self, config: SecretStoreConfig) -> None:
        import hvac

        if not config.vault_addr:
            raise SecretStoreError("LLMP_VAULT_ADDR is not set")
        self.config = config
        self.client = hvac.Client(
            url=config.vault_addr,
            verify=config.ca_bundle or True,
            timeout=int(READ_TIMEOUT),
            namespace=config.vault_namespace,
        )
        self._signed_in = False
        self._lock = threading.Lock()

    def sign_in(self) -> None:
        config = self.config
        with self._lock:
            if config.vault_auth == "token":
                if not config.vault_token:
                    raise SecretStoreError("LLMP_VAULT_TOKEN is not set")
                self.client.token = config.vault_token
            elif config.vault_auth == "approle":
                if not config.vault_approle_role_id or not config.vault_approle_secret_id:
                    raise SecretStoreError("LLMP_VAULT_ROLE_ID and LLMP_VAULT_SECRET_ID are needed")
                self.client.auth.approle.login(
                    role_id=config.vault_approle_role_id,
                    secret_id=config.vault_approle_secret_id,
                    mount_point=config.vault_approle_mount,
                )
            else:
                if not config.vault_kubernetes_role:
                    raise SecretStoreError("LLMP_VAULT_KUBERNETES_ROLE is not set")
                try:
                    jwt = Path(config.vault_kubernetes_token_file).read_text().strip()
                except OSError:
                    raise SecretStoreError(
                        "the Kubernetes service account token cannot be read"
                    ) from None
                self.client.auth.kubernetes.login(
                    role=config.vault_kubernetes_role,
                    jwt=jwt,
                    mount_point=config.vault_kubernetes_mount,
                )
            self._signed_in = True

    def read(self, mount: str, path: str) -> Any:
        if not self._signed_in:
            self.sign_in()
        return self.client.secrets.kv.v2.read_secret_version(
            path=path, mount_point=mount, raise_on_deleted_version=True
        )


def fetch_vault(config: SecretStoreConfig, path: str) -> dict[str, Any]:
    """The key/value map at ``path`` (``MOUNT/rest``) of a KV version 2 engine."""
    import hvac.exceptions
    import requests

    label = f"Vault secret {path}"
    mount, _, rest = path.partition("/")
    session: _VaultSession = _client("vault", repr(config), lambda: _VaultSession(config))
    try:
        try:
            response = session.read(mount, rest)
        except (hvac.exceptions.Forbidden, hvac.exceptions.Unauthorized):
            # The token expired or was revoked: sign in again, once.
            session.sign_in()
            response = session.read(mount, rest)
    except hvac.exceptions.InvalidPath:
        raise SecretStoreError(f"{label} does not exist") from None
    except hvac.exceptions.VaultError as exc:
        raise SecretStoreError(f"{label} cannot be read ({type(exc).__name__})") from None
    except (requests.RequestException, OSError) as exc:
        raise SecretStoreError(f"{label} cannot be read ({type(exc).__name__})") from None
    try:
        data = response["data"]["data"]
    except (KeyError, TypeError):
        raise SecretStoreError(f"{label} has no key/value data") from None
    if not isinstance(data, dict):
        raise SecretStoreError(f"{label} has no key/value data")
    return data
