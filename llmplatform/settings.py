"""Settings, read from environment variables (see the README's configuration reference).

With nothing set, this is the embedded default: SQLite in WAL mode, caches in files that every
process shares (``LLMP_DATA_DIR/cache``) and a Celery broker in files (``LLMP_DATA_DIR/broker``),
so the platform, its worker and its beat run on a fresh machine with no services. With
``DATABASE_URL``, ``REDIS_URL`` and ``CELERY_BROKER_URL`` set, it is the production shape:
PostgreSQL, Redis as cache and broker, and Celery workers in their own containers.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from llmplatform.env import env_bool, env_float, env_int, env_list, env_str, env_url
from llmplatform.secret_stores import SecretStoreConfig, SecretStoreConfigError

if TYPE_CHECKING:
    from rest_framework.settings import DefaultsSettings  # stub-only: DRF's settings keys

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("LLMP_DATA_DIR", str(BASE_DIR / "var")))

# "embedded" (the default: a single machine, secrets generated on first start) or "production"
# (every secret must be given explicitly, HTTPS is assumed).
LLMP_ENV = env_str("LLMP_ENV", "embedded")
if LLMP_ENV not in {"embedded", "production"}:
    raise ImproperlyConfigured(f"LLMP_ENV must be 'embedded' or 'production', not {LLMP_ENV!r}")
PRODUCTION = LLMP_ENV == "production"


# Values copied from examples and tutorials: a secret equal to one of them (in any letter case)
# is known to whoever reads the same page.
_PLACEHOLDER_SECRETS = {
    "change-me",
    "changeme",
    "change_me",
    "secret",
    "password",
    "insecure",
    "example",
    "test",
    "dev",
    "development",
    "please-change-me",
    "replace-me",
    "your-secret-key",
    "todo",
}
MIN_SECRET_BYTES = 32


def _check_secret(name: str, value: str) -> str:
    """Refuse a secret an attacker could guess: a placeholder, Django's generated development
    key, fewer than 32 bytes, or a run of very few distinct characters ("aaaa...")."""
    lowered = value.strip().lower()
    if lowered in _PLACEHOLDER_SECRETS or lowered.startswith("django-insecure"):
        raise ImproperlyConfigured(
            f"{name} is a placeholder value; set a random one (openssl rand -base64 48)"
        )
    if len(value.encode()) < MIN_SECRET_BYTES:
        raise ImproperlyConfigured(
            f"{name} is shorter than {MIN_SECRET_BYTES} bytes; set a random one "
            "(openssl rand -base64 48)"
        )
    if len(set(value)) < 8:
        raise ImproperlyConfigured(
            f"{name} has fewer than 8 distinct characters; set a random one "
            "(openssl rand -base64 48)"
        )
    return value


# --- Secret stores ---------------------------------------------------------------------------
# Where the platform reads secrets kept in a store: its own (``NAME_REF`` below) and providers'
# (gateway.secrets). See docs/operations.md, "Secrets".
AWS_REGION = env_str("AWS_REGION", env_str("AWS_DEFAULT_REGION", "us-east-1"))
LLMP_AWS_ENDPOINT_URL = env_str("LLMP_AWS_ENDPOINT_URL", None)
# A CA bundle for the stores' TLS (a private Vault CA, a proxy); empty: the system's.
LLMP_SECRETS_CA_BUNDLE = env_str("LLMP_SECRETS_CA_BUNDLE", None)
# Azure Key Vault: the vault URL ({vault} is the reference's vault name; other clouds:
# https://{vault}.vault.azure.cn ...), the sign-in authority (empty: azure-identity's default,
# or AZURE_AUTHORITY_HOST), and which azure-identity credential signs in.
LLMP_AZURE_KEYVAULT_URL = env_str("LLMP_AZURE_KEYVAULT_URL", "https://{vault}.vault.azure.net")
LLMP_AZURE_AUTHORITY_HOST = env_str("LLMP_AZURE_AUTHORITY_HOST", None)
LLMP_AZURE_CREDENTIAL = env_str("LLMP_AZURE_CREDENTIAL", "default")
# GCP Secret Manager: the API's URL, and a credentials file (a service account's key or a
# workload identity federation config); empty: Application Default Credentials (the metadata
# server on GCE, GKE and Cloud Run).
LLMP_GCP_SECRETMANAGER_URL = env_str(
    "LLMP_GCP_SECRETMANAGER_URL", "https://secretmanager.googleapis.com"
)
LLMP_GCP_CREDENTIALS_FILE = env_str("LLMP_GCP_CREDENTIALS_FILE", None)
# HashiCorp Vault (KV version 2): the address (https; http only to a local agent), an optional
# namespace, and the sign-in: token, approle (role id + secret id) or kubernetes (a role and the
# pod's service account token).
LLMP_VAULT_ADDR = env_str("LLMP_VAULT_ADDR", None)
LLMP_VAULT_NAMESPACE = env_str("LLMP_VAULT_NAMESPACE", None)
LLMP_VAULT_AUTH = env_str("LLMP_VAULT_AUTH", "token")
LLMP_VAULT_TOKEN = env_str("LLMP_VAULT_TOKEN", None)
LLMP_VAULT_ROLE_ID = env_str("LLMP_VAULT_ROLE_ID", None)
LLMP_VAULT_SECRET_ID = env_str("LLMP_VAULT_SECRET_ID", None)
LLMP_VAULT_APPROLE_MOUNT = env_str("LLMP_VAULT_APPROLE_MOUNT", "approle")
LLMP_VAULT_KUBERNETES_ROLE = env_str("LLMP_VAULT_KUBERNETES_ROLE", None)
LLMP_VAULT_KUBERNETES_TOKEN_FILE = env_str(
    "LLMP_VAULT_KUBERNETES_TOKEN_FILE", "/var/run/secrets/kubernetes.io/serviceaccount/token"
)
LLMP_VAULT_KUBERNETES_MOUNT = env_str("LLMP_VAULT_KUBERNETES_MOUNT", "kubernetes")
_SECRET_STORES = SecretStoreConfig.from_settings(sys.modules[__name__])
try:
    _SECRET_STORES.validate()
except SecretStoreConfigError as exc:
    raise ImproperlyConfigured(str(exc)) from None


def _platform_secret(name: str) -> str | None:
    """``NAME`` (or ``NAME_FILE``), or the secret that ``NAME_REF`` points at in a store
    (``aws-sm:``, ``azure-kv:``, ``gcp-sm:``, ``vault:``), so a deployment needs no secret in
    its environment. The error names the reference, never a value."""
    value = env_str(name)
    ref = env_str(f"{name}_REF")
    if not ref:
        return value
    if value:
        raise ImproperlyConfigured(f"set {name} or {name}_REF, not both")
    from gateway.secrets import SecretNotFound, resolve_platform_secret

    try:
        return resolve_platform_secret(ref, _SECRET_STORES) or None
    except SecretNotFound as exc:
        raise ImproperlyConfigured(f"{name}_REF: {exc}") from None


def _local_secret(name: str, filename: str) -> str:
    """A secret from the environment or a store; in the embedded mode, generated once and kept
    in DATA_DIR. In production a guessable value stops the start (``_check_secret``)."""
    value = _platform_secret(name)
    if value:
        return _check_secret(name, value) if PRODUCTION else value
    if PRODUCTION:
        raise ImproperlyConfigured(
            f"{name} (or {name}_FILE or {name}_REF) must be set when LLMP_ENV=production"
        )
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    path = DATA_DIR / filename
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(48))
    return path.read_text().strip()


SECRET_KEY = _local_secret("SECRET_KEY", "secret_key")
# Pepper for API-key HMACs. Keys record which pepper hashed them, so a pepper can rotate: put the
# old one in LLMP_API_KEY_PEPPERS_PREVIOUS (comma-separated) until the old keys are rotated.
API_KEY_PEPPER = _local_secret("LLMP_API_KEY_PEPPER", "api_key_pepper")
API_KEY_PEPPERS_PREVIOUS = env_list("LLMP_API_KEY_PEPPERS_PREVIOUS", [])

DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", [] if PRODUCTION else ["127.0.0.1", "localhost", "[::1]"])
if PRODUCTION and not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS must be set when LLMP_ENV=production")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    # django.contrib.admin, with the admin site that asks staff for a second factor.
    "llmplatform.adminsite.apps.GovernanceAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's files, served locally (no CDN)
    "csp",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "axes",
    "social_django",
    "llmplatform",
    "privacy",
    "gateway",
    "deployments",
    "deployments.rollouts",
    "deployments.compliance",
    "deployments.backups",
]

MIDDLEWARE = [
    "llmplatform.middleware.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "llmplatform.content_security.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    # Idle timeout for every session, a shorter absolute age for staff.
    "llmplatform.session_policy.SessionPolicyMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it turns a lockout into its response.
    "axes.middleware.AxesMiddleware",
]

# Login throttling first (django-axes), then OIDC through social-auth, then passwords.
AUTHENTICATION_BACKENDS = [
    # A locked account (failures from any address: llmplatform.account_lockout) is refused
    # first; then axes' per-address lockout.
    "llmplatform.account_lockout.AccountLockoutBackend",
    "axes.backends.AxesStandaloneBackend",
    # OIDC backends are added in the "Portal sign-in" section below, by settings.
    "django.contrib.auth.backends.ModelBackend",
]

ROOT_URLCONF = "llmplatform.urls"
ASGI_APPLICATION = "llmplatform.asgi.application"
WSGI_APPLICATION = "llmplatform.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
DATABASE_URL = env_url("DATABASE_URL", None, schemes=("postgres", "postgresql", "sqlite", "pgsql"))
# Django's own type for the setting (django-stubs' global_settings): NAME may be a Path.
DATABASES: dict[str, dict[str, Any]]
if DATABASE_URL:
    # cast: parse's DBConfig is a TypedDict, which mypy keeps apart from dict[str, Any]; it is a
    # plain dict at runtime, and Django reads it as one.
    DATABASES = {
        "default": cast("dict[str, Any]", dj_database_url.parse(DATABASE_URL, conn_max_age=0))
    }
    # A connection pool: ASGI requests run their ORM calls in per-request threads, so without
    # a pool every request would open a new PostgreSQL connection.
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and env_bool(
        "DATABASE_POOL", True
    ):
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
            "min_size": 1,
            "max_size": env_int("DATABASE_POOL_MAX", 10, minimum=1),
        }
    # The password may come apart from the URL: DATABASE_PASSWORD(_FILE), or a store's
    # reference in DATABASE_PASSWORD_REF.
    _database_password = _platform_secret("DATABASE_PASSWORD")
    if _database_password:
        DATABASES["default"]["PASSWORD"] = _database_password
else:
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": DATA_DIR / "db.sqlite3",
            "OPTIONS": {
                # WAL lets readers run while one writer writes; IMMEDIATE takes the write lock at
                # BEGIN so concurrent writers queue on busy_timeout instead of failing on upgrade.
                "init_command": (
                    "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=5000;"
                ),
                "transaction_mode": "IMMEDIATE",
            },
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache ----------------------------------------------------------------------------------
REDIS_URL = env_url("REDIS_URL", None, schemes=("redis", "rediss", "unix"))
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "llmp",
            "OPTIONS": {
                "CLIENT_CLASS": "django_redis.client.DefaultClient",
                "SOCKET_CONNECT_TIMEOUT": 2,
                "SOCKET_TIMEOUT": 2,
            },
        }
    }
else:
    # The embedded default: Django's file-based cache, which every process of the platform
    # shares (page throttles hold across uvicorn workers; the Celery worker's heartbeat reaches
    # /readyz). Nothing on the API's request path uses it.
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(DATA_DIR / "cache" / "django"),
            "OPTIONS": {"MAX_ENTRIES": 10_000},
        }
    }
# The embedded default's response cache (gateway.cache): a SQLite file shared by the web
# process, the Celery worker and management commands. Unused with REDIS_URL.
LLMP_SHARED_CACHE_PATH = Path(
    env_str("LLMP_SHARED_CACHE_PATH", str(DATA_DIR / "cache" / "responses.sqlite3"))
)

# --- Celery ---------------------------------------------------------------------------------
# Without CELERY_BROKER_URL (the embedded default) the broker is kombu's filesystem transport:
# one file per message under LLMP_DATA_DIR/broker, which needs no server. `runplatform` starts a
# real worker and beat on it; a task queued by any process (the web process, a management
# command) waits there until the worker takes it. See docs/embedded.md, "What runs on one machine".
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", None)
EMBEDDED_BROKER = CELERY_BROKER_URL is None
if EMBEDDED_BROKER:
    _broker_dir = DATA_DIR / "broker"
    for _folder in ("queue", "control"):
        (_broker_dir / _folder).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_URL = "filesystem://localhost/"  # the host is not used; kombu wants one
    CELERY_BROKER_TRANSPORT = "llmplatform.broker:FilesystemTransport"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "control_folder": str(_broker_dir / "control"),
        # How often the worker looks for new messages (seconds).
        "polling_interval": env_float("LLMP_BROKER_POLL_SECONDS", 0.5, minimum=0.05),
    }
    # No broadcast commands (celery inspect/control) over files.
    CELERY_WORKER_ENABLE_REMOTE_CONTROL = False
CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND", None)
# Tasks run in the worker, never inside the process that queued them. (The test suite runs them
# in-process on purpose: tests/conftest.py says so.)
CELERY_TASK_ALWAYS_EAGER = False
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# Messages a worker process reserves ahead. With a server broker, 1: the next task goes to
# whichever worker is free. The embedded file broker is polled, and a worker that has reserved
# nothing more looks again only after the polling interval: reserving 8 ahead lets a batch run
# back to back instead of one task per interval (bench/embedded_broker.py).
CELERY_WORKER_PREFETCH_MULTIPLIER = env_int(
    "LLMP_CELERY_PREFETCH", 8 if EMBEDDED_BROKER else 1, minimum=1
)
CELERY_TIMEZONE = "UTC"

# --- Auth, i18n, static ---------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)

STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True  # serve admin assets without a collectstatic step in the demo

REST_FRAMEWORK: DefaultsSettings = {
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    # DRF documents None here (no user model needed); its stubs allow only a class path.
    "UNAUTHENTICATED_USER": None,  # type: ignore[typeddict-item]
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

# The OpenAPI schema of the API routes (/api/schema/, Swagger UI at /api/schema/docs/). The API
# views are not DRF views: gateway.api.schema describes them with schema-only views.
SPECTACULAR_SETTINGS = {
    "TITLE": "llmplatform API",
    "DESCRIPTION": (
        "The governed, OpenAI-compatible LLM API: chat completions (JSON and SSE), embeddings, "
        "models, "
        "cache invalidation and the privacy API for tenants' apps. Every error is "
        '`{"error": {"message", "type", "param", "code"}}`.'
    ),
    "VERSION": "1",
    "DEFAULT_GENERATOR_CLASS": "gateway.api.schema.ApiSchemaGenerator",
    "SERVE_INCLUDE_SCHEMA": False,
    "ENUM_GENERATE_CHOICE_DESCRIPTION": False,
    # "object": "list" is the same enum in the model list and the embeddings answer.
    "ENUM_NAME_OVERRIDES": {"ListObjectEnum": ["list"]},
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "gateway.api.schema.close_request_objects",
    ],
    # Swagger UI from the installed drf-spectacular-sidecar package, not a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    # No call to swagger.io's online validator.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
    "REDOC_DIST": "SIDECAR",
}

# --- Production hardening -------------------------------------------------------------------
if PRODUCTION:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    # Probed over plain HTTP from inside the network (load balancer, Prometheus).
    SECURE_REDIRECT_EXEMPT = [r"^(healthz|readyz|metrics)$"]
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
SESSION_COOKIE_HTTPONLY = True
# Sessions end after this long whatever happens (Django's default is 14 days), after
# LLMP_SESSION_IDLE_MINUTES without a page, and for staff LLMP_STAFF_SESSION_HOURS after sign-in
# (llmplatform.session_policy).
SESSION_COOKIE_AGE = env_int("LLMP_SESSION_HOURS", 12, minimum=1) * 3600
LLMP_SESSION_IDLE_MINUTES = env_int("LLMP_SESSION_IDLE_MINUTES", 30, minimum=1)
LLMP_STAFF_SESSION_HOURS = env_int("LLMP_STAFF_SESSION_HOURS", 8, minimum=1)
# No script of ours reads the CSRF cookie: forms carry the token.
CSRF_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True

# --- Gateway --------------------------------------------------------------------------------
# How long a verified API key is trusted from the per-process cache; a revocation takes effect
# everywhere within this many seconds.
LLMP_AUTH_CACHE_SECONDS = env_float("LLMP_AUTH_CACHE_SECONDS", 5.0, minimum=0)
# When Redis (shared limit counters) cannot be reached: "open" lets requests through with a loud
# log line and metric, "closed" refuses them with 503. Request and token rate limits default to
# open, spend budgets to closed.
LLMP_LIMITS_REDIS_DOWN_REQUESTS = env_str("LLMP_LIMITS_REDIS_DOWN_REQUESTS", "open")
LLMP_LIMITS_REDIS_DOWN_BUDGETS = env_str("LLMP_LIMITS_REDIS_DOWN_BUDGETS", "closed")
for _name in ("LLMP_LIMITS_REDIS_DOWN_REQUESTS", "LLMP_LIMITS_REDIS_DOWN_BUDGETS"):
    if globals()[_name] not in {"open", "closed"}:
        raise ImproperlyConfigured(f"{_name} must be 'open' or 'closed'")
# Proxies in front of the gateway that append to X-Forwarded-For (0: use the socket's address).
LLMP_TRUSTED_PROXY_HOPS = env_int("LLMP_TRUSTED_PROXY_HOPS", 0, minimum=0)
# Who may read /metrics and /readyz's details (llmplatform.observability): a bearer token, and
# client networks (after LLMP_TRUSTED_PROXY_HOPS). Anyone else: 403 and the bare status.
LLMP_OBSERVABILITY_TOKEN = env_str("LLMP_OBSERVABILITY_TOKEN", "") or ""
if LLMP_OBSERVABILITY_TOKEN and PRODUCTION:
    _check_secret("LLMP_OBSERVABILITY_TOKEN", LLMP_OBSERVABILITY_TOKEN)


def _networks(name: str, default: list[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    networks = []
    for value in env_list(name, default):
        try:
            networks.append(ipaddress.ip_network(value, strict=False))
        except ValueError as exc:
            raise ImproperlyConfigured(f"{name}: {value!r} is not a network (CIDR)") from exc
    return networks


LLMP_OBSERVABILITY_NETWORKS = _networks("LLMP_OBSERVABILITY_NETWORKS", ["127.0.0.0/8", "::1/128"])


def _traces_endpoint() -> str:
    """Where OpenTelemetry traces go (OTLP/HTTP), or "" for off, from OTel's own variables:
    ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (the full URL) or ``OTEL_EXPORTER_OTLP_ENDPOINT``
    (a base URL, ``/v1/traces`` appended); ``LLMP_TRACING`` forces it on (OTel's default
    ``http://localhost:4318`` without an endpoint) or off; ``OTEL_SDK_DISABLED=true`` and
    ``OTEL_TRACES_EXPORTER=none`` turn it off. The URL is checked as hostile input: http(s), a
    host, no credentials in it (they go in ``OTEL_EXPORTER_OTLP_HEADERS``), and it is never
    echoed in an error (it might hold a token)."""
    switch = env_str("LLMP_TRACING", "")
    forced = None if not switch else env_bool("LLMP_TRACING")
    if forced is False or env_bool("OTEL_SDK_DISABLED", False):
        return ""
    exporter = (env_str("OTEL_TRACES_EXPORTER", "otlp") or "otlp").strip().lower()
    if exporter == "none":
        return ""
    if exporter != "otlp":
        raise ImproperlyConfigured("OTEL_TRACES_EXPORTER must be 'otlp' or 'none'")
    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        protocol = env_str(name, "")
        if protocol and protocol.strip() != "http/protobuf":
            raise ImproperlyConfigured(f"{name} must be 'http/protobuf' (OTLP over HTTP)")
    name, endpoint = (
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        env_str("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", ""),
    )
    if not endpoint:
        base = env_str("OTEL_EXPORTER_OTLP_ENDPOINT", "")
        if base:
            name, endpoint = "OTEL_EXPORTER_OTLP_ENDPOINT", base.strip().rstrip("/") + "/v1/traces"
        elif forced:
            return "http://localhost:4318/v1/traces"
        else:
            return ""
    endpoint = endpoint.strip()
    try:
        parts = urlsplit(endpoint)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        parts, port_ok = None, False
    if parts is None or not port_ok or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ImproperlyConfigured(f"{name} must be an http(s) URL with a host")
    if parts.username is not None or parts.password is not None:
        raise ImproperlyConfigured(
            f"{name} must not carry credentials; set OTEL_EXPORTER_OTLP_HEADERS instead"
        )
    if parts.fragment or any(ord(ch) < 33 or ord(ch) == 127 for ch in endpoint):
        raise ImproperlyConfigured(f"{name} must be a plain URL (no fragment, spaces or controls)")
    return endpoint


# OpenTelemetry traces (llmplatform.tracing): off unless an endpoint is configured.
LLMP_TRACES_ENDPOINT = _traces_endpoint()
OTEL_SERVICE_NAME = env_str("OTEL_SERVICE_NAME", "llmplatform")
# Upstream timeouts (seconds) used when a provider does not set its own.
LLMP_UPSTREAM_CONNECT_TIMEOUT = env_float("LLMP_UPSTREAM_CONNECT_TIMEOUT", 5.0, minimum=0.1)
LLMP_UPSTREAM_READ_TIMEOUT = env_float("LLMP_UPSTREAM_READ_TIMEOUT", 120.0, minimum=0.1)
# Concurrent connections per provider and process (each open stream holds one).
LLMP_UPSTREAM_MAX_CONNECTIONS = env_int("LLMP_UPSTREAM_MAX_CONNECTIONS", 2000, minimum=1)
# Largest request body accepted on the API, in bytes.
LLMP_MAX_BODY_BYTES = env_int("LLMP_MAX_BODY_BYTES", 4 * 1024 * 1024, minimum=1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = LLMP_MAX_BODY_BYTES
# Largest request body of the staff pages (/admin/, /deployments/), which take evidence files of
# up to 10 MiB. Every route's body is capped before Django reads it (llmplatform.fastpath).
LLMP_MAX_UPLOAD_BYTES = env_int("LLMP_MAX_UPLOAD_BYTES", 11 * 1024 * 1024, minimum=1024)
# Usage records are written in batches every this many milliseconds (0: each on its own, as
# soon as it is made). A crash loses at most this window of records.
LLMP_USAGE_FLUSH_MS = env_int("LLMP_USAGE_FLUSH_MS", 1000, minimum=0)
# What a request does after its answer (its usage record and limit corrections, a consented
# conversation record, a GPC opt-out, a fallback copy in the cache) runs in the background, off
# the answer's path. On: all of it runs before the response completes, so whoever sent the
# request can read its effects at once. For tests and debugging; production leaves it off.
LLMP_AFTER_ANSWER_INLINE = env_bool("LLMP_AFTER_ANSWER_INLINE", False)
# Response cache: how long an answer is kept (seconds).
LLMP_CACHE_TTL_SECONDS = env_int("LLMP_CACHE_TTL_SECONDS", 3600, minimum=1)
# Per-text memo of screen verdicts and PII findings (gateway.pipeline.verdicts): texts of at
# least LLMP_VERDICT_MIN_CHARS characters are looked up (in Redis, else in this process) so an
# agent resending its history pays the screen once per message, not once per turn; kept for
# LLMP_VERDICT_TTL_SECONDS. Shorter texts are kept by each web process only (in memory). Work
# on at least LLMP_GUARD_OFFLOAD_CHARS characters runs outside the event loop
# (LLMP_GUARD_OFFLOAD: "process", worker processes per web process; "thread"; or "off") so a
# long prompt does not stall the small requests beside it. With LLMP_GUARD_WORKERS of 2 or
# more (default 1: each worker holds about 300 MiB) the screen and the PII pass of a request
# run at once, each in a worker of its own, when the longer of the two has at most
# LLMP_GUARD_SPLIT_MAX_CHARS characters (longer, one worker does both, so a very long request
# does not hold every core).
# LLMP_GUARD_NICE (default 0) runs the workers that many steps of niceness below the web
# process, so the small requests beside a long one get the CPU first; it also leaves the workers
# last in line behind anything else on the machine (measured: docs/benchmarks.md).
LLMP_VERDICT_TTL_SECONDS = env_int("LLMP_VERDICT_TTL_SECONDS", 86400, minimum=1)
LLMP_VERDICT_MIN_CHARS = env_int("LLMP_VERDICT_MIN_CHARS", 500, minimum=1)
LLMP_GUARD_OFFLOAD_CHARS = env_int("LLMP_GUARD_OFFLOAD_CHARS", 20_000, minimum=1)
LLMP_GUARD_OFFLOAD = env_str("LLMP_GUARD_OFFLOAD", "process")
LLMP_GUARD_WORKERS = env_int("LLMP_GUARD_WORKERS", 1, minimum=1)
LLMP_GUARD_NICE = env_int("LLMP_GUARD_NICE", 0, minimum=0)
LLMP_GUARD_SPLIT_MAX_CHARS = env_int("LLMP_GUARD_SPLIT_MAX_CHARS", 150_000, minimum=0)
if LLMP_GUARD_OFFLOAD not in ("process", "thread", "off"):
    raise ImproperlyConfigured("LLMP_GUARD_OFFLOAD must be process, thread or off.")
# External scanners (gateway.scanners): the most a request waits for its pre-call (or its
# post-call) scanners together, which run concurrently, each within its own timeout too. A
# scanner still running then has timed out, and its fail mode decides.
LLMP_SCANNERS_DEADLINE_MS = env_int("LLMP_SCANNERS_DEADLINE_MS", 5000, minimum=50)
if LLMP_SCANNERS_DEADLINE_MS > 60_000:
    raise ImproperlyConfigured("LLMP_SCANNERS_DEADLINE_MS must be at most 60000 (one minute)")
# The secrets resolver's cache lifetime for AWS Secrets Manager values.
LLMP_SECRETS_CACHE_SECONDS = env_float("LLMP_SECRETS_CACHE_SECONDS", 300.0, minimum=0)
# Where a provider's api_key reference may point (gateway.secrets): environment variables whose
# names start with one of these prefixes (never the platform's own, whatever is listed), files
# inside these directories, and Secrets Manager names starting with one of these (none by
# default: an operator names the prefix their provider keys live under).
LLMP_SECRET_ENV_PREFIXES = tuple(
    p.strip()
    for p in env_str(
        "LLMP_SECRET_ENV_PREFIXES",
        "PROVIDER_,OPENAI_,ANTHROPIC_,AZURE_OPENAI_,GEMINI_,MISTRAL_,COHERE_,GROQ_,TOGETHER_,"
        "LOCAL_MODEL_",
    ).split(",")
    if p.strip()
)
LLMP_SECRET_FILE_DIRS = tuple(
    p.strip()
    for p in env_str("LLMP_SECRET_FILE_DIRS", "/run/secrets,/var/run/secrets/llmplatform").split(
        ","
    )
    if p.strip()
)
LLMP_SECRET_AWS_PREFIXES = tuple(
    p.strip() for p in env_str("LLMP_SECRET_AWS_PREFIXES", "").split(",") if p.strip()
)
# Key Vault vaults and GCP projects providers may read from ("VAULT" for all its secrets,
# "VAULT/name-prefix" for some), and Vault KV paths (prefixes, "secret/llm/"): none by default.
LLMP_SECRET_AZURE_VAULTS = tuple(
    p.strip() for p in env_str("LLMP_SECRET_AZURE_VAULTS", "").split(",") if p.strip()
)
LLMP_SECRET_GCP_PROJECTS = tuple(
    p.strip() for p in env_str("LLMP_SECRET_GCP_PROJECTS", "").split(",") if p.strip()
)
LLMP_SECRET_VAULT_PATHS = tuple(
    p.strip() for p in env_str("LLMP_SECRET_VAULT_PATHS", "").split(",") if p.strip()
)


# Hosts providers may be sent to (gateway.egress): "api.openai.com", "*.openai.azure.com",
# "10.0.0.5:8080". Empty: any host. The embedded model's own URL is always allowed.
def _host_patterns(name: str) -> tuple[str, ...]:
    entries = tuple(p.strip().lower() for p in env_str(name, "").split(",") if p.strip())
    pattern = re.compile(r"(\*\.)?([a-z0-9-]+\.)*[a-z0-9-]+(:\d{1,5})?|\[[0-9a-f:.]+\](:\d{1,5})?")
    for entry in entries:
        if not pattern.fullmatch(entry):
            raise ImproperlyConfigured(
                f"{name}: {entry[:80]!r} is not a host, host:port, [IPv6]:port or *.domain"
            )
    return entries


LLMP_UPSTREAM_HOSTS = _host_patterns("LLMP_UPSTREAM_HOSTS")

# --- Logging --------------------------------------------------------------------------------
LOG_LEVEL = env_str("LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {"()": "llmplatform.logging.json_formatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
        "botocore": {"level": "WARNING"},
        # The secret stores' SDKs log each request (headers, at INFO) and sign-in at DEBUG.
        "azure": {"level": "WARNING"},
        "msal": {"level": "WARNING"},
        "google.auth": {"level": "WARNING"},
        "hvac": {"level": "WARNING"},
    },
}

# --- Portal sign-in -------------------------------------------------------------------------
# The tenant portal (/portal/) signs people in with a password or through an identity provider
# (social-auth). Each provider is switched on by its settings. A provider sign-in never creates
# a user or a membership: it is matched by a verified email to an existing user who belongs to
# a tenant, and refused otherwise (gateway.portal.oidc).
LOGIN_URL = "/portal/login/"
LOGIN_REDIRECT_URL = "/portal/"
LOGOUT_REDIRECT_URL = "/portal/login/"

_RATE = r"^\d+/\d*[smhd]$"


def _portal_rate(name: str, default: str) -> str:
    import re

    value = env_str(name, default)
    if not re.match(_RATE, value):
        raise ImproperlyConfigured(f"{name}={value!r} is not a rate such as 10/m or 100/h")
    return value


# Per client IP, in the default cache (Redis when REDIS_URL is set; without it, the file-based
# cache every process of the embedded default shares):
# password sign-in attempts, and provider sign-in starts and callbacks.
LLMP_PORTAL_LOGIN_RATE = _portal_rate("LLMP_PORTAL_LOGIN_RATE", "10/m")
LLMP_PORTAL_OIDC_RATE = _portal_rate("LLMP_PORTAL_OIDC_RATE", "30/m")
RATELIMIT_USE_CACHE = "default"

SOCIAL_AUTH_URL_NAMESPACE = "social"
SOCIAL_AUTH_JSONFIELD_ENABLED = True
SOCIAL_AUTH_LOGIN_REDIRECT_URL = LOGIN_REDIRECT_URL
SOCIAL_AUTH_LOGIN_ERROR_URL = LOGIN_URL
SOCIAL_AUTH_INACTIVE_USER_URL = LOGIN_URL
# A sign-in starts only from the login page's CSRF-protected form, not from a link elsewhere.
SOCIAL_AUTH_REQUIRE_POST = True
SOCIAL_AUTH_REDIRECT_IS_HTTPS = PRODUCTION
SOCIAL_AUTH_PIPELINE = (
    "gateway.portal.oidc.ignore_current_session",
    "social_core.pipeline.social_auth.social_details",
    "social_core.pipeline.social_auth.social_uid",
    "social_core.pipeline.social_auth.auth_allowed",
    "social_core.pipeline.social_auth.social_user",
    "gateway.portal.oidc.require_verified_email",
    "social_core.pipeline.social_auth.associate_by_email",
    "gateway.portal.oidc.require_membership",
    "social_core.pipeline.social_auth.associate_user",
    # No load_extra_data: the provider's access, refresh and ID tokens are not needed after
    # sign-in, so they are not kept. No create_user: there is no self-signup.
)

_portal_backends: list[str] = []
# Providers whose email claim is trusted without an email_verified claim (none by default:
# Entra ID's is checked with its xms_edov claim, gateway.portal.entra).
PORTAL_OIDC_TRUSTED_EMAIL_BACKENDS: list[str] = []
# The label of each provider's button ("Sign in with <label>").
PORTAL_OIDC_LABELS = {
    "azuread-v2-tenant-oauth2": env_str("LLMP_OIDC_ENTRA_NAME", "Microsoft"),
    "google-oauth2": env_str("LLMP_OIDC_GOOGLE_NAME", "Google"),
    "oidc": env_str("LLMP_OIDC_NAME", "OIDC"),
}


def _all_or_none(*names: str) -> bool:
    given = [name for name in names if env_str(name)]
    if given and len(given) != len(names):
        missing = ", ".join(name for name in names if name not in given)
        raise ImproperlyConfigured(f"{', '.join(given)} set without {missing}")
    return bool(given)


# Microsoft Entra ID, one directory (tenant) only.
if _all_or_none(
    "LLMP_OIDC_ENTRA_CLIENT_ID", "LLMP_OIDC_ENTRA_CLIENT_SECRET", "LLMP_OIDC_ENTRA_TENANT_ID"
):
    SOCIAL_AUTH_AZUREAD_V2_TENANT_OAUTH2_KEY = env_str("LLMP_OIDC_ENTRA_CLIENT_ID")
    SOCIAL_AUTH_AZUREAD_V2_TENANT_OAUTH2_SECRET = env_str("LLMP_OIDC_ENTRA_CLIENT_SECRET")
    SOCIAL_AUTH_AZUREAD_V2_TENANT_OAUTH2_TENANT_ID = env_str("LLMP_OIDC_ENTRA_TENANT_ID")
    # Matched on the immutable object id, not the changeable preferred_username.
    _portal_backends.append("gateway.portal.entra.EntraIDOAuth2")

# Google; LLMP_OIDC_GOOGLE_DOMAINS limits sign-in to Workspace domains (comma-separated).
if _all_or_none("LLMP_OIDC_GOOGLE_CLIENT_ID", "LLMP_OIDC_GOOGLE_CLIENT_SECRET"):
    SOCIAL_AUTH_GOOGLE_OAUTH2_KEY = env_str("LLMP_OIDC_GOOGLE_CLIENT_ID")
    SOCIAL_AUTH_GOOGLE_OAUTH2_SECRET = env_str("LLMP_OIDC_GOOGLE_CLIENT_SECRET")
    SOCIAL_AUTH_GOOGLE_OAUTH2_WHITELISTED_DOMAINS = env_list("LLMP_OIDC_GOOGLE_DOMAINS", [])
    _portal_backends.append("social_core.backends.google.GoogleOAuth2")

# Any OpenID Connect provider (Keycloak, Okta, Authentik...): LLMP_OIDC_ENDPOINT is the issuer
# URL, without /.well-known/openid-configuration. Its email claim must come with
# email_verified=true unless LLMP_OIDC_TRUST_EMAIL says the provider verifies every address.
if _all_or_none("LLMP_OIDC_ENDPOINT", "LLMP_OIDC_CLIENT_ID", "LLMP_OIDC_CLIENT_SECRET"):
    _oidc_endpoint = env_url(
        "LLMP_OIDC_ENDPOINT", None, schemes=("https",) if PRODUCTION else ("https", "http")
    )
    assert _oidc_endpoint is not None  # _all_or_none found it set
    SOCIAL_AUTH_OIDC_OIDC_ENDPOINT = _oidc_endpoint.rstrip("/")
    SOCIAL_AUTH_OIDC_KEY = env_str("LLMP_OIDC_CLIENT_ID")
    SOCIAL_AUTH_OIDC_SECRET = env_str("LLMP_OIDC_CLIENT_SECRET")
    SOCIAL_AUTH_OIDC_USE_PKCE = True
    _portal_backends.append("social_core.backends.open_id_connect.OpenIdConnectAuth")
    if env_bool("LLMP_OIDC_TRUST_EMAIL", False):
        PORTAL_OIDC_TRUSTED_EMAIL_BACKENDS.append("oidc")

# Provider backends go after axes and before ModelBackend (the password check).
_password_backend = "django.contrib.auth.backends.ModelBackend"  # noqa: S105 - a class path
_at = (
    AUTHENTICATION_BACKENDS.index(_password_backend)
    if _password_backend in AUTHENTICATION_BACKENDS
    else len(AUTHENTICATION_BACKENDS)
)
AUTHENTICATION_BACKENDS[_at:_at] = _portal_backends

# --- Content-Security-Policy (django-csp) ---------------------------------------------------
# On every page (admin, portal, public privacy pages, API docs), in every mode, so a page that
# breaks under it breaks in development and tests first. Scripts only from our own origin, as
# files (no inline script, no eval); nothing may frame a page. Styles also allow inline
# `<style>`/`style=` (a few templates and Swagger UI use them): a style cannot run script, and
# with images, fonts and connections limited to our origin it cannot send data anywhere.
# Forms post to our origin only; the middleware (llmplatform.content_security) adds the
# origins of the sign-in providers that are switched on, where portal sign-in forms redirect.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
        **({"upgrade-insecure-requests": True} if PRODUCTION else {}),
    },
}

# --- Admin sign-in --------------------------------------------------------------------------
# Staff sign in to /admin/ with a password and a TOTP code (django-otp); one without an
# authenticator is sent to enrol one after the password. Off only for a local demo.
LLMP_ADMIN_REQUIRE_2FA = env_bool("LLMP_ADMIN_REQUIRE_2FA", True)
# A staff member without an authenticator may set one up only within this many hours of a
# superuser allowing it (or `manage.py allow_enrolment`): never on a password alone.
LLMP_ENROLMENT_GRANT_HOURS = env_int("LLMP_ENROLMENT_GRANT_HOURS", 72, minimum=1)
OTP_TOTP_ISSUER = "llmplatform"
# The admin never shows an authenticator's key or QR code after enrolment.
OTP_ADMIN_HIDE_SENSITIVE_DATA = True

# Login throttling (django-axes) for every password sign-in, admin and portal: after 5 failures
# for one username from one address, that pair is locked for 15 minutes, the right password
# included. A wrong TOTP code counts as a failure. Counts are kept in the database.
AXES_ENABLED = env_bool("AXES_ENABLED", True)
AXES_HANDLER = "axes.handlers.database.AxesDatabaseHandler"
AXES_FAILURE_LIMIT = env_int("LLMP_SIGNIN_FAILURE_LIMIT", 5, minimum=1)
LLMP_SIGNIN_LOCKOUT_MINUTES = env_int("LLMP_SIGNIN_LOCKOUT_MINUTES", 15, minimum=1)
AXES_COOLOFF_TIME = LLMP_SIGNIN_LOCKOUT_MINUTES / 60  # axes reads a float as hours
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
# Failures for one account from any address before it is locked for the same minutes
# (llmplatform.account_lockout): a distributed guesser is stopped too.
LLMP_SIGNIN_ACCOUNT_FAILURE_LIMIT = env_int("LLMP_SIGNIN_ACCOUNT_FAILURE_LIMIT", 20, minimum=2)
AXES_RESET_ON_SUCCESS = True
# The lock ends 15 minutes after it began; attempts while it lasts do not extend it.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
# Behind proxies, the address LLMP_TRUSTED_PROXY_HOPS says (as the gateway counts it).
AXES_CLIENT_IP_CALLABLE = "llmplatform.staff_signin.axes_client_ip"
AXES_LOCKOUT_CALLABLE = "llmplatform.staff_signin.lockout_response"
AXES_HTTP_RESPONSE_CODE = 429
# Masked in the form data axes keeps of a failed attempt ("password" always is).
AXES_SENSITIVE_PARAMETERS = ["otp_token", "csrfmiddlewaretoken"]

# --- Privacy: data-subject requests ---------------------------------------------------------
# Emails to data subjects (identity codes, completion, rejection, export links). Without
# EMAIL_HOST they are printed to the console (the embedded default); with it, sent over SMTP.
EMAIL_HOST = env_str("EMAIL_HOST", None)
if EMAIL_HOST:
    EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    EMAIL_PORT = env_int("EMAIL_PORT", 587, minimum=1)
    EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
    EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
    EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", True)
    EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10, minimum=1)
else:
    EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "privacy@localhost")
# The public request page (/privacy/request/): submissions and code checks per client IP.
LLMP_PRIVACY_REQUEST_RATE = _portal_rate("LLMP_PRIVACY_REQUEST_RATE", "5/m")
# The base URL of emailed links (export downloads), which tasks write without a request at hand;
# by default the first ALLOWED_HOSTS entry over HTTPS in production, the local server otherwise.
LLMP_PUBLIC_BASE_URL = env_url(
    "LLMP_PUBLIC_BASE_URL",
    f"https://{ALLOWED_HOSTS[0]}" if PRODUCTION else "http://127.0.0.1:8000",
    schemes=("https",) if PRODUCTION else ("https", "http"),
).rstrip("/")
# How long an emailed export link works (days); the export is deleted once downloaded/expired.
LLMP_PRIVACY_EXPORT_LINK_DAYS = env_int("LLMP_PRIVACY_EXPORT_LINK_DAYS", 7, minimum=1)
# An execution still "in progress" after this many minutes is taken to have crashed and is
# resumed by the periodic resume_stalled_subject_requests task.
LLMP_PRIVACY_STALL_MINUTES = env_int("LLMP_PRIVACY_STALL_MINUTES", 15, minimum=1)
# Workers load the request tasks (autodiscovery finds only each app's tasks.py).
CELERY_IMPORTS = ["privacy.request_tasks"]

# --- Privacy: encryption and retention ------------------------------------------------------
# Conversation records and contact emails are encrypted with one data key per data subject
# (AES-256-GCM); data keys are wrapped by a master key from a key provider: "local" (a master
# key from LLMP_MASTER_KEY, generated into LLMP_DATA_DIR in the embedded mode) or "kms" (AWS KMS
# key LLMP_KMS_KEY_ID, reached at LLMP_AWS_ENDPOINT_URL when set). See privacy.crypto.
LLMP_KEY_PROVIDER = env_str("LLMP_KEY_PROVIDER", "local")
if LLMP_KEY_PROVIDER not in {"local", "kms"}:
    raise ImproperlyConfigured(
        f"LLMP_KEY_PROVIDER must be 'local' or 'kms', not {LLMP_KEY_PROVIDER!r}"
    )


def _master_key(name: str, value: str) -> str:
    import base64
    import binascii

    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise ImproperlyConfigured(f"{name} must be 32 bytes in base64 (openssl rand -base64 32)")
    return value


def _local_master_key() -> str | None:
    """The local master key; in the embedded mode generated once and kept in DATA_DIR."""
    import base64

    value = _platform_secret("LLMP_MASTER_KEY")
    if value:
        return _master_key("LLMP_MASTER_KEY", value)
    if LLMP_KEY_PROVIDER != "local":
        return None
    if PRODUCTION:
        raise ImproperlyConfigured(
            "LLMP_MASTER_KEY (or LLMP_MASTER_KEY_FILE) must be set when LLMP_ENV=production "
            "and LLMP_KEY_PROVIDER=local"
        )
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    path = DATA_DIR / "master_key"
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(base64.b64encode(secrets.token_bytes(32)).decode())
    return _master_key(str(path), path.read_text().strip())


LLMP_MASTER_KEY = _local_master_key()
# Old local master keys (comma-separated), still accepted to unwrap data keys until
# `manage.py rotate_master_key` has re-wrapped them with the current one.
LLMP_MASTER_KEYS_PREVIOUS = [
    _master_key("LLMP_MASTER_KEYS_PREVIOUS", value)
    for value in env_list("LLMP_MASTER_KEYS_PREVIOUS", [])
]
LLMP_KMS_KEY_ID = env_str("LLMP_KMS_KEY_ID", None)
if LLMP_KEY_PROVIDER == "kms" and not LLMP_KMS_KEY_ID:
    raise ImproperlyConfigured("LLMP_KMS_KEY_ID must be set when LLMP_KEY_PROVIDER=kms")
# Unwrapped data keys are kept in process memory this long (seconds) and at most this many, so a
# request does not call KMS each time. A destroyed key is refused at once everywhere: every
# encryption and decryption first reads the key's row.
LLMP_DATA_KEY_CACHE_SECONDS = env_float("LLMP_DATA_KEY_CACHE_SECONDS", 60.0, minimum=0)
LLMP_DATA_KEY_CACHE_SIZE = env_int("LLMP_DATA_KEY_CACHE_SIZE", 1024, minimum=1)
# Key for keyed hashes of contact emails and subject ids (finding a subject without decrypting).
LLMP_SUBJECT_HMAC_KEY = _local_secret("LLMP_SUBJECT_HMAC_KEY", "subject_hmac_key")
# Beat sends the worker a heartbeat task this often (seconds); /readyz reports the last one's age.
LLMP_CELERY_HEARTBEAT_SECONDS = env_float("LLMP_CELERY_HEARTBEAT_SECONDS", 30.0, minimum=1.0)
# The retention purge runs hourly (at :17); a number of seconds here runs it that often instead.
LLMP_RETENTION_PURGE_SECONDS = env_float("LLMP_RETENTION_PURGE_SECONDS", 0.0, minimum=0.0)
# The retention purge deletes expired conversation records this many rows per transaction.
LLMP_PURGE_BATCH_SIZE = env_int("LLMP_PURGE_BATCH_SIZE", 5000, minimum=1)
# How long a security event keeps its flagged text (when the tenant opted in), in days; the
# event itself (kind, score, hash of the text) stays.
LLMP_SECURITY_TEXT_DAYS = env_int("LLMP_SECURITY_TEXT_DAYS", 30, minimum=1)

# --- Compliance: the GDPR Art. 30 record of processing (deployments.compliance) ---------------
# The controller named on the record; an empty value is shown there as "not configured".
LLMP_CONTROLLER_NAME = env_str("LLMP_CONTROLLER_NAME", "")
LLMP_CONTROLLER_CONTACT = env_str("LLMP_CONTROLLER_CONTACT", "")
LLMP_DPO_CONTACT = env_str("LLMP_DPO_CONTACT", "")
LLMP_EU_REPRESENTATIVE = env_str("LLMP_EU_REPRESENTATIVE", "")
