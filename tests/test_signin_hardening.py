"""Throttles and lockouts that an attacker with many addresses cannot spread over, and a second
factor for portal users (security item 6 and the portal's password oracle)."""

from __future__ import annotations

import uuid

import pytest
from django.test import Client
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from llmplatform.actors import Actor
from llmplatform.models import AuditEvent

pytestmark = pytest.mark.django_db

WRONG = "Please enter a correct username and password"


@pytest.fixture(autouse=True)
def _isolated(settings):
    settings.RATELIMIT_CACHE_PREFIX = f"rl:{uuid.uuid4().hex}:"
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.LLMP_PORTAL_LOGIN_RATE = "1000/m"


def portal_login(client, username="alice", password="alice-pass-123", addr="10.0.0.1", **extra):
    return client.post(
        "/portal/login/", {"username": username, "password": password, **extra}, REMOTE_ADDR=addr
    )


# --------------------------------------------------------------------------- IPv6 /64


def test_the_public_privacy_page_counts_an_ipv6_caller_as_its_64(client, principals, settings):
    settings.LLMP_PRIVACY_REQUEST_RATE = "2/m"
    form = {"tenant": "tenant-a", "kind": "erasure", "law": "gdpr", "email": "x@example.org"}
    statuses = [
        client.post("/privacy/request/", form, REMOTE_ADDR=f"2001:db8:1:2::{n}").status_code
        for n in range(1, 4)
    ]
    assert statuses[:2] != [429, 429] and statuses[2] == 429  # three hosts of one /64
    other = client.post("/privacy/request/", form, REMOTE_ADDR="2001:db8:1:3::1")
    assert other.status_code != 429  # the next /64 is someone else


def test_the_per_address_lockout_counts_an_ipv6_64_as_one_address(client, principals, settings):
    for n in range(settings.AXES_FAILURE_LIMIT):
        portal_login(client, password="wrong", addr=f"2001:db8:aa:bb::{n + 1}")
    response = portal_login(client, addr="2001:db8:aa:bb::ffff")
    assert response.status_code == 429
    assert "_auth_user_id" not in client.session


# --------------------------------------------------------------------------- per account


def test_guesses_from_many_addresses_lock_the_account(client, principals, settings):
    settings.LLMP_SIGNIN_ACCOUNT_FAILURE_LIMIT = 8
    # Fewer than the per-address limit from each address: axes alone would never lock.
    for n in range(8):
        portal_login(client, password="wrong", addr=f"198.51.100.{n + 1}")
    locked = portal_login(client, addr="203.0.113.9")  # the right password, a fresh address
    assert locked.status_code == 429
    assert "_auth_user_id" not in client.session
    # Another account is not affected.
    assert (
        portal_login(
            Client(), username="bob", password="bob-pass-123", addr="203.0.113.9"
        ).status_code
        == 302
    )


def test_the_account_lock_ends_after_the_lockout_window(client, principals, settings):
    from llmplatform import account_lockout

    settings.LLMP_SIGNIN_ACCOUNT_FAILURE_LIMIT = 3
    settings.LLMP_SIGNIN_LOCKOUT_MINUTES = 1
    for n in range(3):
        portal_login(client, password="wrong", addr=f"198.51.100.{n + 1}")
    assert account_lockout.is_locked("alice") and account_lockout.is_locked(" ALICE ")
    from django.core.cache import cache

    cache.delete(account_lockout._key("alice"))  # what the cache's expiry does after 1 minute
    assert portal_login(client, addr="203.0.113.9").status_code == 302


# --------------------------------------------------------------------------- portal TOTP


def enrol(client: Client) -> TOTPDevice:
    page = client.get("/portal/account/security/")
    assert page.status_code == 200 and b'data-testid="totp-secret"' in page.content
    device = TOTPDevice.objects.get(user__username="alice", confirmed=False)
    response = client.post(
        "/portal/account/security/", {"action": "enrol", "code": totp(device.bin_key)}
    )
    assert response.status_code == 302
    device.refresh_from_db()
    assert device.confirmed
    return device


def test_a_portal_user_enrols_an_authenticator_and_then_needs_its_code(principals):
    client = Client()
    assert portal_login(client).status_code == 302
    wrong = client.post("/portal/account/security/", {"action": "enrol", "code": "000000"})
    assert wrong.status_code == 400
    # django-otp then makes the device wait a second before it takes another code.
    TOTPDevice.objects.filter(user__username="alice").update(
        throttling_failure_count=0, throttling_failure_timestamp=None
    )
    device = enrol(client)
    assert AuditEvent.objects.filter(action="otp_device.enroll").exists()

    fresh = Client()
    refused = portal_login(fresh)  # the password alone
    assert refused.status_code == 200 and WRONG in refused.content.decode()
    assert "_auth_user_id" not in fresh.session
    refused = portal_login(fresh, otp_token="123456" if totp(device.bin_key) != 123456 else "1")
    assert refused.status_code == 200 and WRONG in refused.content.decode()

    device.refresh_from_db()
    device.last_t = -1  # a code may be used once: allow the current one again for this test
    device.throttling_failure_count = 0
    device.throttling_failure_timestamp = None
    device.save()
    assert portal_login(fresh, otp_token=f"{totp(device.bin_key):06d}").status_code == 302


def test_a_tenant_can_require_owners_to_confirm_with_an_authenticator(principals):
    tenant = principals.tenant_a
    tenant.require_owner_2fa = True
    tenant.save()
    owner = Client()
    assert portal_login(owner).status_code == 302  # alice owns tenant-a
    page = owner.get("/portal/t/tenant-a/keys/")
    assert page.status_code == 302
    assert page["Location"].startswith("/portal/account/security/?next=")
    enrol(owner)
    assert owner.get("/portal/t/tenant-a/keys/").status_code == 200

    member = Client()
    assert portal_login(member, username="bob", password="bob-pass-123").status_code == 302
    assert member.get("/portal/t/tenant-a/keys/").status_code == 200  # members are not held


def test_removing_the_authenticator_needs_a_current_code(principals):
    client = Client()
    portal_login(client)
    device = enrol(client)
    response = client.post("/portal/account/security/", {"action": "remove", "code": "000000"})
    assert response.status_code == 400
    assert TOTPDevice.objects.filter(pk=device.pk).exists()


# --------------------------------------------------------------------------- session lifetimes


def test_an_idle_portal_session_ends_and_an_active_one_does_not(principals, settings):
    import time_machine
    from django.utils import timezone

    settings.LLMP_SESSION_IDLE_MINUTES = 30
    start = timezone.now()
    with time_machine.travel(start, tick=False) as clock:
        client = Client()
        assert portal_login(client).status_code == 302
        for _ in range(4):  # a page every 20 minutes for 80 minutes keeps it alive
            clock.shift(20 * 60)
            assert client.get("/portal/t/tenant-a/keys/").status_code == 200
        clock.shift(31 * 60)
        response = client.get("/portal/t/tenant-a/keys/")
        assert response.status_code == 302 and response["Location"].startswith("/portal/login/")
        assert "_auth_user_id" not in client.session


def test_a_staff_session_ends_after_its_absolute_age_however_active(
    principals, settings, django_user_model
):
    import time_machine
    from django.utils import timezone

    settings.LLMP_STAFF_SESSION_HOURS = 8
    settings.LLMP_SESSION_IDLE_MINUTES = 60
    staff = django_user_model.objects.create_user("ops", password="ops-pass-123456", is_staff=True)
    from llmplatform.models import Membership

    Membership.objects.create(user=staff, tenant=principals.tenant_a, role="member")
    with time_machine.travel(timezone.now(), tick=False) as clock:
        client = Client()
        assert portal_login(client, username="ops", password="ops-pass-123456").status_code == 302
        assert client.session.get_expiry_age() <= 8 * 3600
        for _ in range(16):  # active every 30 minutes for 8 hours
            clock.shift(30 * 60)
            client.get("/portal/t/tenant-a/keys/")
        clock.shift(60)
        response = client.get("/portal/t/tenant-a/keys/")
        assert response.status_code == 302
        assert "_auth_user_id" not in client.session


def test_the_portal_is_no_way_round_the_admins_enrolment_grant(principals, django_user_model):
    """A staff member who also belongs to a tenant cannot bind an authenticator in the portal
    on a password alone (it would then open the admin too)."""
    from llmplatform import staff_signin
    from llmplatform.models import Membership

    staff = django_user_model.objects.create_user("ops", password="ops-pass-123456", is_staff=True)
    Membership.objects.create(user=staff, tenant=principals.tenant_a, role="member")
    client = Client()
    assert portal_login(client, username="ops", password="ops-pass-123456").status_code == 302
    page = client.get("/portal/account/security/")
    assert b'data-testid="needs-grant"' in page.content
    assert b'data-testid="totp-secret"' not in page.content
    refused = client.post("/portal/account/security/", {"action": "enrol", "code": "123456"})
    assert refused.status_code == 403
    assert not TOTPDevice.objects.filter(user=staff).exists()

    grant = staff_signin.enrolment_allow(actor=Actor.system("test"), user=staff)
    page = client.get("/portal/account/security/")
    assert b'data-testid="totp-secret"' in page.content
    response = client.post(
        "/portal/account/security/", {"action": "enrol", "code": f"{totp(grant.bin_key):06d}"}
    )
    assert response.status_code == 302
    assert TOTPDevice.objects.get(user=staff).confirmed
