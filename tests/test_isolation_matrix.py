"""Tenant isolation as a matrix: every API route, portal page and admin view that touches
tenant data, tried by alice (tenant A owner), bob (tenant A member) and charlie (tenant B
owner) on tenant A's objects, for each action (list, read, change, delete).

The policy is written out below as tables, one row per route and action, one column per actor.
The outcomes:

- ``ALLOWED``: it succeeds and acts on tenant A's object.
- ``DENIED``: 403 (the actor is in tenant A, but the role or the key's scope does not allow it);
  nothing changes.
- ``AS_MISSING``: answered exactly as the same request about an object that does not exist
  (same status, same body once the id in it is set aside); tenant A's object does not change.
  Where the API answers a missing object by creating one in the caller's own tenant (consent,
  subject registration, requests), that is what happens for a foreign one too: in the caller's
  tenant, never in A.
- ``SIGN_IN``: the admin sends the visitor to its sign-in page, exactly as an anonymous one.

On the API, principals are tenant API keys, not people: "alice" is a tenant A key with every
scope, "bob" a tenant A key without the ``admin`` scope, "charlie" a tenant B key with every
scope. In the portal and the admin they are the users themselves.

The admin has no per-tenant staff: a staff member (an "officer") with the admin's second factor
sees every tenant's records (the officer column), and tenant users are never staff. So the
admin's isolation is that tenant users cannot reach it at all.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core import signing
from django.test import Client

from gateway import services as gateway_services
from gateway.models import (
    ApiKey,
    GuardrailScanner,
    ModelAlias,
    SecurityEvent,
    ServiceAccount,
    Tier,
    UsageRecord,
)
from llmplatform.actors import SYSTEM, Actor
from llmplatform.models import AuditEvent, Tenant
from privacy import services as privacy_services
from privacy.models import (
    Conversation,
    DataSubject,
    ErasureReceipt,
    SubjectRequest,
)
from privacy.subject_requests import execution
from privacy.subject_requests import selectors as request_selectors
from privacy.subject_requests import services as request_services

from .conftest import route_alias
from .upstreams import OpenAIUpstream

pytestmark = pytest.mark.django_db

ALLOWED, DENIED, AS_MISSING, SIGN_IN = "allowed", "denied", "as-missing", "sign-in"
ALICE, BOB, CHARLIE = "alice", "bob", "charlie"
ACTORS = (ALICE, BOB, CHARLIE)
PASSWORD_BACKEND = "django.contrib.auth.backends.ModelBackend"


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def _matrix(policy: dict[tuple[str, str], tuple[str, ...]], actors=ACTORS):
    return [
        pytest.param(route, action, actor, expected, id=f"{route} | {action} | {actor}")
        for (route, action), outcomes in policy.items()
        for actor, expected in zip(actors, outcomes, strict=True)
        if expected is not None
    ]


def _scrub(value, *secrets: str):
    """``value`` (a JSON document) with the given ids replaced by ``<id>`` and timestamps by
    ``<time>``, to compare the answer about a foreign object with the one about a missing one."""
    text = json.dumps(value, sort_keys=True)
    for secret in secrets:
        text = text.replace(secret, "<id>")
    text = re.sub(r"\d{4}-\d\d-\d\dT[\d:.]+(?:\+00:00|Z)", "<time>", text)
    return json.loads(text)


# =============================================================================================
# API
# =============================================================================================

API_POLICY: dict[tuple[str, str], tuple[str, str, str]] = {
    #                                                     alice    bob      charlie
    ("GET /v1/models", "list"):                          (ALLOWED, ALLOWED, AS_MISSING),
    ("POST /v1/chat/completions (tier's model)", "read"): (ALLOWED, ALLOWED, AS_MISSING),
    ("POST /v1/chat/completions (cached answer)", "read"): (ALLOWED, ALLOWED, AS_MISSING),
    ("POST /v1/messages (tier's model)", "read"):       (ALLOWED, ALLOWED, AS_MISSING),
    ("POST /v1/messages (cached answer)", "read"):      (ALLOWED, ALLOWED, AS_MISSING),
    ("POST /v1/responses (tier's model)", "read"):      (ALLOWED, ALLOWED, AS_MISSING),
    ("POST /v1/responses (cached answer)", "read"):     (ALLOWED, ALLOWED, AS_MISSING),
    ("POST /v1/completions (tier's model)", "read"):    (ALLOWED, ALLOWED, AS_MISSING),
    ("POST /v1/embeddings (tier's model)", "read"):     (ALLOWED, ALLOWED, AS_MISSING),
    ("POST /v1/embeddings (cached answer)", "read"):    (ALLOWED, ALLOWED, AS_MISSING),
    ("POST /v1/cache/invalidate", "delete"):             (ALLOWED, DENIED, AS_MISSING),
    ("GET /v1/privacy/subjects/<user>/consent", "read"): (ALLOWED, ALLOWED, AS_MISSING),
    ("POST /v1/privacy/subjects/<user>/consent", "change"): (ALLOWED, ALLOWED, AS_MISSING),
    ("PUT /v1/privacy/subjects/<user>", "change"):       (ALLOWED, ALLOWED, AS_MISSING),
    ("POST /v1/privacy/subjects/<user>/requests", "change"): (ALLOWED, ALLOWED, AS_MISSING),
    ("GET /v1/privacy/requests/<id>", "read"):           (ALLOWED, ALLOWED, AS_MISSING),
}  # fmt: skip

A_SUBJECT = "u-of-tenant-a"
MISSING_SUBJECT = "u-nobody"
A_EMAIL = "a-person@example.org"


@dataclass
class ApiWorld:
    keys: dict[str, str]
    tenant_a: Tenant
    tenant_b: Tenant
    upstream: OpenAIUpstream
    a_subject_request_id: str  # public id of a subject request of tenant A
    cached_body: dict  # a request tenant A's cache answers
    on_commit: Callable  # pytest-django's django_capture_on_commit_callbacks

    def call(self, actor: str, method: str, path: str, body=None):
        kwargs = {"HTTP_AUTHORIZATION": f"Bearer {self.keys[actor]}"}
        if body is not None:
            kwargs.update(data=json.dumps(body), content_type="application/json")
        return getattr(Client(), method)(path, **kwargs)

    def chat(self, actor: str, body: dict):
        return self.call(actor, "post", "/v1/chat/completions", body)

    def a_subject(self) -> DataSubject:
        return DataSubject.objects.get(tenant=self.tenant_a, external_id=A_SUBJECT)

    def a_consent(self) -> dict:
        return _consent_state(self.a_subject())


def _consent_state(subject: DataSubject) -> dict:
    from privacy import selectors

    return selectors.consent_state(subject)


@pytest.fixture
def api_world(principals, django_capture_on_commit_callbacks):
    with OpenAIUpstream() as upstream:
        route_alias("default", upstream.base_url)
        # An alias only tenant A's tier may use; tenant B is on a tier without it.
        route_alias("a-only", upstream.base_url)
        tier_a = Tier.objects.get(name="pro")
        tier_b = Tier.objects.create(name="b-tier", max_prompt_chars=2000)
        tier_a.allowed_aliases.set(ModelAlias.objects.filter(name__in=["default", "a-only"]))
        tier_b.allowed_aliases.set(ModelAlias.objects.filter(name="default"))
        gateway_services.tenant_set_tier(actor=SYSTEM, tenant=principals.tenant_b, tier=tier_b)
        every_scope = [s.value for s in ApiKey.Scope]
        keys = {}
        for actor, tenant, scopes in [
            (ALICE, principals.tenant_a, every_scope),
            (BOB, principals.tenant_a, [s for s in every_scope if s != "admin"]),
            (CHARLIE, principals.tenant_b, every_scope),
        ]:
            _, keys[actor] = gateway_services.api_key_create(
                actor=Actor.for_user(
                    principals.alice if tenant == principals.tenant_a else principals.charlie
                ),
                tenant=tenant,
                name=f"{actor}-app",
                scopes=scopes,
            )
        # Tenant A's data: a subject with consent and an email, a request about them, and a
        # cached answer.
        subject = privacy_services.subject_get_or_create(
            tenant=principals.tenant_a, external_id=A_SUBJECT
        )
        privacy_services.consent_set(
            actor=Actor.system("test"),
            subject=subject,
            purpose="store_conversations",
            granted=True,
            source="api",
        )
        privacy_services.subject_register_email(
            actor=Actor.system("test"),
            tenant=principals.tenant_a,
            external_id=A_SUBJECT,
            email=A_EMAIL,
        )
        request = request_services.subject_request_create(
            tenant=principals.tenant_a,
            kind="access",
            law="gdpr",
            source="api",
            external_id=A_SUBJECT,
            actor=Actor.system("test"),
        )
        world = ApiWorld(
            keys=keys,
            tenant_a=principals.tenant_a,
            tenant_b=principals.tenant_b,
            upstream=upstream,
            a_subject_request_id=request_selectors.public_id(request),
            cached_body={
                "model": "default",
                "temperature": 0,
                "messages": [{"role": "user", "content": "What does tenant A cache?"}],
            },
            on_commit=django_capture_on_commit_callbacks,
        )
        first = world.chat(ALICE, world.cached_body)
        assert first.status_code == 200 and first.headers["X-Cache"] == "MISS"
        assert world.chat(ALICE, world.cached_body).headers["X-Cache"] == "HIT"
        yield world


def _same_answer(foreign, missing, *ids: str) -> None:
    assert foreign.status_code == missing.status_code
    assert foreign.headers["Content-Type"] == missing.headers["Content-Type"]
    assert _scrub(foreign.json(), *ids) == _scrub(missing.json(), *ids)


def api_models_list(world: ApiWorld, actor: str, expected: str) -> None:
    response = world.call(actor, "get", "/v1/models")
    assert response.status_code == 200
    names = {m["id"] for m in response.json()["data"]}
    if expected == ALLOWED:
        assert names == {"default", "a-only"}
    else:  # a model of another tier is listed as much as one that does not exist: not at all
        assert names == {"default"}


def api_tier_model(world: ApiWorld, actor: str, expected: str) -> None:
    body = {"model": "a-only", "messages": [{"role": "user", "content": "hi"}]}
    response = world.chat(actor, body)
    if expected == ALLOWED:
        assert response.status_code == 200
        return
    missing = world.chat(actor, {**body, "model": "no-such-model"})
    assert response.status_code == 404
    _same_answer(response, missing, "a-only", "no-such-model")


def api_messages_tier_model(world: ApiWorld, actor: str, expected: str) -> None:
    body = {"model": "a-only", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
    response = world.call(actor, "post", "/v1/messages", body)
    count = {"model": "a-only", "messages": body["messages"]}
    counted = world.call(actor, "post", "/v1/messages/count_tokens", count)
    if expected == ALLOWED:
        assert response.status_code == counted.status_code == 200
        return
    for path, sent in (("/v1/messages", body), ("/v1/messages/count_tokens", count)):
        foreign = world.call(actor, "post", path, sent)
        missing = world.call(actor, "post", path, {**sent, "model": "no-such-model"})
        assert foreign.status_code == 404
        _same_answer(foreign, missing, "a-only", "no-such-model")


def api_messages_cached_answer(world: ApiWorld, actor: str, expected: str) -> None:
    body = {
        "model": "default",
        "max_tokens": 16,
        "temperature": 0,
        "messages": [{"role": "user", "content": "What does tenant A cache here?"}],
    }
    world.call(ALICE, "post", "/v1/messages", body)  # tenant A's answer is in the cache
    calls = len(world.upstream.requests)
    response = world.call(actor, "post", "/v1/messages", body)
    assert response.status_code == 200
    if expected == ALLOWED:
        assert response.headers["X-Cache"] == "HIT"
        assert len(world.upstream.requests) == calls
        return
    never_seen = world.call(
        actor,
        "post",
        "/v1/messages",
        {**body, "messages": [{"role": "user", "content": "Something nobody asked before"}]},
    )
    assert response.headers["X-Cache"] == never_seen.headers["X-Cache"] == "MISS"
    assert len(world.upstream.requests) == calls + 2


def api_cached_answer(world: ApiWorld, actor: str, expected: str) -> None:
    calls = len(world.upstream.requests)
    response = world.chat(actor, world.cached_body)
    assert response.status_code == 200
    if expected == ALLOWED:
        assert response.headers["X-Cache"] == "HIT"
        assert len(world.upstream.requests) == calls
        return
    # Tenant A's cached answer is not served to tenant B: a miss, like a request never seen.
    never_seen = world.chat(
        actor,
        {
            **world.cached_body,
            "messages": [{"role": "user", "content": "Something nobody asked before"}],
        },
    )
    assert response.headers["X-Cache"] == never_seen.headers["X-Cache"] == "MISS"
    assert len(world.upstream.requests) == calls + 2


def api_responses_tier_model(world: ApiWorld, actor: str, expected: str) -> None:
    body = {"model": "a-only", "input": "hi"}
    response = world.call(actor, "post", "/v1/responses", body)
    if expected == ALLOWED:
        assert response.status_code == 200 and response.json()["status"] == "completed"
        return
    missing = world.call(actor, "post", "/v1/responses", {**body, "model": "no-such-model"})
    assert response.status_code == 404
    _same_answer(response, missing, "a-only", "no-such-model")


def api_responses_cached(world: ApiWorld, actor: str, expected: str) -> None:
    body = {"model": "default", "temperature": 0, "input": "What does tenant A ask twice?"}
    first = world.call(ALICE, "post", "/v1/responses", body)
    assert first.status_code == 200
    calls = len(world.upstream.requests)
    response = world.call(actor, "post", "/v1/responses", body)
    assert response.status_code == 200
    if expected == ALLOWED:
        assert response.headers["X-Cache"] == "HIT"
        assert len(world.upstream.requests) == calls
        return
    # Tenant A's cached answer is not served to tenant B: a miss, answered by the provider.
    assert response.headers["X-Cache"] == "MISS"
    assert len(world.upstream.requests) == calls + 1


def api_completions_tier_model(world: ApiWorld, actor: str, expected: str) -> None:
    body = {"model": "a-only", "prompt": "hi"}
    response = world.call(actor, "post", "/v1/completions", body)
    if expected == ALLOWED:
        assert response.status_code == 200 and response.json()["choices"][0]["text"]
        return
    missing = world.call(actor, "post", "/v1/completions", {**body, "model": "no-such-model"})
    assert response.status_code == 404
    _same_answer(response, missing, "a-only", "no-such-model")


def api_embeddings_tier_model(world: ApiWorld, actor: str, expected: str) -> None:
    body = {"model": "a-only", "input": "hello"}
    response = world.call(actor, "post", "/v1/embeddings", body)
    if expected == ALLOWED:
        assert response.status_code == 200 and response.json()["data"][0]["embedding"]
        return
    missing = world.call(actor, "post", "/v1/embeddings", {**body, "model": "no-such-model"})
    assert response.status_code == 404
    _same_answer(response, missing, "a-only", "no-such-model")


def api_embeddings_cached(world: ApiWorld, actor: str, expected: str) -> None:
    body = {"model": "default", "input": ["What does tenant A embed?"]}
    first = world.call(ALICE, "post", "/v1/embeddings", body)
    assert first.status_code == 200
    calls = len(world.upstream.requests)
    response = world.call(actor, "post", "/v1/embeddings", body)
    assert response.status_code == 200
    if expected == ALLOWED:
        assert response.headers["X-Cache"] == "HIT"
        assert len(world.upstream.requests) == calls
        return
    # Tenant A's vectors are not served to tenant B: a miss, answered by the provider.
    assert response.headers["X-Cache"] == "MISS"
    assert len(world.upstream.requests) == calls + 1


def api_cache_invalidate(world: ApiWorld, actor: str, expected: str) -> None:
    # Invalidation happens when the transaction commits; the test's never does: run it.
    with world.on_commit(execute=True):
        response = world.call(actor, "post", "/v1/cache/invalidate", {"model": "default"})
    a_still_cached = world.chat(ALICE, world.cached_body).headers["X-Cache"] == "HIT"
    if expected == ALLOWED:
        assert response.status_code == 200 and not a_still_cached
    elif expected == DENIED:
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "insufficient_permissions"
        assert a_still_cached
    else:
        missing = world.call(actor, "post", "/v1/cache/invalidate", {"model": "no-such-model"})
        _same_answer(response, missing, "default", "no-such-model")
        assert response.status_code == 200 and a_still_cached


def api_consent_read(world: ApiWorld, actor: str, expected: str) -> None:
    response = world.call(actor, "get", f"/v1/privacy/subjects/{A_SUBJECT}/consent")
    assert response.status_code == 200
    if expected == ALLOWED:
        body = response.json()
        assert body["email_registered"] is True
        assert body["consent"]["store_conversations"]["granted"] is True
        return
    missing = world.call(actor, "get", f"/v1/privacy/subjects/{MISSING_SUBJECT}/consent")
    _same_answer(response, missing, A_SUBJECT, MISSING_SUBJECT)


def api_consent_change(world: ApiWorld, actor: str, expected: str) -> None:
    before = world.a_consent()
    grant = {"purpose": "analytics", "granted": True}
    response = world.call(actor, "post", f"/v1/privacy/subjects/{A_SUBJECT}/consent", grant)
    assert response.status_code == 200
    if expected == ALLOWED:
        assert world.a_consent()["analytics"]["granted"] is True
        return
    missing = world.call(actor, "post", f"/v1/privacy/subjects/{MISSING_SUBJECT}/consent", grant)
    _same_answer(response, missing, A_SUBJECT, MISSING_SUBJECT)
    assert world.a_consent() == before
    # The decision was recorded for a subject of the caller's own tenant.
    assert DataSubject.objects.filter(tenant=world.tenant_b, external_id=A_SUBJECT).exists()


def api_subject_register(world: ApiWorld, actor: str, expected: str) -> None:
    before = bytes(world.a_subject().email_ciphertext)
    body = {"email": "someone-else@example.org"}
    response = world.call(actor, "put", f"/v1/privacy/subjects/{A_SUBJECT}", body)
    assert response.status_code == 200
    if expected == ALLOWED:
        assert bytes(world.a_subject().email_ciphertext) != before
        return
    missing = world.call(actor, "put", f"/v1/privacy/subjects/{MISSING_SUBJECT}", body)
    _same_answer(response, missing, A_SUBJECT, MISSING_SUBJECT)
    assert bytes(world.a_subject().email_ciphertext) == before


def api_request_create(world: ApiWorld, actor: str, expected: str) -> None:
    a_requests = SubjectRequest.objects.filter(tenant=world.tenant_a).count()
    body = {"kind": "erasure"}
    response = world.call(actor, "post", f"/v1/privacy/subjects/{A_SUBJECT}/requests", body)
    assert response.status_code == 202
    if expected == ALLOWED:
        assert SubjectRequest.objects.filter(tenant=world.tenant_a).count() == a_requests + 1
        return
    missing = world.call(actor, "post", f"/v1/privacy/subjects/{MISSING_SUBJECT}/requests", body)
    _same_answer(response, missing, response.json()["id"], missing.json()["id"])
    assert SubjectRequest.objects.filter(tenant=world.tenant_a).count() == a_requests
    assert SubjectRequest.objects.filter(tenant=world.tenant_b).count() == 2


def api_request_status(world: ApiWorld, actor: str, expected: str) -> None:
    response = world.call(actor, "get", f"/v1/privacy/requests/{world.a_subject_request_id}")
    if expected == ALLOWED:
        assert response.status_code == 200 and response.json()["kind"] == "access"
        return
    # A well-signed id of a request that does not exist, and one that is not an id at all.
    no_such = signing.Signer(salt=request_selectors.PUBLIC_ID_SALT).sign_object(10**9)
    for missing_id in (no_such, "not-an-id"):
        missing = world.call(actor, "get", f"/v1/privacy/requests/{missing_id}")
        assert response.status_code == missing.status_code == 404
        assert response.content == missing.content


API_CHECKS: dict[str, Callable[[ApiWorld, str, str], None]] = {
    "GET /v1/models": api_models_list,
    "POST /v1/chat/completions (tier's model)": api_tier_model,
    "POST /v1/chat/completions (cached answer)": api_cached_answer,
    "POST /v1/messages (tier's model)": api_messages_tier_model,
    "POST /v1/messages (cached answer)": api_messages_cached_answer,
    "POST /v1/responses (tier's model)": api_responses_tier_model,
    "POST /v1/responses (cached answer)": api_responses_cached,
    "POST /v1/completions (tier's model)": api_completions_tier_model,
    "POST /v1/embeddings (tier's model)": api_embeddings_tier_model,
    "POST /v1/embeddings (cached answer)": api_embeddings_cached,
    "POST /v1/cache/invalidate": api_cache_invalidate,
    "GET /v1/privacy/subjects/<user>/consent": api_consent_read,
    "POST /v1/privacy/subjects/<user>/consent": api_consent_change,
    "PUT /v1/privacy/subjects/<user>": api_subject_register,
    "POST /v1/privacy/subjects/<user>/requests": api_request_create,
    "GET /v1/privacy/requests/<id>": api_request_status,
}


def test_every_api_route_has_a_row_in_the_policy():
    from gateway.api import urls as api_urls

    names = {p.name for p in api_urls.urlpatterns}
    # /chat and /chat-stream are thin aliases of /v1/chat/completions (same pipeline, same
    # cache namespace); the chat rows stand for them. count_tokens reads nothing of a tenant's
    # but the aliases its tier may use (the messages rows' check).
    covered = {
        "models",
        "chat-completions",
        "responses",
        "completions",
        "embeddings",
        "cache-invalidate",
        "privacy-consent",
        "privacy-subject",
        "privacy-subject-requests",
        "privacy-request",
        "simple-chat",
        "simple-chat-stream",
        "messages",
        "messages-count-tokens",
    }
    assert names == covered
    assert set(API_CHECKS) == {route for route, _ in API_POLICY}


@pytest.mark.parametrize(("route", "action", "actor", "expected"), _matrix(API_POLICY))
def test_api_matrix(api_world, route, action, actor, expected):
    API_CHECKS[route](api_world, actor, expected)


# =============================================================================================
# Portal
# =============================================================================================

PORTAL_POLICY: dict[tuple[str, str], tuple[str, str, str]] = {
    #                                                      alice    bob      charlie
    ("keys", "list"):                                     (ALLOWED, ALLOWED, AS_MISSING),
    ("keys/new", "create"):                               (ALLOWED, DENIED, AS_MISSING),
    ("keys/new with a service account", "create"):        (ALLOWED, DENIED, AS_MISSING),
    ("keys/<id>/secret", "read"):                         (ALLOWED, DENIED, AS_MISSING),
    ("keys/<id>/rotate", "read"):                         (ALLOWED, DENIED, AS_MISSING),
    ("keys/<id>/rotate", "change"):                       (ALLOWED, DENIED, AS_MISSING),
    ("keys/<id>/revoke", "read"):                         (ALLOWED, DENIED, AS_MISSING),
    ("keys/<id>/revoke", "delete"):                       (ALLOWED, DENIED, AS_MISSING),
    ("usage", "list"):                                    (ALLOWED, ALLOWED, AS_MISSING),
    ("tier", "read"):                                     (ALLOWED, ALLOWED, AS_MISSING),
    ("service-accounts", "list"):                         (ALLOWED, ALLOWED, AS_MISSING),
    ("service-accounts", "create"):                       (ALLOWED, DENIED, AS_MISSING),
    ("service-accounts/<id>/disable", "read"):            (ALLOWED, DENIED, AS_MISSING),
    ("service-accounts/<id>/disable", "delete"):          (ALLOWED, DENIED, AS_MISSING),
}  # fmt: skip

MISSING_ID = 987654
MISSING_SLUG = "no-such-tenant"


@dataclass
class PortalWorld:
    principals: object
    key: ApiKey  # tenant A's key
    account: ServiceAccount  # tenant A's service account

    def client(self, actor: str) -> Client:
        client = Client()
        client.force_login(getattr(self.principals, actor), backend=PASSWORD_BACKEND)
        return client

    def own_slug(self, actor: str) -> str:
        return "tenant-b" if actor == CHARLIE else "tenant-a"

    def state(self) -> tuple:
        key = ApiKey.objects.get(pk=self.key.pk)
        account = ServiceAccount.objects.get(pk=self.account.pk)
        return (
            key.revoked_at,
            key.replaced_by_id,
            account.disabled_at,
            ApiKey.objects.filter(tenant=self.principals.tenant_a).count(),
            ServiceAccount.objects.filter(tenant=self.principals.tenant_a).count(),
        )


@pytest.fixture
def portal_world(principals):
    key, _ = gateway_services.api_key_create(
        actor=Actor.for_user(principals.alice), tenant=principals.tenant_a, name="a-portal-key"
    )
    account = gateway_services.service_account_create(
        actor=Actor.for_user(principals.alice), tenant=principals.tenant_a, name="a-etl"
    )
    UsageRecord.objects.create(
        tenant=principals.tenant_a,
        api_key=key,
        request_id="req_a",
        route="chat.completions",
        status_code=200,
        prompt_tokens=11,
    )
    return PortalWorld(principals, key, account)


@dataclass(frozen=True)
class PortalRequest:
    method: str
    path: str  # with {slug}, and {id} for an object of tenant A
    data: dict | None = None
    object_kind: str | None = None  # "key" or "account": the {id}
    success_status: int = 200


def _portal_data(world: PortalWorld, data: dict | None, account_id: int | None) -> dict | None:
    if data is None:
        return None
    return {k: (account_id if v == "{account}" else v) for k, v in data.items()}


PORTAL_REQUESTS: dict[tuple[str, str], PortalRequest] = {
    ("keys", "list"): PortalRequest("get", "/portal/t/{slug}/keys/"),
    ("keys/new", "create"): PortalRequest(
        "post",
        "/portal/t/{slug}/keys/new/",
        {"name": "made-by-test", "scopes": ["chat"]},
        success_status=200,
    ),  # the new key is shown on this response
    ("keys/new with a service account", "create"): PortalRequest(
        "post",
        "/portal/t/{slug}/keys/new/",
        {"name": "sa-key", "scopes": ["chat"], "service_account": "{account}"},
        object_kind="account",
        success_status=200,
    ),
    ("keys/<id>/secret", "read"): PortalRequest(
        "get", "/portal/t/{slug}/keys/{id}/secret/", object_kind="key"
    ),
    ("keys/<id>/rotate", "read"): PortalRequest(
        "get", "/portal/t/{slug}/keys/{id}/rotate/", object_kind="key"
    ),
    ("keys/<id>/rotate", "change"): PortalRequest(
        "post",
        "/portal/t/{slug}/keys/{id}/rotate/",
        {"overlap_hours": 1},
        object_kind="key",
        success_status=200,
    ),
    ("keys/<id>/revoke", "read"): PortalRequest(
        "get", "/portal/t/{slug}/keys/{id}/revoke/", object_kind="key"
    ),
    ("keys/<id>/revoke", "delete"): PortalRequest(
        "post", "/portal/t/{slug}/keys/{id}/revoke/", {}, object_kind="key", success_status=302
    ),
    ("usage", "list"): PortalRequest("get", "/portal/t/{slug}/usage/"),
    ("tier", "read"): PortalRequest("get", "/portal/t/{slug}/tier/"),
    ("service-accounts", "list"): PortalRequest("get", "/portal/t/{slug}/service-accounts/"),
    ("service-accounts", "create"): PortalRequest(
        "post", "/portal/t/{slug}/service-accounts/", {"name": "made-by-test"}, success_status=302
    ),
    ("service-accounts/<id>/disable", "read"): PortalRequest(
        "get", "/portal/t/{slug}/service-accounts/{id}/disable/", object_kind="account"
    ),
    ("service-accounts/<id>/disable", "delete"): PortalRequest(
        "post",
        "/portal/t/{slug}/service-accounts/{id}/disable/",
        {},
        object_kind="account",
        success_status=302,
    ),
}


def _portal_call(
    world: PortalWorld, client: Client, spec: PortalRequest, slug: str, object_id: int | None
):
    path = spec.path.format(slug=slug, id=object_id)
    account = object_id if spec.object_kind == "account" else world.account.pk
    data = _portal_data(world, spec.data, account)
    if spec.method == "get":
        return client.get(path)
    return client.post(path, data or {})


def _without_csrf(page: bytes) -> bytes:
    return re.sub(rb'name="csrfmiddlewaretoken" value="[^"]+"', b"", page)


def _a_object_id(world: PortalWorld, spec: PortalRequest) -> int | None:
    return {"key": world.key.pk, "account": world.account.pk, None: None}[spec.object_kind]


def _portal_effect_seen(world: PortalWorld, route: str, action: str, before: tuple) -> None:
    after = world.state()
    revoked, replaced, disabled, keys, accounts = after
    if (route, action) == ("keys/<id>/revoke", "delete"):
        assert revoked is not None
    elif (route, action) == ("keys/<id>/rotate", "change"):
        assert replaced is not None
    elif (route, action) == ("service-accounts/<id>/disable", "delete"):
        assert disabled is not None
    elif route.startswith("keys/new"):
        assert keys == before[3] + 1
        if "service account" in route:
            assert ApiKey.objects.filter(name="sa-key", service_account=world.account).exists()
    elif (route, action) == ("service-accounts", "create"):
        assert accounts == before[4] + 1
    else:
        assert after == before  # reads change nothing


def test_every_portal_page_has_a_row_in_the_policy():
    from gateway.portal import urls as portal_urls

    tenant_pages = {p.name for p in portal_urls.urlpatterns if "<slug:slug>" in str(p.pattern)}
    # "tenant" only redirects to "keys"; "key-create" and "key-secret" are rows of their own.
    assert tenant_pages == {
        "tenant",
        "keys",
        "key-create",
        "key-secret",
        "key-rotate",
        "key-revoke",
        "usage",
        "tier",
        "service-accounts",
        "service-account-disable",
    }
    assert set(PORTAL_REQUESTS) == set(PORTAL_POLICY)


@pytest.mark.parametrize(("route", "action", "actor", "expected"), _matrix(PORTAL_POLICY))
def test_portal_matrix(portal_world, route, action, actor, expected):
    world, spec = portal_world, PORTAL_REQUESTS[(route, action)]
    client = world.client(actor)
    before = world.state()
    a_id = _a_object_id(world, spec)
    if expected == ALLOWED:
        response = _portal_call(world, client, spec, "tenant-a", a_id)
        assert response.status_code == spec.success_status, response.content[:500]
        if route == "keys" and action == "list":
            assert world.key.display in response.content.decode()
        _portal_effect_seen(world, route, action, before)
        return
    if expected == DENIED:
        response = _portal_call(world, client, spec, "tenant-a", a_id)
        assert response.status_code == 403
        assert world.state() == before
        return
    # Charlie, on tenant A's pages: like a tenant that does not exist ...
    foreign = _portal_call(world, client, spec, "tenant-a", a_id)
    missing = _portal_call(world, client, spec, MISSING_SLUG, a_id)
    assert foreign.status_code == missing.status_code == 404
    assert foreign.content == missing.content
    # ... and tenant A's object through his own tenant's pages: like one that does not exist.
    if spec.object_kind is not None:
        foreign = _portal_call(world, client, spec, world.own_slug(actor), a_id)
        missing = _portal_call(world, client, spec, world.own_slug(actor), MISSING_ID)
        assert foreign.status_code == missing.status_code
        assert foreign.status_code in (200, 404)  # 200: a form error naming no object
        assert _without_csrf(foreign.content) == _without_csrf(missing.content)
        if foreign.status_code == 200:
            assert b"Select a valid choice" in foreign.content
    assert world.state() == before


# =============================================================================================
# Admin
# =============================================================================================

# Every admin view holding tenant data (the deployments apps are not covered yet).
ADMIN_MODELS = [
    "llmplatform.tenant",
    "llmplatform.auditevent",
    "gateway.serviceaccount",
    "gateway.apikey",
    "gateway.usagerecord",
    "gateway.securityevent",
    "gateway.guardrailscanner",
    "privacy.privacypolicy",
    "privacy.datasubject",
    "privacy.consentrecord",
    "privacy.conversation",
    "privacy.subjectrequest",
    "privacy.erasurereceipt",
]
ADMIN_ACTIONS = ("list", "read", "change", "delete")
# Tenant users are not staff: every action sends them to the admin's sign-in, as anonymous
# visitors. The officer (staff with the second factor) lists and reads every tenant's records;
# what an officer may change or delete is the admin's own tests' business (None: not here).
ADMIN_POLICY: dict[tuple[str, str], tuple[str, str, str, str | None]] = {
    (model, action): (SIGN_IN, SIGN_IN, SIGN_IN, ALLOWED if action in ("list", "read") else None)
    for model in ADMIN_MODELS
    for action in ADMIN_ACTIONS
}
ADMIN_ACTORS = (ALICE, BOB, CHARLIE, "officer")


def _erasure_receipt(principals) -> ErasureReceipt:
    erased = request_services.subject_request_create(
        tenant=principals.tenant_a,
        kind="erasure",
        law="gdpr",
        source="api",
        external_id="u-erased",
        actor=Actor.system("test"),
    )
    request_services.subject_request_approve(actor=Actor.for_user(principals.alice), request=erased)
    execution.subject_request_execute(erased.pk)
    return ErasureReceipt.objects.get(request=erased)


def _conversation(principals) -> Conversation:
    tenant = principals.tenant_a
    policy = privacy_services.privacy_policy_get_or_create(tenant=tenant)
    policy.store_conversations = True
    policy.save()
    subject = privacy_services.subject_get_or_create(tenant=tenant, external_id=A_SUBJECT)
    privacy_services.consent_set(
        actor=Actor.system("test"),
        subject=subject,
        purpose="store_conversations",
        granted=True,
        source="api",
    )
    return privacy_services.conversation_store(
        tenant=tenant,
        external_id=A_SUBJECT,
        alias="default",
        request_id="req_conv",
        prompt="hello",
        response="hi",
    )


def _a_key(principals) -> ApiKey:
    return gateway_services.api_key_create(
        actor=Actor.for_user(principals.alice), tenant=principals.tenant_a, name="a-key"
    )[0]


# How to make one record of tenant A for each admin view above.
A_RECORDS: dict[str, Callable] = {
    "llmplatform.tenant": lambda p: p.tenant_a,
    "llmplatform.auditevent": lambda p: AuditEvent.objects.filter(tenant=p.tenant_a).first(),
    "gateway.serviceaccount": lambda p: gateway_services.service_account_create(
        actor=Actor.for_user(p.alice), tenant=p.tenant_a, name="a-etl"
    ),
    "gateway.apikey": _a_key,
    "gateway.usagerecord": lambda p: UsageRecord.objects.create(
        tenant=p.tenant_a,
        api_key=_a_key(p),
        request_id="req_a",
        route="chat.completions",
        status_code=200,
    ),
    "gateway.securityevent": lambda p: SecurityEvent.objects.create(
        tenant=p.tenant_a, api_key=_a_key(p), kind="prompt_injection", action="blocked", score=0.9
    ),
    "gateway.guardrailscanner": lambda p: GuardrailScanner.objects.create(
        name="a-guard", kind="http", tenant=p.tenant_a, url="https://scanner.example.com/scan"
    ),
    "privacy.privacypolicy": lambda p: privacy_services.privacy_policy_get_or_create(
        tenant=p.tenant_a
    ),
    "privacy.datasubject": lambda p: privacy_services.subject_get_or_create(
        tenant=p.tenant_a, external_id=A_SUBJECT
    ),
    "privacy.consentrecord": lambda p: privacy_services.consent_set(
        actor=Actor.system("test"),
        source="api",
        purpose="analytics",
        granted=True,
        subject=privacy_services.subject_get_or_create(tenant=p.tenant_a, external_id=A_SUBJECT),
    ),
    "privacy.conversation": _conversation,
    "privacy.subjectrequest": lambda p: request_services.subject_request_create(
        tenant=p.tenant_a,
        kind="erasure",
        law="gdpr",
        source="api",
        external_id=A_SUBJECT,
        actor=Actor.system("test"),
    ),
    "privacy.erasurereceipt": _erasure_receipt,
}


def _admin_url(model: str, action: str, pk) -> str:
    app, name = model.split(".")
    return {
        "list": f"/admin/{app}/{name}/",
        "read": f"/admin/{app}/{name}/{pk}/change/",
        "change": f"/admin/{app}/{name}/{pk}/change/",
        "delete": f"/admin/{app}/{name}/{pk}/delete/",
    }[action]


def _exists(obj) -> bool:
    return type(obj).objects.filter(pk=obj.pk).exists()


def test_every_admin_view_with_tenant_data_has_a_row_in_the_policy():
    from django.contrib import admin

    def holds_tenant_data(model) -> bool:
        if model is Tenant:
            return True
        return any(
            f.is_relation and f.related_model in (Tenant, DataSubject, SubjectRequest)
            for f in model._meta.fields
        )

    registered = {
        f"{m._meta.app_label}.{m._meta.model_name}"
        for m in admin.site._registry
        if holds_tenant_data(m) and m.__module__.split(".")[0] != "deployments"
    }
    assert registered == set(ADMIN_MODELS) == set(A_RECORDS)


@pytest.mark.parametrize(
    ("route", "action", "actor", "expected"), _matrix(ADMIN_POLICY, ADMIN_ACTORS)
)
def test_admin_matrix(request, principals, route, action, actor, expected):
    obj = A_RECORDS[route](principals)
    assert obj is not None and obj.pk is not None
    url = _admin_url(route, action, obj.pk)
    method = "get" if action in ("list", "read") else "post"
    data = {"post": "yes"} if action == "delete" else {}
    if actor == "officer":
        client = request.getfixturevalue("admin_client")
        response = client.get(url)
        assert response.status_code == 200
        if action == "list":
            assert f"/{obj.pk}/change/" in response.content.decode()
        return
    assert expected == SIGN_IN
    client = Client()
    client.force_login(getattr(principals, actor), backend=PASSWORD_BACKEND)
    response = getattr(client, method)(url, data)
    anonymous = getattr(Client(), method)(url, data)
    assert response.status_code == anonymous.status_code == 302
    assert response["Location"] == anonymous["Location"]
    assert response["Location"].startswith("/admin/login/")
    assert _exists(obj)
    if action in ("change", "delete"):
        assert AuditEvent.objects.filter(action__startswith="admin.").count() == 0


def test_the_conversation_plaintext_view_sends_tenant_users_to_sign_in(principals):
    url = f"/admin/privacy/conversation/{_conversation(principals).pk}/plaintext/"
    for actor in ACTORS:
        client = Client()
        client.force_login(getattr(principals, actor), backend=PASSWORD_BACKEND)
        response = client.post(url)
        assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    assert not AuditEvent.objects.filter(action__contains="plaintext").exists()


@pytest.mark.parametrize("actor", ACTORS)
def test_a_tenant_user_cannot_sign_in_to_the_admin_with_the_right_password(
    client, principals, actor
):
    password = f"{actor}-pass-123"
    response = client.post(
        "/admin/login/", {"username": actor, "password": password, "otp_token": ""}
    )
    assert response.status_code == 200  # the form again, with an error
    assert "for a staff account" in response.content.decode()
    assert isinstance(response.wsgi_request.user, AnonymousUser)
    assert client.get("/admin/").status_code == 302
