"""The legacy completions door (``POST /v1/completions``) with the real ``openai`` SDK, through
the gateway under uvicorn, against real local upstreams (OpenAI-compatible and Bedrock); and
``GET /v1/models`` saying which doors each alias serves to the key.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from gateway import services as gateway_services
from gateway.models import Provider, SecurityEvent, UsageRecord
from llmplatform.actors import Actor

from .conftest import route_alias
from .test_responses_api import ATTACK, KINDS, aws_environment  # noqa: F401 - a fixture
from .upstreams import BedrockUpstream, OpenAIUpstream

pytestmark = pytest.mark.django_db

PROMPT = "Write a tagline for an ice cream shop."


@dataclass
class Door:
    kind: str
    server: Any
    client: Any
    url: str
    key: str

    def post(self, body: dict[str, Any], key: str | None = None) -> httpx.Response:
        return httpx.post(
            f"{self.url}/v1/completions",
            json=body,
            headers={"Authorization": f"Bearer {key or self.key}"},
            timeout=30,
        )


@pytest.fixture(params=KINDS)
def door(request, gateway_server, principals, key_a, aws_environment) -> Iterator[Door]:  # noqa: F811
    from openai import OpenAI

    kind = request.param
    server_class = {"openai": OpenAIUpstream, "bedrock": BedrockUpstream}[kind]
    with server_class() as server:
        fields = {"bedrock": {"region": "eu-west-1"}, "openai": {}}[kind]
        route_alias("legacy", server.base_url, kind=kind, model="the-model", **fields)
        client = OpenAI(base_url=f"{gateway_server}/v1", api_key=key_a, max_retries=0, timeout=30)
        yield Door(kind, server, client, gateway_server, key_a)


@pytest.fixture
def openai_door(gateway_server, principals, key_a) -> Iterator[Door]:
    from openai import OpenAI

    with OpenAIUpstream() as server:
        route_alias("legacy", server.base_url, model="the-model")
        client = OpenAI(base_url=f"{gateway_server}/v1", api_key=key_a, max_retries=0, timeout=30)
        yield Door("openai", server, client, gateway_server, key_a)


def test_a_completion_is_created_through_each_provider_kind(door):
    door.server.reply = "Scoops of joy, every day."
    completion = door.client.completions.create(
        model="legacy", prompt=PROMPT, max_tokens=20, stop=["\n"], temperature=0.2
    )

    assert completion.object == "text_completion" and completion.id.startswith("cmpl-")
    assert completion.model == "legacy"
    [choice] = completion.choices
    assert choice.text == "Scoops of joy, every day."
    assert choice.index == 0 and choice.finish_reason == "stop"
    assert completion.usage.completion_tokens == 5
    assert completion.usage.prompt_tokens > 0
    sent = door.server.requests[-1].json
    if door.kind == "openai":  # the prompt went up as one user message, with the parameters
        assert sent["messages"] == [{"role": "user", "content": PROMPT}]
        assert (sent["max_tokens"], sent["stop"], sent["temperature"]) == (20, ["\n"], 0.2)
    else:
        assert sent["messages"] == [{"role": "user", "content": [{"text": PROMPT}]}]
        assert sent["inferenceConfig"]["maxTokens"] == 20
        assert sent["inferenceConfig"]["stopSequences"] == ["\n"]


def test_a_streamed_completion_arrives_in_text_completion_chunks(door):
    door.server.reply = "Cold treats and warm smiles for all."
    stream = door.client.completions.create(
        model="legacy", prompt=PROMPT, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)

    texts = [c.choices[0].text for c in chunks if c.choices]
    assert len([t for t in texts if t]) > 1  # it really streamed
    assert "".join(texts) == "Cold treats and warm smiles for all."
    assert all(c.object == "text_completion" and c.model == "legacy" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 7


def test_a_list_of_prompts_gets_n_choices_per_prompt_in_order(openai_door):
    completion = openai_door.client.completions.create(
        model="legacy", prompt=["First prompt here", "Second prompt"], n=2
    )

    assert [c.index for c in completion.choices] == [0, 1, 2, 3]
    assert [c.text for c in completion.choices] == [
        "First prompt here",
        "First prompt here (choice 1)",
        "Second prompt",
        "Second prompt (choice 1)",
    ]
    # Each prompt is a request of its own: metered as one, under an id of its own.
    records = UsageRecord.objects.filter(route="completions")
    assert records.count() == 2 and len({r.request_id for r in records}) == 2
    assert completion.usage.completion_tokens == sum(r.completion_tokens for r in records)


def test_usage_is_recorded_under_the_completions_route(openai_door):
    openai_door.client.completions.create(model="legacy", prompt="Say hi please")
    record = UsageRecord.objects.get()
    assert (record.route, record.status_code, record.alias) == ("completions", 200, "legacy")
    assert record.completion_tokens == 3 and record.cost > 0


def test_a_prompt_injection_is_blocked_in_openais_error_shape(openai_door):
    response = openai_door.post({"model": "legacy", "prompt": ATTACK})

    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("prompt_injection_detected", "prompt")
    assert openai_door.server.requests == []
    assert SecurityEvent.objects.get().kind == "prompt_injection"
    assert UsageRecord.objects.get().error_code == "prompt_injection_detected"


def test_a_key_without_the_chat_scope_is_refused(openai_door, principals):
    _, embeddings_only = gateway_services.api_key_create(
        actor=Actor.for_user(principals.alice),
        tenant=principals.tenant_a,
        name="embeddings only",
        scopes=["embeddings"],
    )
    response = openai_door.post({"model": "legacy", "prompt": PROMPT}, key=embeddings_only)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "insufficient_permissions"
    assert openai_door.server.requests == []


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"suffix": "and then?"}, "suffix", "unsupported_parameter"),
        ({"echo": True}, "echo", "unsupported_parameter"),
        ({"best_of": 3}, "best_of", "unsupported_parameter"),
        ({"logprobs": 2}, "logprobs", "unsupported_parameter"),
        ({"prompt": [1, 2, 3]}, "prompt", "unsupported_input"),
        ({"prompt": [[1, 2], [3]]}, "prompt", "unsupported_input"),
        ({"prompt": []}, "prompt", "invalid_value"),
        ({"prompt": None}, "prompt", "invalid_value"),
        ({"prompt": ["a", "b"], "stream": True}, "prompt", "unsupported_value"),
        ({"prompt": ["ok", {"text": "no"}]}, "prompt", "invalid_value"),
        ({"max_tokens": 0}, "max_tokens", "invalid_value"),
        ({"temperature": "hot"}, "temperature", "invalid_value"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "invalid_value"),
        ({"tools": []}, "tools", "unknown_parameter"),
        ({"model": ["legacy"]}, "model", "invalid_value"),
    ],
)
def test_bad_or_unsupported_input_is_a_clear_400_never_a_500(openai_door, body, param, code):
    response = openai_door.post({"model": "legacy", "prompt": PROMPT, **body})

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    if param is not None:
        assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    assert openai_door.server.requests == []


# --------------------------------------------------------------------------- /v1/models


CHAT_DOORS = ["chat.completions", "responses", "completions", "messages"]


def test_models_list_says_which_doors_each_alias_serves_to_the_key(
    gateway_server, principals, key_a
):
    from openai import OpenAI

    with OpenAIUpstream() as server:
        route_alias("chatty", server.base_url)
        route_alias("local", server.base_url)
        Provider.objects.filter(name="local-provider").update(
            extra={"unsupported": ["embeddings", "tools"]}
        )
        client = OpenAI(base_url=f"{gateway_server}/v1", api_key=key_a, max_retries=0)
        models = {m.id: m for m in client.models.list()}

        assert models["chatty"].doors == [*CHAT_DOORS, "embeddings"]
        assert models["local"].doors == CHAT_DOORS  # declared: serves no embeddings
        assert models["chatty"].object == "model" and models["chatty"].owned_by

        _, reader = gateway_services.api_key_create(
            actor=Actor.for_user(principals.alice),
            tenant=principals.tenant_a,
            name="embeddings reader",
            scopes=["embeddings", "models:read"],
        )
        listed = httpx.get(
            f"{gateway_server}/v1/models", headers={"Authorization": f"Bearer {reader}"}
        ).json()["data"]
        assert {m["id"]: m["doors"] for m in listed} == {"chatty": ["embeddings"], "local": []}


def test_a_stream_that_breaks_mid_way_ends_with_an_error_event(openai_door):
    openai_door.server.behaviour = "stream_break"
    openai_door.server.reply = "one two three four five six seven"
    response = httpx.post(
        f"{openai_door.url}/v1/completions",
        json={"model": "legacy", "prompt": PROMPT, "stream": True},
        headers={"Authorization": f"Bearer {openai_door.key}"},
        timeout=30,
    )
    events = [e.removeprefix("data: ") for e in response.text.strip().split("\n\n")]
    assert response.status_code == 200
    assert json.loads(events[0])["object"] == "text_completion"
    assert json.loads(events[-1])["error"]["code"] == "upstream_bad_response"
    assert "[DONE]" not in events


def test_an_upstream_failure_is_a_502_in_openais_error_shape(openai_door):
    import openai

    openai_door.server.behaviour = "error500"
    with pytest.raises(openai.InternalServerError) as failed:
        openai_door.client.completions.create(model="legacy", prompt=PROMPT)
    assert failed.value.status_code == 502
    assert failed.value.body["code"] == "upstream_server_error"
    assert UsageRecord.objects.get().status_code == 502
