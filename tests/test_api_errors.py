"""The API's front door: authentication and input validation, each failure with OpenAI's error
JSON and the right status, and never a 500."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from gateway import services
from gateway.errors import api_error_for
from gateway.models import ApiKey
from gateway.pipeline import authenticate
from llmplatform import errors
from llmplatform.actors import Actor
from llmplatform.models import AuditEvent

from .conftest import route_alias

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_auth_cache():
    authenticate.clear_cache()
    yield
    authenticate.clear_cache()


def post(client, body, key=None, path="/v1/chat/completions", **extra):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {key}"} if key else {}
    data = body if isinstance(body, bytes | str) else __import__("json").dumps(body)
    return client.post(path, data=data, content_type="application/json", **headers, **extra)


CHAT = {"model": "default", "messages": [{"role": "user", "content": "hi"}]}


def assert_openai_error(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if code is not None:
        assert error["code"] == code
    return error


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer",
        "Basic dXNlcjpwYXNz",
        "Bearer not-a-key",
        "Bearer llmp_AAAAAAAAAAAA_" + "B" * 40,  # well formed, unknown
    ],
)
def test_it_rejects_missing_and_unknown_keys_with_401(client, principals, authorization):
    headers = {"HTTP_AUTHORIZATION": authorization} if authorization else {}
    response = client.post(
        "/v1/chat/completions", data=CHAT, content_type="application/json", **headers
    )
    assert_openai_error(response, 401, "invalid_api_key")
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_it_rejects_a_wrong_secret_for_a_real_lookup(client, key_a):
    tampered = key_a[:-1] + ("x" if key_a[-1] != "x" else "y")
    assert_openai_error(post(client, CHAT, tampered), 401, "invalid_api_key")


def test_it_rejects_a_revoked_key_within_the_cache_window(client, principals, key_a, settings):
    route_alias("default", "http://127.0.0.1:9/v1")
    assert post(client, {"model": "nope", "messages": CHAT["messages"]}, key_a).status_code == 404
    key = ApiKey.objects.get(tenant=principals.tenant_a)
    services.api_key_revoke(actor=Actor.for_user(principals.alice), key=key)
    assert_openai_error(post(client, CHAT, key_a), 401, "invalid_api_key")
    assert AuditEvent.objects.filter(action="api_key.revoke", object_id=str(key.pk)).exists()


def test_it_rejects_an_expired_key(client, principals):
    _, plaintext = services.api_key_create(
        actor=Actor.for_user(principals.alice),
        tenant=principals.tenant_a,
        name="old",
        expires_at=timezone.now() - timedelta(seconds=1),
    )
    assert_openai_error(post(client, CHAT, plaintext), 401, "invalid_api_key")


def test_it_rejects_keys_of_a_deactivated_tenant(client, principals, key_a):
    principals.tenant_a.is_active = False
    principals.tenant_a.save()
    assert_openai_error(post(client, CHAT, key_a), 401)


def test_a_key_without_the_chat_scope_cannot_chat(client, principals):
    _, plaintext = services.api_key_create(
        actor=Actor.for_user(principals.alice),
        tenant=principals.tenant_a,
        name="ro",
        scopes=["models:read"],
    )
    assert_openai_error(post(client, CHAT, plaintext), 403, "insufficient_permissions")
    response = client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    assert response.status_code == 200


def test_keys_are_stored_only_as_hashes(principals, key_a):
    key = ApiKey.objects.get(tenant=principals.tenant_a)
    secret = key_a.rsplit("_", 1)[1]
    stored = " ".join(str(v) for v in ApiKey.objects.filter(pk=key.pk).values().first().values())
    assert secret not in stored
    assert key.last_four == secret[-4:]
    event = AuditEvent.objects.get(action="api_key.create")
    assert secret not in str(event.after)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", "invalid_json"),
        (b"[1, 2]", "invalid_json"),
        (
            b'{"model": "default", "messages": [{"role": "user", "content": "\xff\xfe"}]}',
            "invalid_utf8",
        ),
        (
            b'{"model": "default", "messages": [{"role": "user", "content": "\\ud800"}]}',
            "invalid_json",
        ),
        ({"messages": [{"role": "user", "content": "hi"}]}, "invalid_value"),
        ({"model": "default", "messages": []}, "invalid_value"),
        ({"model": "default", "messages": "hi"}, "invalid_value"),
        ({"model": "default", "messages": [{"role": "wizard", "content": "hi"}]}, "invalid_value"),
        ({"model": "default", "messages": [{"role": ["user"], "content": "hi"}]}, "invalid_value"),
        ({"model": ["default"], "messages": [{"role": "user", "content": "hi"}]}, "invalid_value"),
        ({"model": "default", "messages": [{"role": "user"}]}, "invalid_value"),
        ({"model": "default", "messages": [{"role": "tool", "content": "x"}]}, "invalid_value"),
        (
            {
                "model": "default",
                "messages": [{"role": "user", "content": [{"type": "image_url"}]}],
            },
            "invalid_value",
        ),
        ({**CHAT, "n": 129}, "invalid_value"),
        ({**CHAT, "temperature": 3}, "invalid_value"),
        ({**CHAT, "temperature": "hot"}, "invalid_value"),
        ({**CHAT, "max_tokens": 0}, "invalid_value"),
        ({**CHAT, "stop": ["a", "b", "c", "d", "e"]}, "invalid_value"),
        ({**CHAT, "bogus": 1}, "unknown_parameter"),
    ],
)
def test_it_rejects_malformed_bodies_with_400(client, key_a, body, code):
    route_alias("default", "http://127.0.0.1:9/v1")
    error = assert_openai_error(post(client, body, key_a), 400, code)
    assert error["type"] == "invalid_request_error"


def test_it_names_the_field_that_is_wrong(client, key_a):
    route_alias("default", "http://127.0.0.1:9/v1")
    body = {
        "model": "default",
        "messages": [{"role": "user", "content": "hi"}, {"role": "wizard", "content": "x"}],
    }
    error = assert_openai_error(post(client, body, key_a), 400)
    assert error["param"] == "messages[1].role"


def test_an_unknown_model_alias_is_404(client, key_a):
    route_alias("default", "http://127.0.0.1:9/v1")
    error = assert_openai_error(
        post(client, {**CHAT, "model": "gpt-9"}, key_a), 404, "model_not_found"
    )
    # It names the field, not what was sent there (which may be a pasted key or an email).
    assert error["param"] == "model" and "gpt-9" not in error["message"]


def test_a_prompt_over_the_tier_limit_is_400_and_names_the_limit(client, key_a, tier):
    route_alias("default", "http://127.0.0.1:9/v1")
    body = {**CHAT, "messages": [{"role": "user", "content": "x" * (tier.max_prompt_chars + 1)}]}
    error = assert_openai_error(post(client, body, key_a), 400, "prompt_too_large")
    assert str(tier.max_prompt_chars) in error["message"]


def test_wrong_methods_get_405_json(client, key_a):
    response = client.get("/v1/chat/completions", HTTP_AUTHORIZATION=f"Bearer {key_a}")
    assert_openai_error(response, 405, "method_not_allowed")


def test_an_oversized_body_is_413_not_500(client, key_a, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    body = {**CHAT, "messages": [{"role": "user", "content": "x" * 5000}]}
    assert_openai_error(post(client, body, key_a), 413, "request_too_large")


def test_the_simple_chat_alias_validates_its_prompt(client, key_a):
    assert_openai_error(post(client, {"prompt": ""}, key_a, path="/chat"), 400)
    assert_openai_error(
        post(client, {"prompt": "hi", "x": 1}, key_a, path="/chat"), 400, "unknown_parameter"
    )
    assert_openai_error(post(client, {"prompt": "hi"}, None, path="/chat"), 401)


def test_models_lists_only_the_aliases_the_tier_allows(client, principals, key_a, key_b, tier):
    default = route_alias("default", "http://127.0.0.1:9/v1")
    route_alias("premium", "http://127.0.0.1:9/v1")
    response = client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {key_a}")
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == ["default", "premium"]
    assert all(m["object"] == "model" for m in body["data"])

    tier.allowed_aliases.set([default])
    response = client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {key_a}")
    assert [m["id"] for m in response.json()["data"]] == ["default"]
    # An alias the tier does not allow looks exactly like a missing one.
    missing = post(client, {**CHAT, "model": "nonexistent"}, key_a).json()["error"]
    hidden = post(client, {**CHAT, "model": "premium"}, key_a).json()["error"]
    assert hidden["code"] == missing["code"] == "model_not_found"


def test_an_unreachable_upstream_tells_the_client_when_to_retry():
    """A 503 whose upstream could not be reached at all (a model server restarting, say)
    carries a Retry-After, so SDKs back off instead of failing or hammering."""
    from gateway.pipeline.dispatch import UNAVAILABLE_RETRY_AFTER, as_api_error
    from gateway.providers.base import UpstreamBadResponse, UpstreamUnavailable

    refused = as_api_error(UpstreamUnavailable("local cannot be reached (ConnectError)"))
    hinted = as_api_error(UpstreamUnavailable("busy", upstream_status=503, retry_after=7.2))
    bad = as_api_error(UpstreamBadResponse("not JSON"))

    assert (refused.status, refused.code) == (503, "upstream_unavailable")
    assert refused.headers == {"Retry-After": str(UNAVAILABLE_RETRY_AFTER)}
    assert hinted.headers == {"Retry-After": "8"}  # the upstream's own hint, rounded up
    assert bad.status == 502 and "Retry-After" not in bad.headers


@pytest.mark.django_db
def test_upstream_errors_name_no_provider_deployment_or_secret_reference(
    client, principals, key_a, settings
):
    """Those stay in the log under the request id; the client gets the kind of failure, and a
    request the provider refused keeps the provider's own error code."""
    from gateway.models import Provider

    from .upstreams import OpenAIUpstream

    with OpenAIUpstream() as upstream:
        route_alias("default", upstream.base_url)
        provider = Provider.objects.get()
        provider.name, provider.api_key_ref = "internal-openai-eu", "env:PROVIDER_NOT_SET_ANYWHERE"
        provider.save()
        from gateway.pipeline.route import routing_table

        routing_table.invalidate()
        bodies = [post(client, CHAT, key_a).content.decode()]
        provider.api_key_ref = ""
        provider.save()
        routing_table.invalidate()
        upstream.behaviour = "bad_request"  # 400 context_length_exceeded
        refused = post(client, CHAT, key_a)
        bodies.append(refused.content.decode())
    for body in bodies:
        for internal in (
            "internal-openai-eu",
            "PROVIDER_NOT_SET_ANYWHERE",
            "env:",
            "default-deployment",
            "127.0.0.1",
        ):
            assert internal not in body, (internal, body)
    assert "context_length_exceeded" in refused.json()["error"]["message"]


@pytest.mark.parametrize(
    ("refusal", "status", "kind", "code"),
    [
        (
            errors.InvalidInput("the overlap is too long", param="overlap"),
            400,
            "invalid_request_error",
            "invalid_value",
        ),
        (errors.Conflict("this key was already rotated"), 409, "invalid_request_error", "conflict"),
        (errors.NotFound("no such request"), 404, "invalid_request_error", "not_found"),
        (
            errors.Forbidden("only an owner may"),
            403,
            "permission_error",
            "insufficient_permissions",
        ),
    ],
)
def test_each_kind_of_service_refusal_has_its_status_and_code(refusal, status, kind, code):
    error = api_error_for(refusal).body()["error"]
    assert api_error_for(refusal).status == status
    assert (error["type"], error["code"], error["param"]) == (kind, code, refusal.param)
    assert error["message"] == refusal.message[:1].upper() + refusal.message[1:]
