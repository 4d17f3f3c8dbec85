"""The semantic cache: an alias that opts in answers a similar question from a stored answer
(``X-Cache: SEMANTIC-HIT`` with the similarity), within one tenant and alias, only for requests
where that is safe, never at the cost of an error; erasure and invalidation reach it; officers
configure it in the admin with hostile values refused."""

from __future__ import annotations

import json

import httpx
import pytest
from django.contrib.auth.models import Permission

from gateway import cache as response_cache
from gateway import semantic_cache
from gateway.models import ModelAlias, ModelVersion, ProviderDeployment, UsageRecord
from gateway.pipeline import authenticate
from gateway.pipeline.route import invalidate_routing
from llmplatform import datamap
from llmplatform.models import AuditEvent
from privacy.models import PrivacyPolicy

from .conftest import route_alias
from .upstreams import OpenAIUpstream

QUESTION = "What are your opening hours?"
PARAPHRASE = "When are you open?"
UNRELATED = "How do I reset my password?"
REORDERED = "Hours your opening are what?"
# Unit vectors in 8 dimensions: the paraphrase at cosine 0.98 of the question, the unrelated
# question at 0 (the reordered one is made identical to the question).
VECTORS = {
    QUESTION: [1.0, 0, 0, 0, 0, 0, 0, 0],
    PARAPHRASE: [0.98, 0.198997487, 0, 0, 0, 0, 0, 0],
    UNRELATED: [0, 0, 1.0, 0, 0, 0, 0, 0],
    REORDERED: [1.0, 0, 0, 0, 0, 0, 0, 0],
}


@pytest.fixture(autouse=True)
def _fresh_state():
    authenticate.clear_cache()
    response_cache._local.clear()
    semantic_cache._sqlite_store.clear()
    semantic_cache.indexes.clear()
    yield


@pytest.fixture
def upstream():
    with OpenAIUpstream() as server:
        server.reply = "We are open from 9 to 5."
        server.embedding_for = dict(VECTORS)
        yield server


def opt_in(upstream: OpenAIUpstream, *, threshold: float = 0.95, name: str = "faq") -> None:
    route_alias("embed", upstream.base_url, model="embedding-model")
    alias = route_alias(name, upstream.base_url)
    alias.semantic_cache = True
    alias.semantic_cache_embeddings = "embed"
    alias.semantic_cache_threshold = threshold
    alias.save()
    invalidate_routing()


def ask(base_url: str, key: str, text: str, **fields) -> httpx.Response:
    body = {
        "model": "faq",
        "temperature": 0,
        "messages": [{"role": "user", "content": text}],
        **fields,
    }
    return httpx.post(
        f"{base_url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )


def chat_calls(upstream: OpenAIUpstream) -> int:
    return sum(1 for r in upstream.requests if r.path.endswith("/chat/completions"))


def embedding_calls(upstream: OpenAIUpstream) -> int:
    return sum(1 for r in upstream.requests if r.path.endswith("/embeddings"))


def test_an_alias_that_did_not_opt_in_makes_no_embeddings_call(gateway_server, key_a, upstream):
    route_alias("embed", upstream.base_url, model="embedding-model")
    route_alias("faq", upstream.base_url)
    assert ask(gateway_server, key_a, QUESTION).headers["X-Cache"] == "MISS"
    second = ask(gateway_server, key_a, PARAPHRASE)
    assert second.headers["X-Cache"] == "MISS"
    assert "X-Cache-Similarity" not in second.headers
    assert (chat_calls(upstream), embedding_calls(upstream)) == (2, 0)


def test_a_paraphrase_is_answered_from_the_stored_answer_plain_and_streamed(
    gateway_server, key_a, upstream
):
    opt_in(upstream)
    first = ask(gateway_server, key_a, QUESTION)
    assert first.headers["X-Cache"] == "MISS"
    hit = ask(gateway_server, key_a, PARAPHRASE)
    assert hit.status_code == 200
    assert hit.headers["X-Cache"] == "SEMANTIC-HIT"
    assert hit.headers["X-Cache-Similarity"] == "0.9800"
    assert hit.json()["choices"][0]["message"]["content"] == "We are open from 9 to 5."
    assert chat_calls(upstream) == 1
    record = UsageRecord.objects.get(
        request_id=hit.headers["X-Request-ID"], route="chat.completions"
    )
    assert record.cache_hit and record.cost == 0
    # The question's embedding went through the governed path: metered to the tenant.
    embedded = UsageRecord.objects.filter(
        request_id=hit.headers["X-Request-ID"], route="embeddings"
    ).get()
    assert embedded.tenant_id == record.tenant_id and embedded.alias == "embed"

    with httpx.stream(
        "POST",
        f"{gateway_server}/v1/chat/completions",
        json={
            "model": "faq",
            "temperature": 0,
            "stream": True,
            "messages": [{"role": "user", "content": PARAPHRASE}],
        },
        headers={"Authorization": f"Bearer {key_a}"},
        timeout=10,
    ) as streamed:
        body = "".join(streamed.iter_text())
        assert streamed.headers["X-Cache"] == "SEMANTIC-HIT"
    chunks = [
        json.loads(line[len("data: ") :])
        for line in body.splitlines()
        if line.startswith("data: {")
    ]
    text = "".join(
        c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices")
    )
    assert text == "We are open from 9 to 5."
    assert body.rstrip().endswith("data: [DONE]")
    assert chat_calls(upstream) == 1


def test_an_unrelated_or_reordered_question_is_not_a_hit(gateway_server, key_a, upstream):
    opt_in(upstream)
    ask(gateway_server, key_a, QUESTION)
    assert ask(gateway_server, key_a, UNRELATED).headers["X-Cache"] == "MISS"
    # The same words in another order, embedded identically: a different question.
    assert ask(gateway_server, key_a, REORDERED).headers["X-Cache"] == "MISS"
    assert chat_calls(upstream) == 3


def test_the_threshold_is_the_aliass(gateway_server, key_a, upstream):
    opt_in(upstream, threshold=0.99)
    ask(gateway_server, key_a, QUESTION)
    assert ask(gateway_server, key_a, PARAPHRASE).headers["X-Cache"] == "MISS"


def test_another_tenant_or_alias_never_gets_the_answer(gateway_server, key_a, key_b, upstream):
    opt_in(upstream)
    ask(gateway_server, key_a, QUESTION)
    assert ask(gateway_server, key_b, PARAPHRASE).headers["X-Cache"] == "MISS"
    other = route_alias("faq2", upstream.base_url)
    ModelAlias.objects.filter(pk=other.pk).update(
        semantic_cache=True, semantic_cache_embeddings="embed", semantic_cache_threshold=0.5
    )
    invalidate_routing()
    assert ask(gateway_server, key_a, PARAPHRASE, model="faq2").headers["X-Cache"] == "MISS"
    assert chat_calls(upstream) == 3


@pytest.mark.parametrize(
    "fields",
    [
        {"temperature": 0.7},
        {
            "tools": [
                {
                    "type": "function",
                    "function": {"name": "hours", "parameters": {"type": "object"}},
                }
            ]
        },
    ],
    ids=["sampling", "tools"],
)
def test_sampling_or_tools_never_hit_and_make_no_embeddings_call(
    gateway_server, key_a, upstream, fields
):
    opt_in(upstream)
    ask(gateway_server, key_a, QUESTION, **fields)
    answered = ask(gateway_server, key_a, PARAPHRASE, **fields)
    assert answered.headers["X-Cache"] != "SEMANTIC-HIT"
    assert chat_calls(upstream) == 2 and embedding_calls(upstream) == 0


def test_a_different_system_prompt_never_matches(gateway_server, key_a, upstream):
    opt_in(upstream)
    ask(gateway_server, key_a, QUESTION)
    system = [{"role": "system", "content": "Answer as a pirate."}]
    answered = ask(
        gateway_server,
        key_a,
        PARAPHRASE,
        messages=[*system, {"role": "user", "content": PARAPHRASE}],
    )
    assert answered.headers["X-Cache"] == "MISS"


def test_a_version_change_makes_old_entries_unreachable(gateway_server, key_a, upstream):
    opt_in(upstream)
    ask(gateway_server, key_a, QUESTION)
    version = ModelVersion.objects.get(alias__name="faq")
    version.system_prompt = "Be brief."
    version.save()
    invalidate_routing()
    assert ask(gateway_server, key_a, PARAPHRASE).headers["X-Cache"] == "MISS"
    assert chat_calls(upstream) == 2


@pytest.mark.parametrize("change", ["deployment's model", "version's deployment"])
def test_a_model_change_makes_old_entries_unreachable(gateway_server, key_a, upstream, change):
    opt_in(upstream)
    ask(gateway_server, key_a, QUESTION)
    assert ask(gateway_server, key_a, PARAPHRASE).headers["X-Cache"] == "SEMANTIC-HIT"
    version = ModelVersion.objects.get(alias__name="faq")
    if change == "deployment's model":
        ProviderDeployment.objects.filter(pk=version.deployment_id).update(model="newer-model")
    else:
        version.deployment = ProviderDeployment.objects.create(
            name="faq-newer",
            provider=version.deployment.provider,
            model="newer-model",
            input_price_per_1k="0.001",
            output_price_per_1k="0.002",
        )
        version.save()
    invalidate_routing()
    answered = ask(gateway_server, key_a, PARAPHRASE)
    assert answered.headers["X-Cache"] == "MISS"
    assert chat_calls(upstream) == 2
    assert upstream.requests[-1].json["model"] == "newer-model"


@pytest.mark.parametrize("mode", ["mask", "pseudonymize"])
def test_a_request_whose_personal_data_was_protected_is_not_looked_up(
    gateway_server, principals, key_a, upstream, mode
):
    opt_in(upstream)
    PrivacyPolicy.objects.update_or_create(
        tenant=principals.tenant_a, defaults={"upstream_pii": mode}
    )
    # Under the policy, a question without personal data is looked up as before ...
    ask(gateway_server, key_a, QUESTION)
    assert ask(gateway_server, key_a, PARAPHRASE).headers["X-Cache"] == "SEMANTIC-HIT"
    embedded = embedding_calls(upstream)
    # ... one with personal data, masked or pseudonymised on its way, is never embedded.
    with_email = f"{QUESTION} Write to jane.doe@example.com."
    ask(gateway_server, key_a, with_email)
    answered = ask(gateway_server, key_a, f"{PARAPHRASE} Write to jane.doe@example.com.")
    assert answered.status_code == 200
    assert answered.headers["X-Cache"] == "MISS"
    assert embedding_calls(upstream) == embedded
    assert chat_calls(upstream) == 3


def test_an_embeddings_failure_gives_a_normal_answer(gateway_server, key_a, upstream):
    opt_in(upstream)
    ask(gateway_server, key_a, QUESTION)
    ModelVersion.objects.filter(alias__name="embed").update(
        deployment=ModelVersion.objects.get(alias__name="faq").deployment
    )
    # The embeddings alias now points at a provider that answers 500 to everything.
    with OpenAIUpstream("error500") as broken:
        route_alias("broken", broken.base_url)
        ModelVersion.objects.filter(alias__name="embed").update(
            deployment=ModelVersion.objects.get(alias__name="broken").deployment
        )
        invalidate_routing()
        answered = ask(gateway_server, key_a, PARAPHRASE)
    assert answered.status_code == 200
    assert answered.headers["X-Cache"] == "MISS"
    assert answered.json()["choices"][0]["message"]["content"] == "We are open from 9 to 5."
    assert chat_calls(upstream) == 2


def test_erasure_removes_a_subjects_entries(gateway_server, principals, key_a, upstream):
    opt_in(upstream)
    ask(gateway_server, key_a, QUESTION, user="subject-7")
    assert ask(gateway_server, key_a, PARAPHRASE).headers["X-Cache"] == "SEMANTIC-HIT"
    counts = datamap.erase_all(principals.tenant_a.pk, "subject-7")
    assert counts["gateway.semantic_cache"] == 1
    assert ask(gateway_server, key_a, PARAPHRASE).headers["X-Cache"] == "MISS"
    assert chat_calls(upstream) == 2
    # Erased again: nothing left.
    assert datamap.erase_all(principals.tenant_a.pk, "subject-7")["gateway.semantic_cache"] == 0


# --- the admin ---------------------------------------------------------------------------------


def _alias_form(**fields) -> dict:
    data = {
        "name": "faq",
        "description": "",
        "enabled": "on",
        "degraded_mode": "error",
        "degraded_message": "Sorry.",
        "resilience": "{}",
        "semantic_cache": "on",
        "semantic_cache_embeddings": "embed",
        "semantic_cache_threshold": "0.97",
        "versions-TOTAL_FORMS": "0",
        "versions-INITIAL_FORMS": "0",
        "fallbacks-TOTAL_FORMS": "0",
        "fallbacks-INITIAL_FORMS": "0",
    }
    data.update(fields)
    return {k: v for k, v in data.items() if v is not None}


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"semantic_cache_threshold": "0"}, "semantic_cache_threshold"),
        ({"semantic_cache_threshold": "1.5"}, "semantic_cache_threshold"),
        ({"semantic_cache_threshold": "nan"}, "semantic_cache_threshold"),
        ({"semantic_cache_embeddings": "nowhere"}, "semantic_cache_embeddings"),
        ({"semantic_cache_embeddings": ""}, "semantic_cache_embeddings"),
        ({"semantic_cache_embeddings": "faq"}, "semantic_cache_embeddings"),
        ({"semantic_cache_embeddings": "chatonly"}, "semantic_cache_embeddings"),
    ],
)
def test_the_admin_refuses_a_hostile_semantic_cache_setting(admin_client, fields, field):
    route_alias("embed", "http://127.0.0.1:9/v1")
    route_alias("chatonly", "http://127.0.0.1:9/v1", extra={"unsupported": ["embeddings"]})
    page = admin_client.post("/admin/gateway/modelalias/add/", _alias_form(**fields))
    assert page.status_code == 200
    errors = page.context["adminform"].form.errors
    assert field in errors, errors
    assert not ModelAlias.objects.filter(name="faq").exists()


def test_an_officer_turns_it_on_audited_and_view_only_staff_cannot(
    admin_client, client, django_user_model
):
    route_alias("embed", "http://127.0.0.1:9/v1")
    page = admin_client.post("/admin/gateway/modelalias/add/", _alias_form(), follow=True)
    assert page.status_code == 200
    context = page.context or {}
    assert "adminform" not in context, (
        context["adminform"].form.errors,
        [f.formset.non_form_errors() for f in context.get("inline_admin_formsets", [])],
    )
    alias = ModelAlias.objects.get(name="faq")
    assert alias.semantic_cache and alias.semantic_cache_threshold == 0.97
    assert AuditEvent.objects.filter(action="admin.modelalias.add").exists()

    from django_otp import DEVICE_ID_SESSION_KEY
    from django_otp.plugins.otp_totp.models import TOTPDevice

    viewer = django_user_model.objects.create_user("viewer", password="x", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_modelalias"))
    device = TOTPDevice.objects.create(user=viewer, name="t", confirmed=True)
    client.force_login(viewer)
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    session.save()
    refused = client.post(
        f"/admin/gateway/modelalias/{alias.pk}/change/",
        _alias_form(semantic_cache_threshold="0.5"),
    )
    assert refused.status_code == 403
    alias.refresh_from_db()
    assert alias.semantic_cache_threshold == 0.97


# --- the configuration file --------------------------------------------------------------------

CONFIG = """\
providers:
  - name: local
    kind: openai
    base_url: http://127.0.0.1:8081/v1
  - name: claude
    kind: anthropic
    base_url: https://api.anthropic.com
    api_key: env:ANTHROPIC_KEY
deployments:
  - {name: chat-model, provider: local, model: chat}
  - {name: embed-model, provider: local, model: embed}
  - {name: claude-model, provider: claude, model: claude-haiku}
model_aliases:
  - name: embed
    versions: [{version: v1, deployment: embed-model}]
  - name: claude
    versions: [{version: v1, deployment: claude-model}]
  - name: faq
    semantic_cache: {embeddings: embed, threshold: 0.97}
    versions: [{version: v1, deployment: chat-model}]
"""


def _apply(tmp_path, text: str) -> None:
    from django.core.management import call_command

    path = tmp_path / "config.yaml"
    path.write_text(text)
    call_command("apply_config", str(path), stdout=__import__("io").StringIO())


@pytest.mark.django_db
def test_the_configuration_file_turns_it_on(tmp_path):
    _apply(tmp_path, CONFIG)
    alias = ModelAlias.objects.get(name="faq")
    assert (alias.semantic_cache, alias.semantic_cache_embeddings) == (True, "embed")
    assert alias.semantic_cache_threshold == 0.97
    assert not ModelAlias.objects.get(name="embed").semantic_cache


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("threshold: 0.97", "threshold: 0", "threshold: must be a number above 0"),
        ("threshold: 0.97", "threshold: 1.01", "threshold: must be a number above 0"),
        ("threshold: 0.97", "threshold: .nan", "threshold: must be a number above 0"),
        ("threshold: 0.97", "threshold: yes", "threshold: must be a number above 0"),
        ("embeddings: embed", "embeddings: nowhere", "unknown alias 'nowhere'"),
        ("embeddings: embed", "embeddings: claude", "not served by providers that make"),
        ("embeddings: embed", "embeddings: faq", "not served by providers that make"),
        ("{embeddings: embed, threshold: 0.97}", "{threshold: 0.97}", "embeddings"),
    ],
)
def test_the_configuration_file_refuses_hostile_values(tmp_path, old, new, message):
    from django.core.management import CommandError

    with pytest.raises(CommandError) as refused:
        _apply(tmp_path, CONFIG.replace(old, new))
    assert message in str(refused.value)
    assert not ModelAlias.objects.exists()
