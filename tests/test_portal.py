"""The tenant portal (/portal/): keys, usage, tier and service accounts, scoped to the tenants
the signed-in user belongs to. Page flows run in headless Chromium against the live server;
rules that need no browser (scoping, roles, form errors, rate limits) use Django's client."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest
from django.contrib.sessions.models import Session
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from playwright.sync_api import expect

from gateway import services
from gateway.models import ApiKey, ServiceAccount, UsageRecord
from gateway.portal.views import NEW_KEY_SESSION, THROTTLED
from llmplatform.actors import Actor
from llmplatform.models import AuditEvent, Membership

PASSWORD_BACKEND = "django.contrib.auth.backends.ModelBackend"
PASSWORDS = {"alice": "alice-pass-123", "bob": "bob-pass-123", "charlie": "charlie-pass-123"}


@pytest.fixture(autouse=True)
def _quick_and_isolated(settings):
    """Rate-limit counters live in the shared cache: each test counts from zero. Test users
    get a fast password hash (the real one costs a second per sign-in here)."""
    settings.RATELIMIT_CACHE_PREFIX = f"rl:{uuid.uuid4().hex}:"
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user, backend=PASSWORD_BACKEND)
    return client


def sign_in(tab, base_url: str, username: str) -> None:
    tab.goto(f"{base_url}/portal/login/")
    tab.locator("#id_username").fill(username)
    tab.locator("#id_password").fill(PASSWORDS[username])
    tab.get_by_role("button", name="Sign in", exact=True).click()
    tab.wait_for_url(re.compile(r".*/portal/t/[\w-]+/keys/$"))


def api_status(base_url: str, key: str) -> int:
    """GET /v1/models with the key, over HTTP on the live server (the API views are async)."""
    response = httpx.get(
        f"{base_url}/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=10
    )
    return response.status_code


def key_url(slug: str, key_id: int, action: str) -> str:
    return f"/portal/t/{slug}/keys/{key_id}/{action}/"


# --- In the browser ------------------------------------------------------------------------


def test_an_owner_creates_copies_uses_rotates_and_revokes_a_key(
    page,
    live_server,
    principals,
    settings,
):
    settings.LLMP_AUTH_CACHE_SECONDS = 0  # a revocation counts at once
    base = live_server.url
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
    sign_in(page, base, "alice")
    expect(page.get_by_test_id("username")).to_have_text("alice")

    page.get_by_role("link", name="Create key").click()
    page.locator("#id_name").fill("ci-deploy")
    expect(page.get_by_label("chat", exact=True)).to_be_checked()
    expect(page.get_by_label("models:read")).to_be_checked()
    page.locator("#id_allowed_ips").fill("127.0.0.1\n::1")
    page.locator("#id_daily_budget").fill("5")
    page.get_by_role("button", name="Create key").click()
    # Shown on the response to the form itself (never kept for a later page).
    expect(page.get_by_test_id("new-key")).to_be_visible()

    plaintext = page.get_by_test_id("new-key").input_value()
    assert plaintext.startswith("llmp_")
    page.get_by_role("button", name="Copy").click()
    expect(page.get_by_role("button", name="Copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == plaintext

    key = ApiKey.objects.get(name="ci-deploy")
    assert key.tenant == principals.tenant_a and plaintext.endswith(key.last_four)
    assert key.allowed_ips == ["127.0.0.1/32", "::1/128"]
    assert key.daily_budget == Decimal("5")
    # Shown once: never in the session, and the key's page does not show it again.
    assert not any(plaintext in str(s.get_decoded()) for s in Session.objects.all())
    page.goto(f"{base}{key_url('tenant-a', key.pk, 'secret')}")
    expect(page.get_by_test_id("secret-gone")).to_be_visible()
    assert plaintext not in page.content()

    assert api_status(base, plaintext) == 200

    page.get_by_role("link", name="Back to the API keys").click()
    row = page.locator(f"tr[data-key-id='{key.pk}']")
    expect(row).to_contain_text(key.display)
    expect(row).to_contain_text("127.0.0.1/32")
    expect(row.get_by_test_id("state")).to_have_text("active")

    row.get_by_role("link", name="Rotate").click()
    page.locator("#id_overlap_hours").fill("2")
    page.get_by_role("button", name="Rotate key").click()
    expect(page.get_by_test_id("new-key")).to_be_visible()
    new_plaintext = page.get_by_test_id("new-key").input_value()
    assert new_plaintext.startswith("llmp_") and new_plaintext != plaintext
    expect(page.locator("main")).to_contain_text(f"It replaces {key.display}")
    new_key = ApiKey.objects.get(replaces=key)
    assert new_key.allowed_ips == key.allowed_ips
    # During the overlap both keys work.
    assert api_status(base, plaintext) == 200
    assert api_status(base, new_plaintext) == 200

    page.get_by_role("link", name="Back to the API keys").click()
    old_row = page.locator(f"tr[data-key-id='{key.pk}']")
    expect(old_row.get_by_test_id("state")).to_have_text("expiring (rotated)")
    expect(old_row.get_by_role("link", name="Rotate")).to_have_count(0)
    old_row.get_by_role("link", name="Revoke").click()
    page.get_by_role("button", name="Revoke key").click()
    expect(page.locator(".messages")).to_contain_text(f"{key.display}) is revoked")
    expect(page.locator(f"tr[data-key-id='{key.pk}']").get_by_test_id("state")).to_have_text(
        "revoked"
    )
    assert api_status(base, plaintext) == 401
    assert api_status(base, new_plaintext) == 200

    actions = list(
        AuditEvent.objects.filter(object_type="gateway.ApiKey")
        .order_by("id")
        .values_list("action", "actor")
    )
    assert actions == [
        ("api_key.create", "user:alice"),
        ("api_key.rotate", "user:alice"),
        ("api_key.create", "user:alice"),
        ("api_key.revoke", "user:alice"),
    ]


def test_a_member_sees_the_keys_but_cannot_change_them(
    page,
    live_server,
    principals,
    key_a,
):
    base = live_server.url
    key = ApiKey.objects.get(tenant=principals.tenant_a)
    sign_in(page, base, "bob")
    row = page.locator(f"tr[data-key-id='{key.pk}']")
    expect(row).to_contain_text(key.display)
    expect(page.get_by_text("member", exact=True)).to_be_visible()
    expect(page.get_by_role("link", name="Create key")).to_have_count(0)
    expect(page.get_by_role("link", name="Rotate")).to_have_count(0)
    expect(page.get_by_role("link", name="Revoke")).to_have_count(0)

    # Forged POSTs from his own session, with a valid CSRF token, are refused.
    forge = """async (url) => {
        const token = document.querySelector("input[name=csrfmiddlewaretoken]").value;
        const response = await fetch(url, {method: "POST", headers: {"X-CSRFToken": token},
                                           body: new URLSearchParams({name: "forged"})});
        return response.status;
    }"""
    for url in (
        key_url("tenant-a", key.pk, "revoke"),
        key_url("tenant-a", key.pk, "rotate"),
        "/portal/t/tenant-a/keys/new/",
    ):
        assert page.evaluate(forge, base + url) == 403
    key.refresh_from_db()
    assert key.revoked_at is None and key.replaced_by_id is None
    assert ApiKey.objects.count() == 1


def _usage(
    tenant,
    when: datetime,
    *,
    status: int = 200,
    prompt: int = 0,
    completion: int = 0,
    cost: str = "0",
) -> None:
    record = UsageRecord.objects.create(
        tenant=tenant,
        request_id=uuid.uuid4().hex,
        route="chat",
        status_code=status,
        prompt_tokens=prompt,
        completion_tokens=completion,
        cost=Decimal(cost),
    )
    UsageRecord.objects.filter(pk=record.pk).update(created_at=when)


def test_the_usage_page_charts_the_tenants_usage_records(
    page,
    live_server,
    principals,
):
    now = timezone.now().astimezone(UTC)
    today = now.date()
    midnight = datetime(today.year, today.month, today.day, tzinfo=UTC)
    a, b = principals.tenant_a, principals.tenant_b
    for status in (200, 200, 500):
        _usage(
            a,
            midnight + timedelta(seconds=5),
            status=status,
            prompt=100,
            completion=50,
            cost="0.0125",
        )
    _usage(
        a, midnight - timedelta(days=2) + timedelta(hours=3), prompt=10, completion=5, cost="0.001"
    )
    _usage(a, midnight - timedelta(days=40), prompt=999, completion=999, cost="9")  # too old
    _usage(b, midnight + timedelta(seconds=5), prompt=777, completion=777, cost="7")  # tenant B

    base = live_server.url
    sign_in(page, base, "alice")
    page.get_by_role("link", name="Usage").click()

    day = today.isoformat()
    two_days_ago = (today - timedelta(days=2)).isoformat()
    requests = page.locator("figure[data-chart=requests]")
    expect(requests.locator("rect.bar")).to_have_count(30)
    expect(requests.locator(f"rect[data-day='{day}']")).to_have_attribute("data-value", "3")
    expect(requests.locator(f"rect[data-day='{two_days_ago}']")).to_have_attribute(
        "data-value", "1"
    )
    # Bars are scaled to the busiest day: 3 requests fill the plot, 1 is a third of it.
    full = float(requests.locator(f"rect[data-day='{day}']").get_attribute("height"))
    third = float(requests.locator(f"rect[data-day='{two_days_ago}']").get_attribute("height"))
    assert full > 100 and third == pytest.approx(full / 3, abs=0.1)
    expect(page.locator(f"figure[data-chart=tokens] rect[data-day='{day}']")).to_have_attribute(
        "data-value", "450"
    )
    cost_bar = page.locator(f"figure[data-chart=cost] rect[data-day='{day}']")
    expect(cost_bar.locator("title")).to_contain_text("$0.0375")
    expect(page.locator("figure[data-chart=cost] figcaption")).to_contain_text("total $0.0385")

    cells = page.locator(f"table.usage tr[data-day='{day}'] td")
    expect(cells).to_have_text(["3", "1", "300", "150", "450", "$0.0375"])
    expect(page.locator("table.usage tr[data-day='total'] td")).to_have_text(
        ["4", "1", "310", "155", "465", "$0.0385"]
    )


# --- Sign-in and rate limits ------------------------------------------------------------------


def test_signing_in_needs_the_right_password_and_a_membership(
    client, principals, django_user_model
):
    response = client.post("/portal/login/", {"username": "alice", "password": "wrong"})
    assert response.status_code == 200
    assert "Please enter a correct username and password" in response.content.decode()

    django_user_model.objects.create_user("dave", password="dave-pass-123")
    response = client.post("/portal/login/", {"username": "dave", "password": "dave-pass-123"})
    assert response.status_code == 200
    # The same words as a wrong password: the form does not confirm that a password was right.
    assert "Please enter a correct username and password" in response.content.decode()
    assert "has no access to this portal" not in response.content.decode()
    assert "_auth_user_id" not in client.session

    response = client.post(
        "/portal/login/", {"username": "alice", "password": "alice-pass-123"}, follow=True
    )
    assert response.redirect_chain[-1][0] == "/portal/t/tenant-a/keys/"


def test_pages_ask_for_sign_in(client, principals):
    response = client.get("/portal/t/tenant-a/keys/")
    assert response.status_code == 302
    assert response["Location"] == "/portal/login/?next=/portal/t/tenant-a/keys/"


def test_the_login_rate_limit_is_per_address_and_shows_a_form_error(client, principals, settings):
    settings.LLMP_PORTAL_LOGIN_RATE = "3/m"
    good = {"username": "alice", "password": "alice-pass-123"}
    for _ in range(3):
        assert client.post("/portal/login/", good).status_code == 302
        client.logout()

    response = client.post("/portal/login/", good)
    assert response.status_code == 429
    body = response.content.decode()
    assert THROTTLED in body and 'name="password"' in body
    assert "_auth_user_id" not in client.session
    # The page itself still loads, and another address is not affected.
    assert client.get("/portal/login/").status_code == 200
    assert client.post("/portal/login/", good, REMOTE_ADDR="10.1.2.3").status_code == 302


# --- Tenant scoping and roles -------------------------------------------------------------


def test_charlie_cannot_see_or_change_tenant_a(principals, key_a):
    key = ApiKey.objects.get(tenant=principals.tenant_a)
    account = services.service_account_create(
        actor=Actor.for_user(principals.alice), tenant=principals.tenant_a, name="etl"
    )
    charlie = signed_in(principals.charlie)
    for page_name in ("keys", "keys/new", "usage", "tier", "service-accounts"):
        assert charlie.get(f"/portal/t/tenant-a/{page_name}/").status_code == 404
        assert charlie.post(f"/portal/t/tenant-a/{page_name}/", {"name": "x"}).status_code == 404

    # A's objects through his own tenant: the same 404 as objects that do not exist.
    missing_body = charlie.get(key_url("tenant-b", 999999, "rotate")).content
    for action in ("rotate", "revoke", "secret"):
        response = charlie.get(key_url("tenant-b", key.pk, action))
        assert response.status_code == 404 and response.content == missing_body
    assert charlie.post(key_url("tenant-b", key.pk, "revoke")).status_code == 404
    assert (
        charlie.post(key_url("tenant-b", key.pk, "rotate"), {"overlap_hours": 1}).status_code == 404
    )
    disable = f"/portal/t/tenant-b/service-accounts/{account.pk}/disable/"
    assert charlie.post(disable).status_code == 404

    own = charlie.get("/portal/t/tenant-b/keys/").content.decode()
    assert key.display not in own
    assert charlie.get("/portal/t/tenant-b/usage/").status_code == 200
    key.refresh_from_db()
    account.refresh_from_db()
    assert key.revoked_at is None and key.replaced_by_id is None and account.disabled_at is None


def test_a_tenants_own_pages_show_nothing_of_another_tenant(principals, key_a):
    a_key = ApiKey.objects.get(tenant=principals.tenant_a)
    services.service_account_create(
        actor=Actor.for_user(principals.alice), tenant=principals.tenant_a, name="a-etl"
    )
    _usage(principals.tenant_a, timezone.now(), prompt=4321, completion=1234, cost="98.7654")
    charlie = signed_in(principals.charlie)

    assert a_key.display not in charlie.get("/portal/t/tenant-b/keys/").content.decode()
    assert "a-etl" not in charlie.get("/portal/t/tenant-b/service-accounts/").content.decode()
    usage = charlie.get("/portal/t/tenant-b/usage/").content.decode()
    total = re.search(r'data-day="total">(.*?)</tr>', usage, re.S)
    assert total is not None
    assert re.findall(r"<td>([^<]*)</td>", total.group(1)) == ["0"] * 5 + ["$0.0000"]
    tier = charlie.get("/portal/t/tenant-b/tier/").content.decode()
    compact = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", tier))
    assert "spent today (UTC) $0.0000" in compact and "spent this month $0.0000" in compact

    # A name tenant A uses is free in tenant B; taking it leaves A's account alone.
    response = charlie.post("/portal/t/tenant-b/service-accounts/", {"name": "a-etl"})
    assert response.status_code == 302
    assert sorted(
        ServiceAccount.objects.filter(name="a-etl").values_list("tenant__slug", flat=True)
    ) == ["tenant-a", "tenant-b"]


def test_a_member_gets_403_for_every_owner_action(principals, key_a):
    key = ApiKey.objects.get(tenant=principals.tenant_a)
    account = services.service_account_create(
        actor=Actor.for_user(principals.alice), tenant=principals.tenant_a, name="etl"
    )
    bob = signed_in(principals.bob)
    assert bob.get("/portal/t/tenant-a/keys/").status_code == 200
    assert bob.get("/portal/t/tenant-a/service-accounts/").status_code == 200
    owner_only = [
        "/portal/t/tenant-a/keys/new/",
        key_url("tenant-a", key.pk, "rotate"),
        key_url("tenant-a", key.pk, "revoke"),
        key_url("tenant-a", key.pk, "secret"),
        f"/portal/t/tenant-a/service-accounts/{account.pk}/disable/",
    ]
    for url in owner_only:
        assert bob.get(url).status_code == 403, url
        assert bob.post(url, {"name": "forged", "overlap_hours": 1}).status_code == 403, url
    response = bob.post("/portal/t/tenant-a/service-accounts/", {"name": "forged"})
    assert response.status_code == 403
    assert ApiKey.objects.count() == 1
    key.refresh_from_db()
    account.refresh_from_db()
    assert key.revoked_at is None and account.disabled_at is None


def test_a_user_of_two_tenants_picks_the_tenant_by_url(principals, key_a, key_b):
    Membership.objects.create(
        user=principals.bob, tenant=principals.tenant_b, role=Membership.Role.OWNER
    )
    bob = signed_in(principals.bob)
    home = bob.get("/portal/").content.decode()
    assert "/portal/t/tenant-a/keys/" in home and "/portal/t/tenant-b/keys/" in home
    a_key = ApiKey.objects.get(tenant=principals.tenant_a)
    b_key = ApiKey.objects.get(tenant=principals.tenant_b)
    page_b = bob.get("/portal/t/tenant-b/keys/").content.decode()
    assert b_key.display in page_b and a_key.display not in page_b
    assert 'data-testid="tenant-switcher"' in page_b
    # Owner in B, member in A: the role is per tenant.
    assert "Create key" in page_b
    assert "Create key" not in bob.get("/portal/t/tenant-a/keys/").content.decode()


def test_the_key_list_runs_a_fixed_number_of_queries(principals):
    alice = signed_in(principals.alice)
    tenant = principals.tenant_a

    def count() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert alice.get("/portal/t/tenant-a/keys/").status_code == 200
        return len(queries)

    services.api_key_create(actor=Actor.for_user(principals.alice), tenant=tenant, name="one")
    count()  # warm up: first-request work (content types, template loading) is not per key
    baseline = count()
    account = services.service_account_create(
        actor=Actor.for_user(principals.alice), tenant=tenant, name="svc"
    )
    for index in range(4):
        key, _ = services.api_key_create(
            actor=Actor.for_user(principals.alice),
            tenant=tenant,
            name=f"k{index}",
            service_account=account,
        )
    services.api_key_rotate(actor=Actor.for_user(principals.alice), key=key)
    assert count() == baseline


# --- Forms -------------------------------------------------------------------------------


def test_bad_key_input_gives_form_errors_not_a_500(principals):
    foreign = services.service_account_create(
        actor=Actor.for_user(principals.charlie), tenant=principals.tenant_b, name="theirs"
    )
    alice = signed_in(principals.alice)
    response = alice.post(
        "/portal/t/tenant-a/keys/new/",
        {
            "name": "  ",
            "allowed_ips": "10.0.0.300",
            "expires_on": "2000-01-01",
            "daily_budget": "-1",
            "monthly_budget": "abc",
            "service_account": foreign.pk,
        },
    )
    assert response.status_code == 200
    body = response.content.decode()
    for message in (
        "Choose at least one scope.",
        "&#x27;10.0.0.300&#x27; is not an IP address",
        "The expiry date is in the past.",
        "Leave it empty for no budget.",
        "Enter a number.",
        "Select a valid choice.",
        "This field is required.",
    ):
        assert message in body, message
    response = alice.post("/portal/t/tenant-a/keys/new/", {"name": "k", "scopes": ["root"]})
    assert "Select a valid choice. root is not one of the available choices." in (
        response.content.decode()
    )
    assert not ApiKey.objects.exists()

    key, _ = services.api_key_create(
        actor=Actor.for_user(principals.alice), tenant=principals.tenant_a, name="k"
    )
    response = alice.post(key_url("tenant-a", key.pk, "rotate"), {"overlap_hours": "9999"})
    assert response.status_code == 200
    assert "less than or equal to 720" in response.content.decode()
    services.api_key_revoke(actor=Actor.for_user(principals.alice), key=key)
    response = alice.post(key_url("tenant-a", key.pk, "rotate"), {"overlap_hours": "1"})
    assert response.status_code == 200
    assert "A revoked or expired key cannot be rotated" in response.content.decode()
    assert ApiKey.objects.count() == 1


def test_an_unexpected_failure_of_a_key_action_shows_no_detail(principals, monkeypatch):
    key, _ = services.api_key_create(
        actor=Actor.for_user(principals.alice), tenant=principals.tenant_a, name="k"
    )

    def broken(**fields):
        raise ValueError("pepper p-4471 could not be read")

    monkeypatch.setattr(services, "api_key_rotate", broken)
    alice = signed_in(principals.alice)
    alice.raise_request_exception = False
    response = alice.post(key_url("tenant-a", key.pk, "rotate"), {"overlap_hours": "1"})
    assert response.status_code == 500
    assert "p-4471" not in response.content.decode()


def test_portal_forms_need_a_csrf_token(principals):
    client = Client(enforce_csrf_checks=True)
    response = client.post("/portal/login/", {"username": "alice", "password": "alice-pass-123"})
    assert response.status_code == 403
    client.force_login(principals.alice, backend=PASSWORD_BACKEND)
    assert (
        client.post("/portal/t/tenant-a/keys/new/", {"name": "k", "scopes": ["chat"]}).status_code
        == 403
    )
    assert not ApiKey.objects.exists()


def test_a_new_key_is_shown_on_the_creating_response_only(principals):
    alice = signed_in(principals.alice)
    response = alice.post("/portal/t/tenant-a/keys/new/", {"name": "k", "scopes": ["chat"]})
    key = ApiKey.objects.get(name="k")
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    plaintext = re.search(r'value="(llmp_[A-Za-z0-9_]+)"', response.content.decode()).group(1)
    assert plaintext.endswith(key.last_four)
    # Nowhere to be found afterwards: not in the session, not on the key's page.
    assert NEW_KEY_SESSION not in alice.session
    assert plaintext not in str(dict(alice.session))
    assert plaintext not in alice.cookies.output()
    assert plaintext not in alice.get(key_url("tenant-a", key.pk, "secret")).content.decode()


def test_the_tier_page_shows_every_limit_and_the_tenants_overrides(principals, tier):
    tier.requests_per_minute = 120
    tier.key_requests_per_hour = 500
    tier.tokens_per_day = 0
    tier.monthly_budget = Decimal("300")
    tier.save()
    plan = principals.tenant_a.plan
    plan.daily_budget = Decimal("12.5")
    plan.screening_mode = "flag"
    plan.save()
    _usage(principals.tenant_a, timezone.now(), cost="1.25")
    body = signed_in(principals.bob).get("/portal/t/tenant-a/tier/").content.decode()
    assert 'data-testid="tier-name">pro<' in body
    compact = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body))
    for text in (
        "per minute 120",
        "per hour 500",
        "per day unlimited",
        "daily budget $12.5000 this tenant's own (the tier's: unlimited)",
        "monthly budget $300.0000 the tier's",
        "spent today (UTC) $1.2500",
        "longest prompt 2,000 characters",
        "allowed every enabled model",
        "prompt-injection screening flag from a score of 0.5 this tenant's own",
    ):
        assert text in compact.replace("&#x27;", "'"), text


def test_service_accounts_are_created_given_keys_and_disabled(principals):
    alice = signed_in(principals.alice)
    url = "/portal/t/tenant-a/service-accounts/"
    assert alice.post(url, {"name": "billing-sync", "description": "nightly"}).status_code == 302
    response = alice.post(url, {"name": "billing-sync"})
    assert "A service account with this name exists already." in response.content.decode()
    assert "Enter a valid “slug”" in alice.post(url, {"name": "no spaces"}).content.decode()
    account = principals.tenant_a.service_accounts.get()

    form = alice.get(f"/portal/t/tenant-a/keys/new/?service_account={account.pk}")
    assert f'<option value="{account.pk}" selected>' in form.content.decode()
    alice.post(
        "/portal/t/tenant-a/keys/new/",
        {"name": "sync", "scopes": ["chat"], "service_account": account.pk},
    )
    key = ApiKey.objects.get(name="sync")
    assert key.service_account == account
    assert ">1</td>" in alice.get(url).content.decode()  # one live key

    response = alice.post(f"/portal/t/tenant-a/service-accounts/{account.pk}/disable/", follow=True)
    assert "is disabled and its keys are revoked" in response.content.decode()
    account.refresh_from_db()
    key.refresh_from_db()
    assert account.disabled_at is not None and key.revoked_at is not None
    # A disabled account is no longer offered for new keys.
    assert f'value="{account.pk}"' not in alice.get("/portal/t/tenant-a/keys/new/").content.decode()
    assert list(
        AuditEvent.objects.filter(object_type="gateway.ServiceAccount")
        .order_by("id")
        .values_list("action", flat=True)
    ) == ["service_account.create", "service_account.disable"]


def test_repeated_wrong_passwords_lock_the_login_out(client, principals, settings):
    """django-axes (configured with the admin sign-in) guards the portal's login as well."""
    settings.LLMP_PORTAL_LOGIN_RATE = "100/m"
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post("/portal/login/", {"username": "alice", "password": "wrong"})
    response = client.post("/portal/login/", {"username": "alice", "password": "alice-pass-123"})
    assert response.status_code == 429
    assert "_auth_user_id" not in client.session
