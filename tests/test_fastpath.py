"""The lean ASGI path of the API routes: limits, batching of usage records, disconnects."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from gateway.models import Tier, UsageRecord
from gateway.pipeline import authenticate

from .conftest import route_alias
from .upstreams import OpenAIUpstream


@pytest.fixture(autouse=True)
def _fresh_auth():
    authenticate.clear_cache()


def test_an_oversized_body_is_refused_before_it_is_read_whole(gateway_server, key_a, settings):
    settings.LLMP_MAX_BODY_BYTES = 2048
    response = httpx.post(
        f"{gateway_server}/v1/chat/completions",
        headers={"Authorization": f"Bearer {key_a}"},
        content=b'{"model": "default", "messages": [' + b" " * 10_000 + b"]}",
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def test_usage_records_are_written_in_batches_shortly_after(gateway_server, key_a, settings):
    settings.LLMP_AFTER_ANSWER_INLINE = False
    settings.LLMP_USAGE_FLUSH_MS = 300
    with OpenAIUpstream() as upstream:
        route_alias("default", upstream.base_url)
        ids = []
        for _ in range(5):
            response = httpx.post(
                f"{gateway_server}/v1/chat/completions",
                headers={"Authorization": f"Bearer {key_a}"},
                json={"model": "default", "messages": [{"role": "user", "content": "hi"}]},
            )
            assert response.status_code == 200
            ids.append(response.headers["X-Request-ID"])
    # Answered before their records were written ...
    assert UsageRecord.objects.filter(request_id__in=ids).count() < 5
    deadline = time.monotonic() + 5
    while UsageRecord.objects.filter(request_id__in=ids).count() < 5:
        assert time.monotonic() < deadline, "usage records were not written"
        time.sleep(0.05)
    # ... and then written, every one, with its figures.
    assert set(
        UsageRecord.objects.filter(request_id__in=ids).values_list("status_code", flat=True)
    ) == {200}


def _exists_while_written(queryset) -> bool:
    """``exists()`` while the server thread may be writing the table: SQLite's in-memory test
    database (shared cache) refuses a read of a table being written at once, with "database
    table is locked", instead of waiting; that is a no for this poll."""
    from django.db import OperationalError

    try:
        return queryset.exists()
    except OperationalError as exc:
        if "locked" not in str(exc):
            raise
        return False


def test_a_client_that_goes_away_mid_stream_is_metered_and_the_upstream_released(
    gateway_server, key_a
):
    with OpenAIUpstream() as upstream:
        upstream.behaviour = "stream_stall"
        upstream.hang_seconds = 5
        route_alias("default", upstream.base_url)
        host, port = gateway_server.removeprefix("http://").split(":")
        body = (
            b'{"model": "default", "stream": true, '
            b'"messages": [{"role": "user", "content": "tell me a long story"}]}'
        )
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                + f"Authorization: Bearer {key_a}\r\n".encode()
                + b"Content-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            assert b"200 OK" in sock.recv(65536)
        deadline = time.monotonic() + 4
        while not _exists_while_written(UsageRecord.objects.filter(status_code=499)):
            assert time.monotonic() < deadline, "the abandoned stream was not metered"
            time.sleep(0.05)
    record = UsageRecord.objects.get(status_code=499)
    assert record.error_code == "client_closed_request" and record.streamed


def test_more_concurrent_streams_than_httpx_default_pool_all_succeed(gateway_server, key_a, tier):
    """Each open stream holds an upstream connection; 150 at once exceed httpx's default pool
    of 100, which would make the rest wait for the pool and time out."""
    import asyncio

    # No limit is under test here: let all 150 in.
    Tier.objects.filter(pk=tier.pk).update(requests_per_minute=0, tokens_per_minute=0)

    with OpenAIUpstream() as upstream:
        upstream.reply = "slow and steady"
        gate = __import__("threading").Event()
        # Hold every upstream call open until all 150 have arrived (or the test gives up): with
        # a pool of 100 the rest could never arrive. Generous bounds: a loaded machine may take
        # many seconds to open 150 streams, and only the count at once is under test.
        upstream.on_request = lambda _request: gate.wait(60)
        route_alias("default", upstream.base_url)

        async def one(client: httpx.AsyncClient) -> int:
            response = await client.post(
                f"{gateway_server}/v1/chat/completions",
                headers={"Authorization": f"Bearer {key_a}"},
                json={
                    "model": "default",
                    "stream": True,
                    "messages": [{"role": "user", "content": "go"}],
                },
            )
            return response.status_code

        async def many() -> tuple[int, list[int]]:
            limits = httpx.Limits(max_connections=200)
            async with httpx.AsyncClient(timeout=120, limits=limits) as client:
                tasks = [asyncio.create_task(one(client)) for _ in range(150)]
                deadline = asyncio.get_running_loop().time() + 45
                while len(upstream.requests) < 150 and asyncio.get_running_loop().time() < deadline:
                    await asyncio.sleep(0.05)
                open_at_once = len(upstream.requests)
                gate.set()
                return open_at_once, await asyncio.gather(*tasks)

        open_at_once, statuses = asyncio.run(many())
    assert open_at_once == 150
    assert statuses.count(200) == 150
