"""The privacy API for apps (consent, subject registration) and consent-driven conversation
storage through the chat API."""

from __future__ import annotations

import json

import pytest

from gateway import services
from llmplatform.actors import SYSTEM
from privacy import services as privacy_services
from privacy.models import ConsentRecord, Conversation, DataSubject
from privacy.services import conversation_decrypt

from .conftest import route_alias
from .upstreams import OpenAIUpstream

pytestmark = pytest.mark.django_db


@pytest.fixture
def upstream():
    with OpenAIUpstream(reply="Noted, I will email jane.doe@example.com today.") as server:
        yield server


def api(client, method, path, key, body=None, **headers):
    kwargs = {"HTTP_AUTHORIZATION": f"Bearer {key}", **headers}
    if body is not None:
        kwargs.update(data=json.dumps(body), content_type="application/json")
    return getattr(client, method)(path, **kwargs)


def chat(client, key, user, content="My email is jane.doe@example.com, remind me.", **headers):
    body = {"model": "default", "messages": [{"role": "user", "content": content}]}
    if user is not None:
        body["user"] = user
    return api(client, "post", "/v1/chat/completions", key, body, **headers)


def test_apps_set_and_read_consent_and_register_an_email(client, principals, key_a, key_b):
    path = "/v1/privacy/subjects/user-42/consent"
    empty = api(client, "get", path, key_a)
    assert empty.status_code == 200
    assert empty.json()["consent"]["store_conversations"]["granted"] is False

    granted = api(
        client,
        "post",
        path,
        key_a,
        {"purpose": "store_conversations", "granted": True, "policy_version": "2"},
    )
    assert granted.status_code == 200
    state = granted.json()["consent"]["store_conversations"]
    assert state["granted"] is True and state["policy_version"] == "2"
    assert state["source"] == "api"

    withdrawn = api(
        client, "post", path, key_a, {"consents": {"store_conversations": False, "analytics": True}}
    )
    assert withdrawn.json()["consent"]["store_conversations"]["granted"] is False
    assert withdrawn.json()["consent"]["analytics"]["granted"] is True
    subject = DataSubject.objects.get(external_id="user-42")
    assert subject.consents.count() == 3  # the full history is kept

    registered = api(
        client, "put", "/v1/privacy/subjects/user-42", key_a, {"email": "Person@Example.org"}
    )
    assert registered.json() == {"user": "user-42", "email_registered": True}
    subject.refresh_from_db()
    assert b"example.org" not in bytes(subject.email_ciphertext).lower()

    # Tenant B's key sees nothing of tenant A's subject.
    other = api(client, "get", path, key_b).json()
    assert other["email_registered"] is False
    assert other["consent"]["store_conversations"]["granted"] is False


def test_bad_consent_input_is_a_typed_400(client, principals, key_a):
    path = "/v1/privacy/subjects/u1/consent"
    bad = api(client, "post", path, key_a, {"purpose": "marketing", "granted": True})
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "invalid_value"
    assert "unknown purpose" in bad.json()["error"]["message"].lower()
    assert api(client, "post", path, key_a, {"purpose": "analytics"}).status_code == 400
    assert (
        api(client, "put", "/v1/privacy/subjects/u1", key_a, {"email": "not-an-email"}).status_code
        == 400
    )
    assert api(client, "delete", path, key_a).status_code == 405


def test_a_refusal_names_its_field_and_an_unexpected_failure_tells_nothing(
    client, principals, key_a, monkeypatch
):
    path = "/v1/privacy/subjects/u1"
    refused = api(client, "put", path, key_a, {"email": "not-an-email"})
    assert refused.status_code == 400
    assert refused.json()["error"] == {
        "message": "Email is not a valid address",
        "type": "invalid_request_error",
        "param": "email",
        "code": "invalid_value",
    }

    def broken(**fields):
        raise ValueError("could not store jane.doe@example.org under data key dk-7731")

    monkeypatch.setattr(privacy_services, "subject_register_email", broken)
    failed = api(client, "put", path, key_a, {"email": "jane.doe@example.org"})
    assert failed.status_code == 500
    assert failed.json()["error"]["code"] == "internal_error"
    assert "jane.doe" not in failed.content.decode() and "dk-7731" not in failed.content.decode()


@pytest.mark.parametrize("source", ["public_page", "portal", "gpc", "admin"])
def test_an_app_cannot_label_its_consent_as_coming_from_the_platforms_own_pages(
    client, principals, key_a, source
):
    path = "/v1/privacy/subjects/u1/consent"
    refused = api(
        client,
        "post",
        path,
        key_a,
        {"purpose": "store_conversations", "granted": True, "source": source},
    )
    assert refused.status_code == 400
    assert 'source must be "api"' in refused.json()["error"]["message"].lower()
    assert not ConsentRecord.objects.filter(subject__external_id="u1").exists()
    recorded = api(
        client,
        "post",
        path,
        key_a,
        {"purpose": "store_conversations", "granted": True, "source": "api"},
    )
    assert recorded.json()["consent"]["store_conversations"]["source"] == "api"


def test_a_key_without_the_privacy_scope_is_refused(client, principals):
    _, chat_only = services.api_key_create(
        actor=SYSTEM, tenant=principals.tenant_a, name="c", scopes=["chat"]
    )
    response = api(client, "get", "/v1/privacy/subjects/u1/consent", chat_only)
    assert response.status_code == 403


def test_conversations_are_stored_only_with_consent_redacted_and_encrypted(
    client, principals, key_a, upstream
):
    route_alias("default", upstream.base_url)
    assert chat(client, key_a, "alice-user").status_code == 200
    assert not Conversation.objects.exists()  # no consent on record: nothing kept

    api(
        client,
        "post",
        "/v1/privacy/subjects/alice-user/consent",
        key_a,
        {"purpose": "store_conversations", "granted": True},
    )
    assert chat(client, key_a, "alice-user").status_code == 200
    record = Conversation.objects.get()
    assert record.tenant == principals.tenant_a and record.alias == "default"
    stored = bytes(record.prompt_ciphertext) + bytes(record.response_ciphertext)
    assert b"jane.doe" not in stored and b"remind me" not in stored
    plain = conversation_decrypt(record)
    assert "remind me" in plain["prompt"]
    assert "jane.doe@example.com" not in plain["prompt"] + plain["response"]
    assert "<EMAIL>" in plain["prompt"] and "<EMAIL>" in plain["response"]

    api(
        client,
        "post",
        "/v1/privacy/subjects/alice-user/consent",
        key_a,
        {"purpose": "store_conversations", "granted": False},
    )
    assert chat(client, key_a, "alice-user").status_code == 200
    assert Conversation.objects.count() == 1  # withdrawn: nothing more kept
    assert chat(client, key_a, None).status_code == 200  # no end user named: nothing kept
    assert Conversation.objects.count() == 1


def test_sec_gpc_on_a_chat_request_opts_its_user_out_of_sale_and_sharing(
    client, principals, key_a, upstream
):
    route_alias("default", upstream.base_url)
    assert chat(client, key_a, "gpc-user", HTTP_SEC_GPC="1").status_code == 200
    consent = api(client, "get", "/v1/privacy/subjects/gpc-user/consent", key_a).json()
    assert consent["do_not_sell"] is True
    assert consent["consent"]["sale_sharing"]["source"] == "gpc"
    refused = api(
        client,
        "post",
        "/v1/privacy/subjects/gpc-user/consent",
        key_a,
        {"purpose": "sale_sharing", "granted": True},
        HTTP_SEC_GPC="1",
    )
    assert refused.status_code == 400


def test_apps_file_requests_for_their_users_and_only_see_their_own(
    client, principals, key_a, key_b
):
    created = api(
        client,
        "post",
        "/v1/privacy/subjects/user-7/requests",
        key_a,
        {"kind": "erasure", "law": "gdpr"},
    )
    assert created.status_code == 202
    body = created.json()
    assert body["kind"] == "erasure" and body["state"] == "verified"  # vouched for by the app
    assert body["due_at"] > body["received_at"]
    status = api(client, "get", f"/v1/privacy/requests/{body['id']}", key_a)
    assert status.status_code == 200 and status.json()["id"] == body["id"]
    foreign = api(client, "get", f"/v1/privacy/requests/{body['id']}", key_b)
    missing = api(client, "get", "/v1/privacy/requests/nonsense", key_b)
    assert foreign.status_code == missing.status_code == 404
    assert foreign.json() == missing.json()
    bad = api(client, "post", "/v1/privacy/subjects/user-7/requests", key_a, {"kind": "delete"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "kind"
