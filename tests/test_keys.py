"""API key lifecycle: create, rotate with overlap, expire, revoke, scopes, IP ranges, and
service accounts holding their own keys."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from gateway import services
from gateway.models import ApiKey
from gateway.pipeline import authenticate
from llmplatform.actors import SYSTEM, Actor
from llmplatform.errors import Conflict, InvalidInput
from llmplatform.models import AuditEvent

pytestmark = pytest.mark.django_db


def models(client, key, **extra):
    return client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {key}", **extra)


def test_a_rotated_key_and_its_replacement_both_work_until_the_overlap_ends(
    client, principals, key_a
):
    old = ApiKey.objects.get(name="a-key")
    new, new_plaintext = services.api_key_rotate(
        actor=Actor.for_user(principals.alice), key=old, overlap=timedelta(hours=2)
    )
    assert new_plaintext != key_a and new.name == old.name and new.scopes == old.scopes
    old.refresh_from_db()
    assert old.replaced_by == new
    assert models(client, key_a).status_code == 200
    assert models(client, new_plaintext).status_code == 200

    with time_machine.travel(timezone.now() + timedelta(hours=2, minutes=1)):
        authenticate.clear_cache()
        assert models(client, key_a).status_code == 401
        assert models(client, new_plaintext).status_code == 200

    actions = list(
        AuditEvent.objects.filter(object_id=str(old.pk)).values_list("action", flat=True)
    )
    assert "api_key.rotate" in actions


def test_a_key_cannot_be_rotated_twice_or_after_revocation(principals, key_a):
    old = ApiKey.objects.get(name="a-key")
    services.api_key_rotate(actor=Actor.for_user(principals.alice), key=old)
    with pytest.raises(Conflict, match="already rotated"):
        services.api_key_rotate(actor=Actor.for_user(principals.alice), key=old)
    _, _ = services.api_key_create(actor=SYSTEM, tenant=principals.tenant_a, name="x")
    revoked = services.api_key_revoke(actor=SYSTEM, key=ApiKey.objects.get(name="x"))
    with pytest.raises(Conflict, match="revoked or expired"):
        services.api_key_rotate(actor=Actor.for_user(principals.alice), key=revoked)
    with pytest.raises(InvalidInput, match="overlap"):
        services.api_key_rotate(
            actor=Actor.for_user(principals.alice),
            key=ApiKey.objects.get(name="a-key", replaced_by__isnull=True),
            overlap=timedelta(days=31),
        )


def test_a_revoked_key_stops_working_within_the_auth_cache_lifetime(
    client, principals, key_a, settings
):
    settings.LLMP_AUTH_CACHE_SECONDS = 0
    assert models(client, key_a).status_code == 200
    services.api_key_revoke(
        actor=Actor.for_user(principals.alice), key=ApiKey.objects.get(name="a-key")
    )
    response = models(client, key_a)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_scopes_limit_what_a_key_may_call(client, principals):
    _, models_only = services.api_key_create(
        actor=SYSTEM, tenant=principals.tenant_a, name="reader", scopes=["models:read"]
    )
    assert models(client, models_only).status_code == 200
    response = client.post(
        "/v1/chat/completions",
        data="{}",
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {models_only}",
    )
    assert response.status_code == 403
    assert "'chat' scope" in response.json()["error"]["message"]
    with pytest.raises(InvalidInput, match="Unknown scopes"):
        services.api_key_create(
            actor=SYSTEM, tenant=principals.tenant_a, name="bad", scopes=["root"]
        )


def test_a_key_limited_to_ip_ranges_is_refused_elsewhere(client, principals):
    key, plaintext = services.api_key_create(
        actor=SYSTEM,
        tenant=principals.tenant_a,
        name="office",
        allowed_ips=["10.1.0.0/16", "2001:db8::/32", "192.168.7.7"],
    )
    assert key.allowed_ips == ["10.1.0.0/16", "2001:db8::/32", "192.168.7.7/32"]
    assert models(client, plaintext, REMOTE_ADDR="10.1.2.3").status_code == 200
    assert models(client, plaintext, REMOTE_ADDR="2001:db8::5").status_code == 200
    assert models(client, plaintext, REMOTE_ADDR="192.168.7.7").status_code == 200
    refused = models(client, plaintext, REMOTE_ADDR="10.2.0.1")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "ip_not_allowed"
    with pytest.raises(InvalidInput, match="not an IP address"):
        services.api_key_create(
            actor=SYSTEM, tenant=principals.tenant_a, name="bad", allowed_ips=["10.0.0.0/33"]
        )


def test_forwarded_addresses_count_only_behind_trusted_proxies(client, principals, settings):
    _, plaintext = services.api_key_create(
        actor=SYSTEM, tenant=principals.tenant_a, name="office", allowed_ips=["10.1.0.0/16"]
    )
    spoofed = models(client, plaintext, REMOTE_ADDR="203.0.113.9", HTTP_X_FORWARDED_FOR="10.1.0.1")
    assert spoofed.status_code == 403
    settings.LLMP_TRUSTED_PROXY_HOPS = 1
    authenticate.clear_cache()
    # One proxy: the right-most forwarded address is the client's; a left-most one the client
    # wrote itself is ignored.
    assert (
        models(
            client, plaintext, REMOTE_ADDR="172.16.0.2", HTTP_X_FORWARDED_FOR="6.6.6.6, 10.1.0.1"
        ).status_code
        == 200
    )
    assert (
        models(
            client, plaintext, REMOTE_ADDR="172.16.0.2", HTTP_X_FORWARDED_FOR="10.1.0.1, 6.6.6.6"
        ).status_code
        == 403
    )


def test_a_service_account_holds_keys_and_disabling_it_cuts_them_all_off(
    client, principals, settings
):
    settings.LLMP_AUTH_CACHE_SECONDS = 0
    account = services.service_account_create(
        actor=Actor.for_user(principals.alice), tenant=principals.tenant_a, name="billing-svc"
    )
    key, plaintext = services.api_key_create(
        actor=Actor.for_user(principals.alice),
        tenant=principals.tenant_a,
        name="billing",
        service_account=account,
    )
    assert key.service_account == account
    assert models(client, plaintext).status_code == 200

    services.service_account_disable(actor=Actor.for_user(principals.alice), account=account)
    assert models(client, plaintext).status_code == 401
    key.refresh_from_db()
    assert key.revoked_at is not None
    with pytest.raises(Conflict, match="disabled"):
        services.api_key_create(
            actor=SYSTEM, tenant=principals.tenant_a, name="again", service_account=account
        )
    assert AuditEvent.objects.filter(
        action="service_account.disable", object_id=str(account.pk)
    ).exists()


def test_a_service_account_of_another_tenant_cannot_hold_a_key(principals):
    foreign = services.service_account_create(
        actor=SYSTEM, tenant=principals.tenant_b, name="theirs"
    )
    with pytest.raises(InvalidInput, match="another tenant"):
        services.api_key_create(
            actor=SYSTEM, tenant=principals.tenant_a, name="k", service_account=foreign
        )
