"""The adapter registry: one adapter per provider revision, rebuilt when the row changes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from gateway.providers import registry
from gateway.providers.azure import AzureOpenAIAdapter
from gateway.providers.base import ChatMessage, ChatRequest, ProviderConfig
from gateway.providers.bedrock import BedrockAdapter
from gateway.providers.openai_compatible import OpenAICompatibleAdapter
from tests.upstreams import OpenAIUpstream


@pytest.fixture(autouse=True)
async def _empty_registry():
    await registry.close_all()
    yield
    await registry.close_all()


@pytest.fixture
def upstream() -> Iterator[OpenAIUpstream]:
    with OpenAIUpstream() as server:
        yield server


def config(
    name: str = "p1",
    *,
    kind: str = "openai",
    revision: str = "1:a",
    base_url: str = "http://127.0.0.1:9/v1",
) -> ProviderConfig:
    return ProviderConfig(
        name=name, kind=kind, base_url=base_url, api_version="2024-10-21", revision=revision
    )


REQUEST = ChatRequest(model="m", messages=[ChatMessage("user", "hi")])


@pytest.mark.parametrize(
    ("kind", "cls"),
    [
        ("openai", OpenAICompatibleAdapter),
        ("azure", AzureOpenAIAdapter),
        ("bedrock", BedrockAdapter),
    ],
)
def test_it_builds_the_adapter_for_the_kind(kind, cls):
    assert type(registry.get_adapter(config(kind=kind))) is cls


def test_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown provider kind"):
        registry.get_adapter(config(kind="carrier-pigeon"))


def test_it_reuses_the_adapter_of_an_unchanged_provider():
    first = registry.get_adapter(config())

    assert registry.get_adapter(config()) is first
    assert registry.get_adapter(config("p2")) is not first


async def test_it_rebuilds_a_changed_provider_and_closes_the_old_adapter(upstream, monkeypatch):
    monkeypatch.setattr(registry, "RETIRE_AFTER_SECONDS", 0.05)
    old = registry.get_adapter(config(base_url=upstream.base_url))
    await old.complete(REQUEST)
    old_client = old._client

    new = registry.get_adapter(config(base_url=upstream.base_url, revision="1:b"))

    assert new is not old
    assert registry.get_adapter(config(base_url=upstream.base_url, revision="1:b")) is new
    # The old adapter keeps serving what is under way during the grace period...
    assert not old_client.closed
    assert (await old.complete(REQUEST)).content == "hi"
    # ...and is closed after it.
    await asyncio.sleep(0.2)
    assert old_client.closed
    assert (await new.complete(REQUEST)).content == "hi"


async def test_close_all_closes_current_and_retiring_adapters(upstream):
    retiring = registry.get_adapter(config(base_url=upstream.base_url))
    await retiring.complete(REQUEST)
    current = registry.get_adapter(config(base_url=upstream.base_url, revision="1:b"))
    await current.complete(REQUEST)
    clients = [retiring._client, current._client]

    await registry.close_all()

    assert all(client.closed for client in clients)
    assert registry.get_adapter(config(base_url=upstream.base_url, revision="1:b")) is not current
