"""The audit log is append-only down to the database; settings are validated at start; the
embedded default runs SQLite in WAL mode; readiness reports the real cache."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import DatabaseError, connection, transaction

from gateway import services
from gateway.models import ApiKey
from llmplatform.actors import Actor
from llmplatform.models import AuditEvent

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.django_db
def test_the_audit_log_refuses_changes_even_through_raw_sql(principals):
    services.api_key_create(
        actor=Actor.for_user(principals.alice), tenant=principals.tenant_a, name="k"
    )
    event = AuditEvent.objects.get(action="api_key.create")
    with pytest.raises(PermissionError):
        event.save()
    with pytest.raises(PermissionError):
        AuditEvent.objects.filter(pk=event.pk).delete()
    statements = [f"UPDATE llmplatform_auditevent SET actor = 'mallory' WHERE id = {event.pk}"]
    if connection.vendor == "postgresql":
        statements.append(f"DELETE FROM llmplatform_auditevent WHERE id = {event.pk}")
    for sql in statements:
        with (
            pytest.raises(DatabaseError, match="append-only"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute(sql)
    assert AuditEvent.objects.get(pk=event.pk).actor == "user:alice"


@pytest.mark.postgres
@pytest.mark.django_db
def test_postgres_triggers_guard_the_audit_table(principals):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = 'llmplatform_auditevent'::regclass "
            "AND NOT tgisinternal"
        )
        assert [row[0] for row in cursor.fetchall()] == ["llmp_audit_no_update"]


@pytest.mark.django_db
def test_key_creation_and_revocation_are_audited_in_the_same_transaction(principals):
    with pytest.raises(RuntimeError), transaction.atomic():
        services.api_key_create(
            actor=Actor.for_user(principals.alice), tenant=principals.tenant_a, name="k"
        )
        raise RuntimeError("roll back")
    assert not ApiKey.objects.exists()
    assert not AuditEvent.objects.filter(action="api_key.create").exists()
    key, _ = services.api_key_create(
        actor=Actor.for_user(principals.alice), tenant=principals.tenant_a, name="k"
    )
    services.api_key_revoke(actor=Actor.for_user(principals.bob), key=key)
    events = list(
        AuditEvent.objects.filter(object_type="gateway.ApiKey", object_id=str(key.pk)).order_by(
            "id"
        )
    )
    assert [(e.action, e.actor) for e in events] == [
        ("api_key.create", "user:alice"),
        ("api_key.revoke", "user:bob"),
    ]
    assert events[1].before["revoked_at"] is None and events[1].after["revoked_at"]
    assert events[0].tenant == principals.tenant_a


def run_manage(args: list[str], env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "LLMP_ENV"}
    }
    clean.update({"LLMP_DATA_DIR": str(tmp_path), **env})
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DATABASE_URL": "mysql://root@localhost/db"}, "DATABASE_URL must be a URL"),
        ({"DEBUG": "maybe"}, "DEBUG='maybe' is not a boolean"),
        ({"LLMP_AUTH_CACHE_SECONDS": "soon"}, "LLMP_AUTH_CACHE_SECONDS='soon' is not a number"),
        (
            {"LLMP_ENV": "production"},
            "SECRET_KEY (or SECRET_KEY_FILE or SECRET_KEY_REF) must be set",
        ),
        ({"LLMP_ENV": "staging"}, "LLMP_ENV must be 'embedded' or 'production'"),
        ({"SECRET_KEY_FILE": "/nonexistent/secret"}, "SECRET_KEY_FILE='/nonexistent/secret'"),
        (
            {"LLMP_UPSTREAM_HOSTS": "api.openai.com,https://x.example/v1"},
            "LLMP_UPSTREAM_HOSTS: 'https://x.example/v1' is not a host",
        ),
        ({"LLMP_UPSTREAM_HOSTS": "*"}, "LLMP_UPSTREAM_HOSTS: '*' is not a host"),
    ],
)
def test_bad_settings_stop_the_start_with_a_clear_message(tmp_path, env, message):
    result = run_manage(["check"], env, tmp_path)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert message in result.stderr


def _production(**overrides: str) -> dict[str, str]:
    import base64
    import secrets

    return {
        "LLMP_ENV": "production",
        "ALLOWED_HOSTS": "example.org",
        "SECRET_KEY": secrets.token_urlsafe(48),
        "LLMP_API_KEY_PEPPER": secrets.token_urlsafe(48),
        "LLMP_SUBJECT_HMAC_KEY": secrets.token_urlsafe(48),
        "LLMP_MASTER_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
        **overrides,
    }


@pytest.mark.parametrize("name", ["SECRET_KEY", "LLMP_API_KEY_PEPPER", "LLMP_SUBJECT_HMAC_KEY"])
@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("change-me", "is a placeholder value"),  # deploy/compose.env.example's value
        ("CHANGE-ME", "is a placeholder value"),
        ("django-insecure-" + "x1y2z3" * 8, "is a placeholder value"),
        ("Sh0rt-but-random-31-bytes-x9Qz", "is shorter than 32 bytes"),
        ("ab" * 40, "has fewer than 8 distinct characters"),
    ],
)
def test_production_refuses_a_guessable_secret_naming_the_variable(tmp_path, name, value, why):
    result = run_manage(["check"], _production(**{name: value}), tmp_path)
    assert result.returncode != 0
    assert f"{name} {why}" in result.stderr
    assert value not in result.stderr  # the value itself is never echoed


def test_production_starts_with_random_secrets(tmp_path):
    result = run_manage(["check"], _production(), tmp_path)
    assert result.returncode == 0, result.stderr


def test_the_embedded_default_is_sqlite_in_wal_mode_with_generated_secrets(tmp_path):
    result = run_manage(["migrate", "-v0"], {}, tmp_path)
    assert result.returncode == 0, result.stderr
    code = (
        "from django.db import connection; c = connection.cursor(); "
        "c.execute('PRAGMA journal_mode'); print(connection.vendor, c.fetchone()[0])"
    )
    result = run_manage(["shell", "--no-imports", "-c", code], {}, tmp_path)
    assert result.stdout.split() == ["sqlite", "wal"], result.stderr
    for name in ("secret_key", "api_key_pepper"):
        secret = tmp_path / name
        assert len(secret.read_text()) >= 48
        assert secret.stat().st_mode & 0o077 == 0  # readable by the owner only


@pytest.mark.redis
@pytest.mark.django_db
def test_readiness_uses_the_real_redis_cache(client, settings):
    from django.core.cache import cache

    assert settings.CACHES["default"]["BACKEND"] == "django_redis.cache.RedisCache"
    checks = client.get("/readyz").json()["checks"]
    assert checks["cache"] == {"ok": True, "detail": "ok"}
    cache.set("llmp:probe", "from-test", 30)
    import redis

    raw = redis.Redis.from_url(settings.REDIS_URL)
    assert any(b"llmp:probe" in k for k in raw.keys("*llmp:probe*"))


@pytest.mark.django_db
def test_readiness_reports_an_unreachable_cache(client, settings):
    from django.core.cache import caches

    settings.CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.2, "SOCKET_TIMEOUT": 0.2},
        }
    }
    try:
        response = client.get("/readyz")
    finally:
        caches._settings = None
    assert response.status_code == 503
    assert response.json()["checks"]["cache"]["ok"] is False


@pytest.mark.django_db
def test_a_client_chosen_request_id_is_kept_apart_from_ours_in_audit_rows(client, principals):
    """A caller's X-Request-ID must not become the id audit rows and usage records are filed
    under (a client could then forge or collide with another request's id)."""
    from llmplatform.models import AuditEvent

    client.force_login(principals.alice, backend="django.contrib.auth.backends.ModelBackend")
    response = client.post(
        "/portal/t/tenant-a/keys/new/",
        {"name": "k", "scopes": ["chat"]},
        HTTP_X_REQUEST_ID="req_forged_by_client",
    )
    assert response.status_code == 200
    event = AuditEvent.objects.get(action="api_key.create")
    assert event.request_id == response["X-Request-ID"] != "req_forged_by_client"
    assert event.client_request_id == "req_forged_by_client"
