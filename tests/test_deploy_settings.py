"""Production settings: `check --deploy` is clean, HTTPS is enforced, cookies are Secure and
HttpOnly, pages carry a Content-Security-Policy and frame protection, and the admin, the
portal, the public privacy page and the API docs still work under that policy in Chromium."""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings as django_settings

ROOT = Path(django_settings.BASE_DIR)


def _production_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """What an operator sets for production, and nothing the embedded default lacks: no
    PostgreSQL, Redis or broker is needed to start and pass the checks."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "DEBUG"}
        and not k.startswith("LLMP_OIDC_")
    }
    env.update(
        {
            "LLMP_ENV": "production",
            "LLMP_DATA_DIR": str(tmp_path),
            "SECRET_KEY": secrets.token_urlsafe(50),
            "LLMP_API_KEY_PEPPER": secrets.token_urlsafe(32),
            "LLMP_MASTER_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
            "LLMP_SUBJECT_HMAC_KEY": secrets.token_urlsafe(32),
            "ALLOWED_HOSTS": "llm.example.com",
            **extra,
        }
    )
    return env


def _manage(tmp_path: Path, *args: str, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        env=_production_env(tmp_path, **extra),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


@pytest.mark.slow
def test_check_deploy_finds_nothing_with_production_settings(tmp_path):
    result = _manage(tmp_path, "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


# Run in a production-configured process: requests through Django's test client, as a TLS-
# terminating proxy would forward them (X-Forwarded-Proto) or as plain HTTP.
_PROBE = """
import json
from django.test import Client

c = Client(HTTP_HOST="llm.example.com")
out = {}
r = c.get("/portal/login/")
out["http_page"] = [r.status_code, r.headers.get("Location")]
r = c.get("/healthz")
out["http_health"] = r.status_code
r = c.get("/portal/login/", HTTP_X_FORWARDED_PROTO="https")
out["https_page"] = r.status_code
out["headers"] = {k: r.headers.get(k) for k in (
    "Strict-Transport-Security", "Content-Security-Policy", "X-Frame-Options",
    "X-Content-Type-Options", "Referrer-Policy", "Cross-Origin-Opener-Policy")}
csrf = r.cookies["csrftoken"]
out["csrf_cookie"] = {"secure": bool(csrf["secure"]), "httponly": bool(csrf["httponly"]),
                      "samesite": csrf["samesite"]}
from django.conf import settings
out["session_cookie"] = [settings.SESSION_COOKIE_SECURE, settings.SESSION_COOKIE_HTTPONLY]
print(json.dumps(out))
"""


@pytest.mark.slow
def test_production_redirects_to_https_and_sends_the_security_headers(tmp_path):
    result = _manage(tmp_path, "shell", "--no-imports", "-c", _PROBE)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["http_page"] == [301, "https://llm.example.com/portal/login/"]
    assert out["http_health"] == 200  # probes over plain HTTP inside the network
    assert out["https_page"] == 200
    headers = out["headers"]
    assert headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "same-origin"
    assert headers["Cross-Origin-Opener-Policy"] == "same-origin"
    policy = _directives(headers["Content-Security-Policy"])
    assert policy["script-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert "upgrade-insecure-requests" in policy
    assert out["csrf_cookie"] == {"secure": True, "httponly": True, "samesite": "Lax"}
    assert out["session_cookie"] == [True, True]


@pytest.mark.django_db
def test_sign_in_forms_may_go_to_the_identity_providers_that_are_switched_on(client, settings):
    assert _directives(client.get("/portal/login/").headers["Content-Security-Policy"])[
        "form-action"
    ] == ["'self'"]
    settings.SOCIAL_AUTH_OIDC_OIDC_ENDPOINT = "https://id.example.org/realms/staff"
    settings.SOCIAL_AUTH_GOOGLE_OAUTH2_KEY = "client-id"
    policy = _directives(client.get("/portal/login/").headers["Content-Security-Policy"])
    assert policy["form-action"] == [
        "'self'",
        "https://accounts.google.com",
        "https://id.example.org",
    ]


def _directives(policy: str) -> dict[str, list[str]]:
    parts = (item.split() for item in policy.split(";") if item.strip())
    return {name: values for name, *values in parts}


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path", ["/admin/login/", "/portal/login/", "/privacy/request/", "/api/schema/docs/"]
)
def test_pages_carry_the_policy_in_development_too(client, path):
    response = client.get(path)
    assert response.status_code == 200
    policy = _directives(response.headers["Content-Security-Policy"])
    assert policy["default-src"] == ["'self'"]
    assert policy["script-src"] == ["'self'"]
    assert policy["object-src"] == ["'none'"]
    assert "upgrade-insecure-requests" not in policy  # make run serves plain http on localhost
    assert response.headers["X-Frame-Options"] == "DENY"


# --- In Chromium: pages render and their scripts and styles load under the policy ---------

_WATCH_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation",
    (e) => window.__cspViolations.push(e.violatedDirective + " " + e.blockedURI));
"""


def _open(tab, url: str) -> list[str]:
    """Loads a page; returns the CSP violations it reported."""
    response = tab.goto(url)
    assert response is not None and response.status == 200, url
    assert "content-security-policy" in response.headers, url
    tab.wait_for_load_state("networkidle")
    return tab.evaluate("window.__cspViolations")


def _stylesheets_loaded(tab) -> int:
    """How many same-origin stylesheets applied (a blocked one never appears)."""
    return tab.evaluate("""[...document.styleSheets].filter((sheet) => {
        try { return sheet.href && sheet.cssRules.length > 0; } catch { return false; }
    }).length""")


def _session_cookie(tab, base_url: str, client) -> None:
    tab.context.add_cookies(
        [
            {
                "name": django_settings.SESSION_COOKIE_NAME,
                "value": client.cookies[django_settings.SESSION_COOKIE_NAME].value,
                "url": base_url,
            }
        ]
    )


@pytest.mark.slow
def test_admin_portal_privacy_page_and_api_docs_work_under_the_policy(
    page, live_server, admin_client, client, principals
):
    base = live_server.url
    page.add_init_script(_WATCH_VIOLATIONS)
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))

    # The admin, signed in with its second factor: its CSS applies and its scripts run.
    _session_cookie(page, base, admin_client)
    assert _open(page, f"{base}/admin/") == []
    assert _stylesheets_loaded(page) >= 2
    assert page.evaluate("document.documentElement.dataset.theme")  # set by admin/js/theme.js
    assert _open(page, f"{base}/admin/gateway/apikey/add/") == []
    assert page.evaluate("typeof window.django") == "object"  # the admin's jQuery namespace
    page.context.clear_cookies()

    # The portal, signed in as alice: its stylesheet applies and its script is loaded.
    client.force_login(principals.alice)
    _session_cookie(page, base, client)
    assert _open(page, f"{base}/portal/t/tenant-a/keys/") == []
    assert _stylesheets_loaded(page) == 1
    assert page.evaluate(
        "performance.getEntriesByType('resource').some(e => e.name.endsWith('portal.js'))"
    )
    page.context.clear_cookies()

    # The public privacy request page (its styles are inline).
    assert _open(page, f"{base}/privacy/request/") == []
    assert page.locator("form").count() >= 1

    # Swagger UI from the sidecar package: it loads the schema and renders the operations.
    assert _open(page, f"{base}/api/schema/docs/") == []
    page.locator(".opblock").first.wait_for()
    assert page.locator(".opblock").count() == 15  # every API operation, every door included
    assert not [line for line in console if "Content Security Policy" in line], console


# --- The dependency audit: never "clean" when it could not look -----------------------------


def _audit_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "audit_dependencies", ROOT / "scripts" / "audit_dependencies.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


_NOT_FOUND = "Dependency not found on PyPI and could not be audited: {} ({})"


def test_the_audit_is_incomplete_when_pypi_knows_no_release_and_osv_is_unreachable(capsys):
    audit = _audit_script()
    # What pip-audit 2.10 reports on this machine: exit status 0, "No known vulnerabilities
    # found", and every package skipped.
    pypi = audit.summarize(
        "pypi",
        {
            "dependencies": [
                {"name": "django", "skip_reason": _NOT_FOUND.format("django", "5.2.19")},
                {"name": "httpx", "skip_reason": _NOT_FOUND.format("httpx", "0.28.1")},
                {"name": "llmplatform", "skip_reason": "distribution marked as editable"},
            ],
            "fixes": [],
        },
    )
    osv = audit.Audit("osv", error="ConnectionError: Failed to resolve 'api.osv.dev'")
    assert audit.report([pypi, osv]) == audit.INCOMPLETE
    out = capsys.readouterr().out
    assert "[pypi] checked 0 of 2 packages; 2 could not be checked" in out
    assert "[osv] could not reach its vulnerability data" in out
    assert "INCOMPLETE" in out and "OK" not in out


def test_the_audit_lists_known_vulnerabilities_with_their_fixes(capsys):
    audit = _audit_script()
    result = audit.summarize(
        "pypi",
        {
            "dependencies": [
                {
                    "name": "django",
                    "version": "5.2.0",
                    "vulns": [{"id": "GHSA-xxxx", "fix_versions": ["5.2.1"]}],
                },
                {"name": "httpx", "version": "0.28.1", "vulns": []},
            ]
        },
    )
    assert audit.report([result]) == audit.VULNERABLE
    assert "django 5.2.0: GHSA-xxxx (fixed in 5.2.1)" in capsys.readouterr().out


def test_the_audit_is_clean_only_when_every_package_was_checked(capsys):
    audit = _audit_script()
    partial = audit.summarize(
        "pypi",
        {
            "dependencies": [
                {"name": "httpx", "version": "0.28.1", "vulns": []},
                {"name": "django", "skip_reason": _NOT_FOUND.format("django", "5.2.19")},
            ]
        },
    )
    assert audit.report([partial]) == audit.INCOMPLETE
    full = audit.summarize(
        "osv",
        {
            "dependencies": [
                {"name": "httpx", "version": "0.28.1", "vulns": []},
                {"name": "django", "version": "5.2.19", "vulns": []},
            ]
        },
    )
    capsys.readouterr()
    assert audit.report([partial, full]) == audit.CLEAN
    assert "OK: no known vulnerabilities in 2 packages (vulnerability data: osv)" in (
        capsys.readouterr().out
    )
