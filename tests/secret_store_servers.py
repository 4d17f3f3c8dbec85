"""Real secret-store servers for tests: Azure Key Vault with its sign-in authority, GCP Secret
Manager with Google's token endpoint, and HashiCorp Vault's HTTP API, on loopback over HTTPS.

Each is a threaded HTTPS server on ``127.0.0.1`` (a free port) with a certificate made for the
test (``StoreCA``); the SDKs trust it through ``LLMP_SECRETS_CA_BUNDLE``, as a deployment with a
private CA would. They speak the services' REST APIs closely enough for the real clients
(azure-identity and azure-keyvault-secrets, google-auth, hvac):

- ``AzureServer``: ``GET /{tenant}/v2.0/.well-known/openid-configuration`` and
  ``POST /{tenant}/oauth2/v2.0/token`` (client secret or a federated client assertion), and Key
  Vault's ``GET /secrets/{name}[/{version}]?api-version=...`` with its 401 bearer challenge.
- ``GcpServer``: ``POST /token`` (a service account's signed JWT, checked against its public key)
  and ``GET /v1/projects/{p}/secrets/{n}/versions/{v}:access``.
- ``VaultServer``: ``POST /v1/auth/approle/login``, ``POST /v1/auth/kubernetes/login`` and
  ``GET /v1/{mount}/data/{path}`` (KV version 2), tokens in ``X-Vault-Token``.

- ``MetadataServer`` (plain HTTP, as the real ones are): the GCE metadata server's ping and
  ``/computeMetadata/v1/instance/service-accounts/default/token``, and App Service's managed
  identity endpoint (``IDENTITY_ENDPOINT``), handing out tokens the stores above accept.

Common attributes: ``url``; ``requests`` (``(method, path)`` in order); ``down`` (every request
gets a 503 while set); ``revoke_tokens()`` (issued tokens stop working: the store answers 401 or
403 until the client signs in again); ``tokens_issued``.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import ssl
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID


class StoreCA:
    """A certificate authority and a server certificate for 127.0.0.1 and localhost."""

    def __init__(self, directory: Path) -> None:
        now = datetime.datetime.now(datetime.UTC)
        ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "llmp test CA")])
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    ]
                ),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        self.ca_file = directory / "ca.pem"
        self.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        self.cert_file = directory / "server.pem"
        self.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.key_file = directory / "server.key"
        self.key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without this, a kept-alive connection waits
    # for the client's delayed ACK (40 ms) on every response.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _dispatch(self) -> None:
        store = self.server.store
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        with store.lock:
            store.requests.append((self.command, parts.path))
            down = store.down
        if down:
            self._send(503, {"error": "service unavailable"})
            return
        status, payload, headers = store.handle(
            self.command, parts.path, parse_qs(parts.query), dict(self.headers), body
        )
        self._send(status, payload, headers)

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = _dispatch


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    store: SecretStoreServer


Reply = tuple[int, Any, dict[str, str]]


class SecretStoreServer:
    def __init__(self, ca: StoreCA | None) -> None:
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str]] = []
        self.down = False
        self.tokens: set[str] = set()
        self.tokens_issued = 0
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.store = self
        if ca is not None:
            self._httpd.socket = ca.server_context().wrap_socket(
                self._httpd.socket, server_side=True
            )
        self.port = self._httpd.server_address[1]
        self.url = f"{'https' if ca else 'http'}://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> SecretStoreServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def issue_token(self) -> str:
        token = uuid.uuid4().hex
        with self.lock:
            self.tokens.add(token)
            self.tokens_issued += 1
        return token

    def revoke_tokens(self) -> None:
        with self.lock:
            self.tokens.clear()

    def bearer_ok(self, headers: dict[str, str]) -> bool:
        auth = {k.lower(): v for k, v in headers.items()}.get("authorization", "")
        return auth.startswith("Bearer ") and auth[7:] in self.tokens

    def handle(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        headers: dict[str, str],
        body: bytes,
    ) -> Reply:
        raise NotImplementedError


class AzureServer(SecretStoreServer):
    """Key Vault and the Microsoft identity platform's token endpoint, on one port."""

    tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47"
    client_id = "0d6e1c1a-7b9e-4a8f-9a61-3c9a51f0e2b1"
    client_secret = "azure-client-secret-for-tests"
    federated_token = "federated-token-from-the-cluster"

    def __init__(self, ca: StoreCA) -> None:
        super().__init__(ca)
        # name -> [(version, value)], newest last
        self.secrets: dict[str, list[tuple[str, str]]] = {}

    def set_secret(self, name: str, value: str) -> str:
        version = uuid.uuid4().hex
        with self.lock:
            self.secrets.setdefault(name, []).append((version, value))
        return version

    def handle(self, method, path, query, headers, body):  # type: ignore[no-untyped-def]
        base = f"{self.url}/{self.tenant}"
        if path == f"/{self.tenant}/v2.0/.well-known/openid-configuration":
            return (
                200,
                {
                    "token_endpoint": f"{base}/oauth2/v2.0/token",
                    "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                    "issuer": f"{base}/v2.0",
                    "tenant_region_scope": "EU",
                },
                {},
            )
        if path == f"/{self.tenant}/oauth2/v2.0/token" and method == "POST":
            form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
            good = form.get("client_id") == self.client_id and (
                form.get("client_secret") == self.client_secret
                or form.get("client_assertion") == self.federated_token
            )
            if not good:
                return 401, {"error": "invalid_client", "error_description": "AADSTS7000215"}, {}
            return (
                200,
                {
                    "token_type": "Bearer",
                    "expires_in": 3600,
                    "ext_expires_in": 3600,
                    "access_token": self.issue_token(),
                },
                {},
            )
        if path.startswith("/secrets/"):
            if not self.bearer_ok(headers):
                # The real service names its resource's domain (vault.azure.net), which the
                # vault's host must end with; for 127.0.0.1 that is "0.0.1:PORT".
                challenge = f'Bearer authorization="{base}", resource="https://0.0.1:{self.port}"'
                return 401, {"error": {"code": "Unauthorized"}}, {"WWW-Authenticate": challenge}
            name, _, version = path.removeprefix("/secrets/").partition("/")
            with self.lock:
                versions = list(self.secrets.get(name, []))
            found = [v for v in versions if v[0] == version] if version else versions[-1:]
            if not found:
                return 404, {"error": {"code": "SecretNotFound", "message": "not found"}}, {}
            version, value = found[-1]
            return (
                200,
                {
                    "value": value,
                    "id": f"{self.url}/secrets/{name}/{version}",
                    "attributes": {"enabled": True, "created": 1700000000, "updated": 1700000000},
                },
                {},
            )
        return 404, {"error": {"code": "NotFound"}}, {}


class GcpServer(SecretStoreServer):
    """Secret Manager's REST API and the OAuth token endpoint a service account's key names."""

    def __init__(self, ca: StoreCA, directory: Path) -> None:
        super().__init__(ca)
        # (project, name) -> values, version n is values[n - 1]
        self.secrets: dict[tuple[str, str], list[str]] = {}
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._public_pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.token_uri = f"{self.url}/token"
        self.credentials_file = directory / "service-account.json"
        self.credentials_file.write_text(
            json.dumps(
                {
                    "type": "service_account",
                    "project_id": "llmp-test",
                    "private_key_id": "k1",
                    "private_key": key.private_bytes(
                        serialization.Encoding.PEM,
                        serialization.PrivateFormat.PKCS8,
                        serialization.NoEncryption(),
                    ).decode(),
                    "client_email": "gateway@llmp-test.iam.gserviceaccount.com",
                    "client_id": "1234567890",
                    "token_uri": self.token_uri,
                }
            )
        )

    def add_version(self, project: str, name: str, value: str) -> int:
        with self.lock:
            versions = self.secrets.setdefault((project, name), [])
            versions.append(value)
            return len(versions)

    def handle(self, method, path, query, headers, body):  # type: ignore[no-untyped-def]
        from google.auth import jwt

        if path == "/token" and method == "POST":
            form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
            try:
                # google-auth addresses the grant to Google's token endpoint, wherever it posts
                # it (the key's token_uri), as Google expects.
                claims = jwt.decode(
                    form["assertion"],
                    certs=self._public_pem,
                    audience="https://oauth2.googleapis.com/token",
                )
            except (KeyError, ValueError):
                return 400, {"error": "invalid_grant"}, {}
            if claims.get("iss") != "gateway@llmp-test.iam.gserviceaccount.com":
                return 400, {"error": "invalid_grant"}, {}
            return (
                200,
                {
                    "access_token": self.issue_token(),
                    "expires_in": 3600,
                    "token_type": "Bearer",
                },
                {},
            )
        prefix, suffix = "/v1/projects/", ":access"
        if path.startswith(prefix) and path.endswith(suffix) and method == "GET":
            if not self.bearer_ok(headers):
                return 401, {"error": {"code": 401, "status": "UNAUTHENTICATED"}}, {}
            parts = path[len(prefix) : -len(suffix)].split("/")
            if len(parts) != 5 or parts[1] != "secrets" or parts[3] != "versions":
                return 400, {"error": {"code": 400, "status": "INVALID_ARGUMENT"}}, {}
            project, _, name, _, version = parts
            with self.lock:
                values = list(self.secrets.get((project, name), []))
            number = (
                len(values) if version == "latest" else int(version) if version.isdigit() else 0
            )
            if not 1 <= number <= len(values):
                return 404, {"error": {"code": 404, "status": "NOT_FOUND"}}, {}
            return (
                200,
                {
                    "name": f"projects/123456/secrets/{name}/versions/{number}",
                    "payload": {"data": base64.b64encode(values[number - 1].encode()).decode()},
                },
                {},
            )
        return 404, {"error": {"code": 404, "status": "NOT_FOUND"}}, {}


class VaultServer(SecretStoreServer):
    """Vault's HTTP API: AppRole and Kubernetes sign-in, a KV version 2 engine."""

    role_id = "b2d4f7a0-5c1e-4f2a-9d3b-6e8f0a1c2d3e"
    secret_id = "approle-secret-id-for-tests"
    kubernetes_role = "llmplatform"
    kubernetes_jwt = "eyJhbGciOiJSUzI1NiJ9.service-account.token"

    def __init__(self, ca: StoreCA) -> None:
        super().__init__(ca)
        # "mount/path" -> versions of the key/value map, newest last
        self.secrets: dict[str, list[dict[str, str]]] = {}

    def put(self, path: str, data: dict[str, str]) -> int:
        with self.lock:
            versions = self.secrets.setdefault(path, [])
            versions.append(dict(data))
            return len(versions)

    def _login(self, ok: bool) -> Reply:
        if not ok:
            return 400, {"errors": ["invalid role or secret ID"]}, {}
        return (
            200,
            {
                "auth": {
                    "client_token": self.issue_token(),
                    "accessor": uuid.uuid4().hex,
                    "policies": ["llmplatform"],
                    "lease_duration": 3600,
                    "renewable": True,
                }
            },
            {},
        )

    def handle(self, method, path, query, headers, body):  # type: ignore[no-untyped-def]
        data = json.loads(body or b"{}")
        if path == "/v1/auth/approle/login" and method in ("POST", "PUT"):
            return self._login(
                data.get("role_id") == self.role_id and data.get("secret_id") == self.secret_id
            )
        if path == "/v1/auth/kubernetes/login" and method in ("POST", "PUT"):
            return self._login(
                data.get("role") == self.kubernetes_role and data.get("jwt") == self.kubernetes_jwt
            )
        mount, _, rest = path.removeprefix("/v1/").partition("/")
        if rest.startswith("data/") and method == "GET":
            token = {k.lower(): v for k, v in headers.items()}.get("x-vault-token", "")
            if token not in self.tokens:
                return 403, {"errors": ["permission denied"]}, {}
            with self.lock:
                versions = list(self.secrets.get(f"{mount}/{rest.removeprefix('data/')}", []))
            if not versions:
                return 404, {"errors": []}, {}
            return (
                200,
                {
                    "request_id": uuid.uuid4().hex,
                    "data": {
                        "data": versions[-1],
                        "metadata": {
                            "created_time": "2026-01-01T00:00:00Z",
                            "deletion_time": "",
                            "destroyed": False,
                            "version": len(versions),
                        },
                    },
                },
                {},
            )
        return 404, {"errors": []}, {}


class MetadataServer(SecretStoreServer):
    """What a cloud machine offers its programs: Google's metadata server and Azure's managed
    identity endpoint, on plain HTTP."""

    identity_header = "app-service-identity-header"

    def __init__(self, *, gcp: GcpServer | None = None, azure: AzureServer | None = None) -> None:
        super().__init__(None)
        self.gcp = gcp
        self.azure = azure

    def handle(self, method, path, query, headers, body):  # type: ignore[no-untyped-def]
        lowered = {k.lower(): v for k, v in headers.items()}
        google = {"Metadata-Flavor": "Google"}
        if path.startswith("/msi/token") and self.azure is not None:
            if lowered.get("x-identity-header") != self.identity_header:
                return 400, {"error": "invalid_request"}, {}
            return (
                200,
                {
                    "access_token": self.azure.issue_token(),
                    "expires_on": str(int(datetime.datetime.now(datetime.UTC).timestamp()) + 3600),
                    "resource": query.get("resource", [""])[0],
                    "token_type": "Bearer",
                },
                {},
            )
        if self.gcp is None or lowered.get("metadata-flavor") != "Google":
            return 403, {"error": "missing Metadata-Flavor"}, {}
        if path == "/":
            return 200, "ok", google
        if path == "/computeMetadata/v1/project/project-id":
            return 200, "llmp-test", google
        accounts = "/computeMetadata/v1/instance/service-accounts/default"
        if path == f"{accounts}/":
            return (
                200,
                {
                    "email": "gateway@llmp-test.iam.gserviceaccount.com",
                    "scopes": ["https://www.googleapis.com/auth/cloud-platform"],
                    "aliases": ["default"],
                },
                google,
            )
        if path == f"{accounts}/token":
            return (
                200,
                {
                    "access_token": self.gcp.issue_token(),
                    "expires_in": 3600,
                    "token_type": "Bearer",
                },
                google,
            )
        return 404, {"error": "not found"}, google
