"""Staff sign-in to the admin: password plus TOTP (enrolment on first sign-in), django-axes
lockouts, the audit rows of both, and the admin of the access-control models (key rotation,
service accounts, security events, tiers)."""

from __future__ import annotations

import json
import re
import time
from base64 import b32decode
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from gateway import services as gateway_services
from gateway.models import ApiKey, SecurityEvent, ServiceAccount
from llmplatform import staff_signin
from llmplatform.actors import SYSTEM, Actor
from llmplatform.models import AuditEvent

PASSWORD = "officer-pass-4821"
LOGIN = "/admin/login/"
KEY_PATTERN = re.compile(r"llmp_[A-Za-z0-9]+_[A-Za-z0-9_\-]+")


def code(key: bytes, steps_ahead: int = 0) -> str:
    """The authenticator's code, now or ``steps_ahead`` 30-second steps on. A code is accepted
    once (django-otp refuses a replay), and one step either side of now is allowed, so a second
    sign-in in the same half-minute uses the next step's code."""
    return f"{totp(key, step=30, t0=0, digits=6, drift=steps_ahead):06d}"


def wrong_code(key: bytes) -> str:
    """A code the authenticator shows at no step near now."""
    near = {code(key, steps) for steps in range(-2, 3)}
    return next(
        c for c in ("000000", "111111", "222222", "333333", "444444", "555555") if c not in near
    )


def audit_text(event: AuditEvent) -> str:
    return json.dumps([event.actor, event.object_repr, event.object_id, event.before, event.after])


@pytest.fixture
def officer(db, django_user_model):
    user = django_user_model.objects.create_user(
        "officer", password=PASSWORD, is_staff=True, is_superuser=True
    )
    # As an administrator (or `manage.py allow_enrolment`) would: enrolment is never on a
    # password alone.
    staff_signin.enrolment_allow(actor=Actor.system("test"), user=user)
    return user


@pytest.fixture
def officer_device(officer) -> TOTPDevice:
    TOTPDevice.objects.filter(user=officer, confirmed=False).delete()  # the grant, used up
    return TOTPDevice.objects.create(user=officer, name="authenticator", confirmed=True)


@pytest.fixture
def officer_client(client, officer, officer_device):
    """A session as if the officer had signed in with password and code (what django-otp's
    login stores), without spending a code."""
    client.force_login(officer)
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = officer_device.persistent_id
    session.save()
    return client


def login(client, *, password: str = PASSWORD, token: str = "", username: str = "officer"):
    return client.post(
        LOGIN, {"username": username, "password": password, "otp_token": token, "next": "/admin/"}
    )


# --- Second factor --------------------------------------------------------------------------


def test_a_session_without_a_verified_authenticator_does_not_reach_the_admin(client, officer):
    client.force_login(officer)

    response = client.get("/admin/")

    assert response.status_code == 302
    assert response["Location"].startswith(LOGIN)


def test_the_admin_takes_any_staff_session_when_the_second_factor_is_switched_off(
    client, officer, settings
):
    settings.LLMP_ADMIN_REQUIRE_2FA = False
    client.force_login(officer)

    assert client.get("/admin/").status_code == 200


def test_a_staff_member_without_an_authenticator_enrols_one_before_the_admin(client, officer):
    response = login(client)

    assert response.status_code == 302
    assert response["Location"] == "/admin/otp/setup/"
    assert "_auth_user_id" not in client.session  # not logged in before the code

    setup = client.get("/admin/otp/setup/").content.decode()
    secret = re.search(r'id="otp-secret">([A-Z2-7]+)<', setup).group(1)
    assert "<svg" in setup
    assert client.get("/admin/").status_code == 302

    wrong = client.post("/admin/otp/setup/", {"otp_token": wrong_code(b32decode(secret))})
    assert wrong.status_code == 200 and b"not accepted" in wrong.content
    time.sleep(1.1)  # django-otp's throttle: one failure means a second's wait

    done = client.post("/admin/otp/setup/", {"otp_token": code(b32decode(secret))})

    assert done.status_code == 302 and done["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200
    device = TOTPDevice.objects.get(user=officer)
    assert device.confirmed
    event = AuditEvent.objects.get(action="otp_device.enroll")
    assert event.actor == "user:officer" and secret not in audit_text(event)
    assert device.key not in audit_text(event)


def test_the_enrolment_page_needs_a_password_first(client, officer):
    client.force_login(officer)

    response = client.get("/admin/otp/setup/")

    assert response.status_code == 302 and response["Location"] == LOGIN
    assert not TOTPDevice.objects.filter(confirmed=True).exists()


def test_an_enrolment_left_for_more_than_ten_minutes_needs_the_password_again(client, officer):
    import time_machine

    session = client.session  # an anonymous session that exists before the password
    session["seen"] = True
    session.save()
    login(client)
    assert client.cookies["sessionid"].value != session.session_key  # new id for the secret
    assert client.get("/admin/otp/setup/").status_code == 200

    with time_machine.travel(timezone.now() + timedelta(minutes=11)):
        response = client.get("/admin/otp/setup/")

    assert response.status_code == 302 and response["Location"] == LOGIN


def test_a_staff_member_with_an_authenticator_needs_password_and_code(client, officer_device):
    key = officer_device.bin_key

    no_code = login(client)
    assert no_code.status_code == 200 and b"authentication code" in no_code.content
    wrong = login(client, token=wrong_code(key))
    assert wrong.status_code == 200
    # A wrong code and a wrong password read the same: no hint that the password was right.
    wrong_password = login(client, password="not-it", token=code(key))
    assert wrong_password.status_code == 200
    message = "Please enter the correct username, password and authentication code"
    assert message in no_code.content.decode() and message in wrong_password.content.decode()
    time.sleep(2.1)  # two failed codes: django-otp makes the device wait two seconds

    response = login(client, token=code(key, steps_ahead=1))

    assert response.status_code == 302 and response["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200
    failures = AuditEvent.objects.filter(action="auth.login_failed")
    assert sorted(e.after["reason"] for e in failures) == [
        "credentials",
        "second_factor",
        "second_factor",
    ]


# --- In a real browser, against the ASGI app as it runs in production ------------------------


def browser_sign_in(tab, base_url: str, *, password: str = PASSWORD, token: str = "") -> None:
    tab.goto(f"{base_url}/admin/login/?next=/admin/")
    tab.fill("#id_username", "officer")
    tab.fill("#id_password", password)
    tab.fill("#id_otp_token", token)
    tab.click("#login-form input[type=submit]")
    tab.wait_for_load_state()


def test_an_officer_enrols_an_authenticator_then_signs_in_with_password_and_code(
    page, gateway_server, django_user_model
):
    user = django_user_model.objects.create_user(
        "officer", password=PASSWORD, is_staff=True, is_superuser=True
    )
    staff_signin.enrolment_allow(actor=Actor.system("test"), user=user)

    page.goto(f"{gateway_server}/admin/")
    assert "/admin/login/" in page.url
    browser_sign_in(page, gateway_server)
    page.wait_for_url(f"{gateway_server}/admin/otp/setup/")
    assert page.locator("#otp-setup .qr svg").count() == 1
    secret = page.inner_text("#otp-secret").strip()
    key = b32decode(secret)
    page.fill("#id_otp_token", code(key))
    page.click("#otp-setup-form input[type=submit]")
    page.wait_for_url(f"{gateway_server}/admin/")
    assert page.locator("#site-name").is_visible()
    assert "Site administration" in page.content()
    page.click("#logout-form button[type=submit]")
    page.wait_for_load_state()

    browser_sign_in(page, gateway_server)  # the password alone no longer does
    assert "/admin/login/" in page.url
    assert "authentication code" in page.inner_text(".errornote")
    browser_sign_in(page, gateway_server, token=wrong_code(key))
    assert "/admin/login/" in page.url
    assert page.locator(".errornote").is_visible()
    time.sleep(1.2)  # django-otp's throttle after a wrong code

    browser_sign_in(page, gateway_server, token=code(key, steps_ahead=1))

    page.wait_for_url(f"{gateway_server}/admin/")
    assert "Site administration" in page.content()
    assert AuditEvent.objects.filter(action="otp_device.enroll", actor="user:officer").exists()
    assert AuditEvent.objects.filter(action="auth.login", actor="user:officer").count() == 2


def test_the_browser_shows_the_lockout_page_after_five_wrong_passwords(
    page, gateway_server, django_user_model
):
    django_user_model.objects.create_user("officer", password=PASSWORD, is_staff=True)
    for _ in range(5):
        browser_sign_in(page, gateway_server, password="wrong-guess")

    browser_sign_in(page, gateway_server)

    assert page.inner_text("h1") == "Sign-in locked"
    assert "15 minutes" in page.inner_text("#locked-out")
    assert AuditEvent.objects.filter(action="auth.lockout").count() == 1
    page.goto(f"{gateway_server}/admin/")
    assert "/admin/login/" in page.url  # not signed in


# --- Lockout and the audit of sign-ins ------------------------------------------------------


def test_five_wrong_passwords_lock_the_account_even_against_the_right_one(client, officer):
    for _ in range(4):
        assert login(client, password="wrong-guess").status_code == 200
    fifth = login(client, password="wrong-guess")
    assert fifth.status_code == 429

    response = login(client)

    assert response.status_code == 429
    assert "Sign-in locked" in response.content.decode()
    assert "15 minutes" in response.content.decode()
    assert "_auth_user_id" not in client.session
    lockout = AuditEvent.objects.get(action="auth.lockout")  # one row per lock, not per try
    assert lockout.after["username"] == "officer"
    assert lockout.after["ip_address"] == "127.0.0.1"


def test_wrong_codes_count_towards_the_lockout(client, officer_device):
    for _ in range(5):
        login(client, token=wrong_code(officer_device.bin_key))

    assert login(client, token=code(officer_device.bin_key)).status_code == 429
    assert AuditEvent.objects.filter(action="auth.lockout").exists()


def test_the_lock_is_per_username_and_address(client, officer, django_user_model):
    other_user = django_user_model.objects.create_user("other", password=PASSWORD, is_staff=True)
    staff_signin.enrolment_allow(actor=Actor.system("test"), user=other_user)
    for _ in range(5):
        login(client, password="wrong-guess")

    other = login(client, username="other")

    assert other.status_code == 302  # to enrolment: the other account is not locked


def test_sign_in_audit_rows_never_hold_a_password_or_code(client, officer_device):
    login(client, password="Typo-" + PASSWORD)
    login(client, token=code(officer_device.bin_key))

    events = list(AuditEvent.objects.filter(action__startswith="auth."))
    assert [e.action for e in events] == ["auth.login", "auth.login_failed"]  # newest first
    for event in events:
        text = audit_text(event)
        assert PASSWORD not in text and "Typo-" not in text
        assert code(officer_device.bin_key) not in text
    success, failure = events
    assert success.actor == "user:officer" and success.after["second_factor"] == "totp"
    assert failure.after == {
        "username": "officer",
        "channel": "admin",
        "ip_address": "127.0.0.1",
        "reason": "credentials",
    }


# --- Admin of the access-control models -----------------------------------------------------


def test_the_rotate_action_shows_the_new_key_once_and_the_old_one_keeps_working(
    officer_client, principals, key_a
):
    old = ApiKey.objects.get(tenant=principals.tenant_a)

    response = officer_client.post(
        "/admin/gateway/apikey/", {"action": "rotate", "_selected_action": [old.pk]}
    )

    # On this response only: no redirect, no message (the messages cookie is readable).
    assert response.status_code == 200 and "no-store" in response["Cache-Control"]
    found = KEY_PATTERN.findall(response.content.decode())
    assert len(set(found)) == 1
    new_plaintext = found[0]
    assert new_plaintext != key_a
    assert new_plaintext not in officer_client.cookies.output()
    assert new_plaintext not in str(dict(officer_client.session))
    old.refresh_from_db()
    assert old.replaced_by is not None and old.expires_at > timezone.now()
    for plaintext in (key_a, new_plaintext):
        api = officer_client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {plaintext}")
        assert api.status_code == 200, plaintext
    again = officer_client.get("/admin/gateway/apikey/").content.decode()
    assert new_plaintext not in again and "rotated, works until" in again
    assert AuditEvent.objects.filter(action="api_key.rotate", object_id=str(old.pk)).exists()


def test_the_disable_action_revokes_the_service_accounts_keys(officer_client, principals):
    account = gateway_services.service_account_create(
        actor=SYSTEM, tenant=principals.tenant_a, name="billing"
    )
    key, _ = gateway_services.api_key_create(
        actor=SYSTEM, tenant=principals.tenant_a, name="svc", service_account=account
    )

    officer_client.post(
        "/admin/gateway/serviceaccount/", {"action": "disable", "_selected_action": [account.pk]}
    )

    account.refresh_from_db()
    key.refresh_from_db()
    assert account.disabled_at is not None and key.revoked_at is not None
    assert AuditEvent.objects.get(action="service_account.disable").actor == "user:officer"


def _queries(client, url: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(url).status_code == 200
    return len(queries)


def test_the_service_account_list_runs_a_fixed_number_of_queries(officer_client, principals):
    url = "/admin/gateway/serviceaccount/"
    account = gateway_services.service_account_create(
        actor=SYSTEM, tenant=principals.tenant_a, name="svc-0"
    )
    gateway_services.api_key_create(
        actor=SYSTEM, tenant=principals.tenant_a, name="k", service_account=account
    )
    few = _queries(officer_client, url)
    for n in range(1, 8):
        tenant = principals.tenant_a if n % 2 else principals.tenant_b
        account = gateway_services.service_account_create(
            actor=SYSTEM, tenant=tenant, name=f"svc-{n}"
        )
        gateway_services.api_key_create(
            actor=SYSTEM, tenant=tenant, name="k", service_account=account
        )

    many = _queries(officer_client, url)

    assert many == few
    assert "svc-7" in officer_client.get(url).content.decode()


def test_the_security_event_list_runs_a_fixed_number_of_queries_and_hides_the_text(
    officer_client, principals
):
    url = "/admin/gateway/securityevent/"

    def event(tenant, n):
        return SecurityEvent.objects.create(
            tenant=tenant,
            kind=SecurityEvent.Kind.PROMPT_INJECTION,
            action=SecurityEvent.Action.BLOCKED,
            alias="default",
            score=0.9,
            reasons=["ignore_previous"],
            text=f"secret prompt text {n}",
        )

    first = event(principals.tenant_a, 0)
    few = _queries(officer_client, url)
    for n in range(1, 8):
        event(principals.tenant_b if n % 2 else principals.tenant_a, n)

    many = _queries(officer_client, url)

    assert many == few
    listing = officer_client.get(url).content.decode()
    assert "secret prompt text" not in listing and "ignore_previous" in listing
    detail = officer_client.get(f"{url}{first.pk}/change/").content.decode()
    assert "secret prompt text 0" in detail
    assert officer_client.get(f"{url}add/").status_code == 403


def test_the_tier_form_groups_its_limits(officer_client, tier):
    form = officer_client.get(f"/admin/gateway/tier/{tier.pk}/change/").content.decode()

    for heading in (
        "Requests per tenant",
        "Requests per API key",
        "Requests per end user",
        "Tokens and request size",
        "Spend budgets (USD)",
        "Screening",
    ):
        assert heading in form


def test_an_api_key_is_created_for_a_service_account_with_ip_ranges(officer_client, principals):
    account = ServiceAccount.objects.create(tenant=principals.tenant_a, name="etl")

    response = officer_client.post(
        "/admin/gateway/apikey/add/",
        {
            "tenant": principals.tenant_a.pk,
            "service_account": account.pk,
            "name": "etl-key",
            "scopes": ["chat"],
            "allowed_ips": "10.0.0.7\n2001:db8::/32",
            "daily_budget": "5",
        },
        follow=True,
    )

    key = ApiKey.objects.get(name="etl-key")
    assert key.service_account == account
    assert key.allowed_ips == ["10.0.0.7/32", "2001:db8::/32"]
    assert KEY_PATTERN.search(response.content.decode())
    other = ServiceAccount.objects.create(tenant=principals.tenant_b, name="etl")
    refused = officer_client.post(
        "/admin/gateway/apikey/add/",
        {
            "tenant": principals.tenant_a.pk,
            "service_account": other.pk,
            "name": "x",
            "scopes": ["chat"],
            "allowed_ips": "not-an-ip",
        },
    )
    assert refused.status_code == 200
    assert b"belongs to another tenant" in refused.content
    assert b"is not an IP address" in refused.content


def test_deleting_an_authenticator_is_audited_and_never_shows_its_key(
    officer_client, officer_device
):
    url = f"/admin/otp_totp/totpdevice/{officer_device.pk}/"
    assert officer_device.key not in officer_client.get(f"{url}change/").content.decode()

    officer_client.post(f"{url}delete/", {"post": "yes"})

    event = AuditEvent.objects.get(action="admin.totpdevice.delete")
    assert officer_device.key not in audit_text(event)


def test_granting_superuser_in_the_user_admin_is_audited_without_the_password_hash(
    officer_client, django_user_model
):
    clerk = django_user_model.objects.create_user("clerk", password="clerk-pass-991")
    url = f"/admin/auth/user/{clerk.pk}/change/"
    form = officer_client.get(url).context["adminform"].form
    data = {k: v for k, v in form.initial.items() if v is not None and k != "password"}
    data.update(
        {
            "is_staff": "on",
            "is_superuser": "on",
            "is_active": "on",
            "date_joined_0": "2026-01-01",
            "date_joined_1": "00:00:00",
            "groups": [],
            "user_permissions": [],
        }
    )

    response = officer_client.post(url, data)

    assert response.status_code == 302, response.content[:2000]
    event = AuditEvent.objects.get(action="admin.user.change")
    assert event.before["is_superuser"] is False and event.after["is_superuser"] is True
    clerk.refresh_from_db()
    assert clerk.password not in audit_text(event) and "password" not in event.after


def test_lifting_a_lockout_in_the_admin_is_audited(officer_client, client, django_user_model):
    from axes.models import AccessAttempt

    clerk = django_user_model.objects.create_user("clerk", password="clerk-pass-991", is_staff=True)
    staff_signin.enrolment_allow(actor=Actor.system("test"), user=clerk)
    for _ in range(5):
        login(client, username="clerk", password="wrong-guess")
    attempt = AccessAttempt.objects.get(username="clerk")

    officer_client.post(f"/admin/axes/accessattempt/{attempt.pk}/delete/", {"post": "yes"})

    assert not AccessAttempt.objects.exists()
    event = AuditEvent.objects.get(action="auth.unlock")
    assert event.actor == "user:officer" and event.before["username"] == "clerk"
    assert login(client, username="clerk", password="clerk-pass-991").status_code == 302


def test_the_reset_command_removes_an_authenticator_with_an_audit_row(officer_device):
    from django.core.management import call_command

    call_command("reset_authenticator", "officer")

    assert not TOTPDevice.objects.filter(confirmed=True).exists()
    event = AuditEvent.objects.get(action="otp_device.reset")
    assert event.object_repr == "officer" and event.after == {"devices_removed": 1}
    # Run on the server, it also allows the new enrolment.
    assert staff_signin.enrolment_grant(officer_device.user) is not None


def test_setting_a_password_in_the_user_admin_is_audited_without_it(
    officer_client, django_user_model
):
    clerk = django_user_model.objects.create_user("clerk", password="clerk-pass-991")
    new_password = "Fresh-Clerk-Pass-7731"

    response = officer_client.post(
        f"/admin/auth/user/{clerk.pk}/password/",
        {"usable_password": "true", "password1": new_password, "password2": new_password},
    )

    assert response.status_code == 302, response.content[:3000]
    event = AuditEvent.objects.get(action="admin.user.set_password")
    assert event.object_repr == "clerk" and new_password not in audit_text(event)


# --- Enrolment needs an administrator's grant (no trust on first use) -----------------------


def test_a_password_alone_cannot_bind_an_authenticator(client, django_user_model):
    user = django_user_model.objects.create_user("newcomer", password=PASSWORD, is_staff=True)
    response = login(client, username="newcomer")
    assert response.status_code == 200
    assert "setting one up has not been allowed" in response.content.decode()
    assert client.get("/admin/otp/setup/")["Location"] == LOGIN
    assert not TOTPDevice.objects.filter(user=user).exists()
    assert "_auth_user_id" not in client.session


def test_only_a_superuser_can_allow_enrolment_and_it_is_audited(officer_client, django_user_model):
    newcomer = django_user_model.objects.create_user("newcomer", password=PASSWORD, is_staff=True)
    clerk = django_user_model.objects.create_user("clerk", password="clerk-pass-991", is_staff=True)
    from django.contrib.auth.models import Permission

    clerk.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_user", "change_user"])
    )
    TOTPDevice.objects.create(user=clerk, name="authenticator", confirmed=True)
    clerk_client = Client()
    clerk_client.force_login(clerk)
    session = clerk_client.session
    session[DEVICE_ID_SESSION_KEY] = TOTPDevice.objects.get(user=clerk).persistent_id
    session.save()
    form = {"action": "allow_enrolment", "_selected_action": [newcomer.pk]}
    clerk_client.post("/admin/auth/user/", form)
    assert staff_signin.enrolment_grant(newcomer) is None  # change permission is not enough

    officer_client.post("/admin/auth/user/", form)
    assert staff_signin.enrolment_grant(newcomer) is not None
    assert AuditEvent.objects.filter(
        action="otp_device.enrolment_allowed", object_repr="newcomer"
    ).exists()
    response = login(Client(), username="newcomer")
    assert response.status_code == 302 and response["Location"] == "/admin/otp/setup/"


def test_an_enrolment_grant_expires(client, django_user_model, settings):
    import time_machine

    settings.LLMP_ENROLMENT_GRANT_HOURS = 24
    user = django_user_model.objects.create_user("newcomer", password=PASSWORD, is_staff=True)
    staff_signin.enrolment_allow(actor=Actor.system("test"), user=user)
    with time_machine.travel(timezone.now() + timedelta(hours=25)):
        response = login(client, username="newcomer")
    assert response.status_code == 200
    assert "setting one up has not been allowed" in response.content.decode()
