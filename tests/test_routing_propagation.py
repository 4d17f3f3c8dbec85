"""A routing change made in one process reaches every other gateway process at once (Redis
pub/sub), not after the routing table's periodic refresh: a blue-green switch and its switch
back are instant everywhere."""

from __future__ import annotations

import httpx
import pytest

from gateway.models import ModelVersion, Provider, ProviderDeployment
from gateway.pipeline.route import REFRESH_SECONDS, invalidate_routing

from .conftest import route_alias, start_gateway_process
from .upstreams import OpenAIUpstream

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]


def served_by(url: str, key: str) -> str:
    response = httpx.post(
        f"{url}/v1/chat/completions",
        timeout=20,
        headers={"Authorization": f"Bearer {key}"},
        json={
            "model": "default",
            "temperature": 0.5,
            "messages": [{"role": "user", "content": "which one?"}],
        },
    )
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["message"]["content"]


def switch(*, to: str) -> None:
    """What a rollout's gateway executor does: weights by ``update()`` (no save signals), then
    the routing change is published."""
    ModelVersion.objects.filter(alias__name="default").update(weight=0)
    ModelVersion.objects.filter(alias__name="default", version=to).update(weight=100)
    invalidate_routing()


def test_a_switch_and_a_switch_back_reach_other_processes_at_once(transactional_db, key_a):
    with OpenAIUpstream(reply="blue") as blue, OpenAIUpstream(reply="green") as green:
        alias = route_alias("default", blue.base_url)
        provider = Provider.objects.create(
            name="green-provider", kind="openai", base_url=green.base_url
        )
        deployment = ProviderDeployment.objects.create(
            name="green-deployment", provider=provider, model="m"
        )
        ModelVersion.objects.create(alias=alias, version="v2", deployment=deployment, weight=0)
        processes = [start_gateway_process(env={"LLMP_AUTH_CACHE_SECONDS": "60"}) for _ in range(2)]
        try:
            urls = [url for _, url in processes]
            assert [served_by(url, key_a) for url in urls] == ["blue", "blue"]
            switch(to="v2")
            # Well inside REFRESH_SECONDS: only the published change can explain it.
            assert REFRESH_SECONDS >= 5
            assert [served_by(url, key_a) for url in urls] == ["green", "green"]
            switch(to="v1")
            assert [served_by(url, key_a) for url in urls] == ["blue", "blue"]
        finally:
            for process, _ in processes:
                process.terminate()
                process.wait(timeout=10)
