"""Observability: Prometheus counters after real requests, the overhead header, JSON logs with
a request id and without bodies or keys."""

from __future__ import annotations

import json
import logging

import httpx
import pytest

from gateway.pipeline import authenticate

from .conftest import route_alias
from .upstreams import OpenAIUpstream


def _sample(text: str, name: str, **labels) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_count_requests_tokens_cache_and_overhead(gateway_server, key_a):
    authenticate.clear_cache()
    with OpenAIUpstream() as upstream:
        upstream.reply = "four words of reply"
        route_alias("default", upstream.base_url)
        before = httpx.get(f"{gateway_server}/metrics").text
        body = {
            "model": "default",
            "temperature": 0,
            "messages": [{"role": "user", "content": "count my words"}],
        }
        headers = {"Authorization": f"Bearer {key_a}"}
        for _ in range(2):
            response = httpx.post(
                f"{gateway_server}/v1/chat/completions", json=body, headers=headers
            )
            assert response.status_code == 200
            assert float(response.headers["x-llmp-overhead-ms"]) >= 0
        httpx.post(
            f"{gateway_server}/v1/chat/completions",
            json={"model": "nope", "messages": body["messages"]},
            headers=headers,
        )
        after = httpx.get(f"{gateway_server}/metrics").text

    def delta(name, **labels):
        return _sample(after, name, **labels) - _sample(before, name, **labels)

    assert (
        delta(
            "llmp_requests_total",
            route="chat.completions",
            status="200",
            alias="default",
            tier="pro",
        )
        == 2
    )
    assert delta("llmp_requests_total", status="404") == 1
    assert delta("llmp_tokens_total", alias="default", kind="completion") == 8
    assert delta("llmp_cache_requests_total", result="miss") == 1
    assert delta("llmp_cache_requests_total", result="hit") == 1
    assert delta("llmp_gateway_overhead_seconds_count", route="chat.completions") == 3
    assert delta("llmp_upstream_duration_seconds_count", deployment="default-deployment") == 1
    assert delta("llmp_cost_usd_total", alias="default") > 0


def test_logs_are_json_with_a_request_id_and_never_a_body_or_key(client, key_a, caplog):
    authenticate.clear_cache()
    from llmplatform.logging import json_formatter

    with OpenAIUpstream() as upstream:
        upstream.behaviour = "error500"
        route_alias("default", upstream.base_url)
        with caplog.at_level(logging.DEBUG):
            response = client.post(
                "/v1/chat/completions",
                content_type="application/json",
                data=json.dumps(
                    {
                        "model": "default",
                        "messages": [{"role": "user", "content": "my secret diary entry"}],
                    }
                ),
                HTTP_AUTHORIZATION=f"Bearer {key_a}",
                HTTP_X_REQUEST_ID="trace-abc-123",
            )
    assert response.status_code == 502
    # Our own id, with the client's kept beside it and marked as the client's.
    ours = response["X-Request-ID"]
    assert ours.startswith("req_") and response["X-Client-Request-ID"] == "trace-abc-123"
    formatter = json_formatter()
    lines = [formatter.format(record) for record in caplog.records]
    assert lines, "the failing request should have logged something"
    for line in lines:
        parsed = json.loads(line)
        assert "secret diary" not in line and key_a not in line
        assert parsed.get("request_id") in (None, ours)
        assert parsed.get("client_request_id") in (None, "trace-abc-123")
    assert any(json.loads(line).get("request_id") == ours for line in lines)
    assert any(json.loads(line).get("client_request_id") == "trace-abc-123" for line in lines)


pytestmark = pytest.mark.django_db


@pytest.mark.postgres
@pytest.mark.redis
def test_metrics_add_up_every_worker_of_a_multi_worker_server(transactional_db, key_a, tmp_path):
    from .conftest import start_gateway_process

    authenticate.clear_cache()
    with OpenAIUpstream() as upstream:
        route_alias("default", upstream.base_url)
        process, base_url = start_gateway_process(
            workers=2, env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
        )
        try:
            body = {"model": "default", "messages": [{"role": "user", "content": "hi"}]}
            # New connections are spread over both workers by the kernel.
            for _ in range(40):
                with httpx.Client() as fresh:
                    response = fresh.post(
                        f"{base_url}/v1/chat/completions",
                        json=body,
                        headers={"Authorization": f"Bearer {key_a}"},
                    )
                    assert response.status_code == 200
            text = httpx.get(f"{base_url}/metrics").text
        finally:
            process.terminate()
            process.wait(timeout=10)
    assert len(list(tmp_path.glob("counter_*.db"))) >= 2  # both workers wrote samples
    assert _sample(text, "llmp_requests_total", route="chat.completions", status="200") == 40
