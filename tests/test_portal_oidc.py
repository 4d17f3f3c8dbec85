"""Portal sign-in through OpenID Connect, end to end: a real provider (django-oauth-toolkit in
OIDC mode, tests/oidc_provider) runs as its own process, the portal's generic OIDC backend is
pointed at it, and headless Chromium signs in at the provider and comes back."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from django.test import Client
from playwright.sync_api import expect
from social_core.backends.open_id_connect import OpenIdConnectAuth
from social_django.models import UserSocialAuth

from gateway.portal.oidc import NO_ACCESS
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
OIDC_BACKEND = "social_core.backends.open_id_connect.OpenIdConnectAuth"
PASSWORD_BACKEND = "django.contrib.auth.backends.ModelBackend"
# Users of the identity provider (username, password, email, verified).
PROVIDER_USERS = [
    ("bob-idp", "bob-idp-pass", "bob@example.com", True),
    ("stranger", "stranger-pass", "stranger@example.com", True),
    ("mallory", "mallory-pass", "alice@example.com", False),
]


@dataclass(frozen=True)
class Provider:
    base_url: str
    issuer: str
    client_id: str
    client_secret: str


@pytest.fixture(scope="module")
def oidc_provider(live_server, tmp_path_factory) -> Iterator[Provider]:
    """The test OIDC provider in a subprocess on a free port, with a confidential client whose
    redirect URI is the live server's /oauth/complete/oidc/."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    issuer = f"{base_url}/o"
    client_id, client_secret = "llmplatform-portal", secrets.token_urlsafe(24)
    data_dir = tmp_path_factory.mktemp("oidc-provider")
    live_port = live_server.url.rsplit(":", 1)[1]
    command = [
        sys.executable,
        "-m",
        "django",
        "serve_oidc_provider",
        "--settings",
        "tests.oidc_provider.settings",
        "--port",
        str(port),
        "--client-id",
        client_id,
        # One argument with "=": a secret may start with "-", which argparse would read as an
        # option (token_urlsafe does so about once in 64 runs).
        f"--client-secret={client_secret}",
        "--redirect-uri",
        f"http://localhost:{live_port}/oauth/complete/oidc/",
        "--redirect-uri",
        f"http://127.0.0.1:{live_port}/oauth/complete/oidc/",
    ]
    for username, password, email, verified in PROVIDER_USERS:
        command += [
            "--user",
            f"{username}:{password}:{email}" + ("" if verified else ":unverified"),
        ]
    env = {**os.environ, "OIDC_PROVIDER_DATA_DIR": str(data_dir), "OIDC_PROVIDER_ISSUER": issuer}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    log_path = data_dir / "provider.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if (
                    httpx.get(f"{issuer}/.well-known/openid-configuration", timeout=1).status_code
                    == 200
                ):
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the OIDC provider did not start:\n{log_path.read_text()}")
            time.sleep(0.1)
        # social-core caches discovery and keys per backend class: drop an earlier provider's.
        OpenIdConnectAuth.oidc_config.invalidate()
        OpenIdConnectAuth.get_jwks_keys.invalidate()
        yield Provider(base_url, issuer, client_id, client_secret)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture(autouse=True)
def _quick_and_isolated(settings):
    settings.RATELIMIT_CACHE_PREFIX = f"rl:{uuid.uuid4().hex}:"
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def _enable_oidc(settings, *, endpoint: str, client_id: str, client_secret: str) -> None:
    """What LLMP_OIDC_ENDPOINT/CLIENT_ID/CLIENT_SECRET switch on; social-core reads these
    settings at each request."""
    backends = [b for b in settings.AUTHENTICATION_BACKENDS if b != OIDC_BACKEND]
    backends.insert(backends.index(PASSWORD_BACKEND), OIDC_BACKEND)
    settings.AUTHENTICATION_BACKENDS = backends
    settings.SOCIAL_AUTH_OIDC_OIDC_ENDPOINT = endpoint
    settings.SOCIAL_AUTH_OIDC_KEY = client_id
    settings.SOCIAL_AUTH_OIDC_SECRET = client_secret
    settings.SOCIAL_AUTH_OIDC_USE_PKCE = True
    settings.PORTAL_OIDC_LABELS = {**settings.PORTAL_OIDC_LABELS, "oidc": "OIDC"}


@pytest.fixture
def oidc_settings(settings, oidc_provider):
    _enable_oidc(
        settings,
        endpoint=oidc_provider.issuer,
        client_id=oidc_provider.client_id,
        client_secret=oidc_provider.client_secret,
    )
    return oidc_provider


def sign_in_at_provider(tab, base_url: str, provider: Provider, username: str) -> None:
    password = next(p for u, p, _, _ in PROVIDER_USERS if u == username)
    tab.goto(f"{base_url}/portal/login/")
    tab.get_by_role("button", name="Sign in with OIDC").click()
    tab.wait_for_url(f"{provider.base_url}/accounts/login/**")
    tab.locator("#id_username").fill(username)
    tab.locator("#id_password").fill(password)
    tab.get_by_role("button", name="Log in to the provider").click()


@pytest.mark.slow
def test_a_member_signs_in_through_the_identity_provider(
    page,
    live_server,
    principals,
    oidc_settings,
):
    bob = principals.bob
    bob.email = "Bob@Example.com"  # matched case-insensitively
    bob.save()
    base = live_server.url

    sign_in_at_provider(page, base, oidc_settings, "bob-idp")
    page.wait_for_url(f"{base}/portal/t/tenant-a/keys/")
    expect(page.get_by_test_id("username")).to_have_text("bob")
    expect(page.get_by_role("link", name="Create key")).to_have_count(0)  # a member

    link = UserSocialAuth.objects.get(provider="oidc")
    assert link.user == bob
    assert link.extra_data == {}  # no provider tokens are kept

    # The next sign-in finds him by the stored link, even after his email changed here, and
    # needs no password at the provider (its session is still open).
    bob.email = "bob@elsewhere.example"
    bob.save()
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(f"{base}/portal/login/")
    page.get_by_role("button", name="Sign in with OIDC").click()
    page.wait_for_url(f"{base}/portal/t/tenant-a/keys/")
    expect(page.get_by_test_id("username")).to_have_text("bob")
    assert UserSocialAuth.objects.count() == 1


@pytest.mark.slow
def test_someone_without_a_membership_is_refused(
    page,
    live_server,
    principals,
    oidc_settings,
    django_user_model,
):
    # A local user with the same (verified) email, but in no tenant.
    django_user_model.objects.create_user("stranger-local", email="stranger@example.com")
    users_before = django_user_model.objects.count()
    base = live_server.url

    sign_in_at_provider(page, base, oidc_settings, "stranger")
    page.wait_for_url(f"{base}/portal/login/")
    expect(page.locator(".messages")).to_have_text(NO_ACCESS)
    # Not signed in, and nothing was created.
    page.goto(f"{base}/portal/")
    page.wait_for_url(re.compile(r".*/portal/login/\?next=/portal/$"))
    assert django_user_model.objects.count() == users_before
    assert not UserSocialAuth.objects.exists()


@pytest.mark.slow
def test_an_unverified_email_is_not_matched_to_an_account(
    page,
    live_server,
    principals,
    oidc_settings,
):
    principals.alice.email = "alice@example.com"
    principals.alice.save()
    base = live_server.url

    sign_in_at_provider(page, base, oidc_settings, "mallory")
    page.wait_for_url(f"{base}/portal/login/")
    expect(page.locator(".messages")).to_contain_text("has not verified your email address")
    assert not UserSocialAuth.objects.exists()


# --- Without a provider process --------------------------------------------------------------


def test_sign_in_starts_only_by_post_and_only_for_a_configured_provider(settings, principals):
    client = Client()
    assert "Sign in with" not in client.get("/portal/login/").content.decode()
    assert client.post("/oauth/login/oidc/").status_code == 404  # not configured

    _enable_oidc(settings, endpoint="http://127.0.0.1:9/o", client_id="c", client_secret="s")
    assert "Sign in with OIDC" in client.get("/portal/login/").content.decode()
    assert client.get("/oauth/login/oidc/").status_code == 405
    assert client.get("/oauth/login/google-oauth2/").status_code == 404
    strict = Client(enforce_csrf_checks=True)
    assert strict.post("/oauth/login/oidc/").status_code == 403  # no CSRF token


def test_an_unreachable_provider_is_a_message_not_a_500(settings, principals):
    settings.LLMP_PORTAL_OIDC_RATE = "2/m"
    OpenIdConnectAuth.oidc_config.invalidate()
    _enable_oidc(
        settings, endpoint=f"http://127.0.0.1:{free_port()}/o", client_id="c", client_secret="s"
    )
    client = Client()
    response = client.post("/oauth/login/oidc/", follow=True)
    assert response.redirect_chain[-1][0] == "/portal/login/"
    assert "OIDC could not be reached" in response.content.decode()
    # The callback is limited per address too. (django-ratelimit's windows start on the
    # clock's minute: a few more calls than the rate are needed when one starts midway.)
    pages = [
        client.get("/oauth/complete/oidc/?code=x&state=y", follow=True).content.decode()
        for _ in range(5)
    ]
    assert any("Too many sign-in attempts" in text for text in pages)
