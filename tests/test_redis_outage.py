"""A real Redis outage and its return: a gateway process on its own redis-server, which the test
stops and starts again. While Redis is gone, request limits fail open and budgets fail closed
(the defaults), the cache is bypassed; when it is back the gateway uses it again by itself."""

from __future__ import annotations

import shutil
import subprocess
import time
from decimal import Decimal

import httpx
import pytest

from .conftest import REQUIRE_SERVICES, free_port, route_alias, start_gateway_process
from .upstreams import OpenAIUpstream

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


class PrivateRedis:
    """A redis-server of the test's own on a loopback port, which it may stop and start."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            if REQUIRE_SERVICES:
                pytest.fail("LLMP_REQUIRE_SERVICES=1 but redis-server is not installed")
            pytest.skip("needs the redis-server program")
        self.binary = binary
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(self.url, socket_timeout=0.5).ping()
                return
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture
def private_redis():
    server = PrivateRedis()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def upstream():
    with OpenAIUpstream(reply="fine thanks") as server:
        yield server


def ask(url: str, key: str, content: str, *, temperature: float = 0) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions",
        timeout=20,
        headers={"Authorization": f"Bearer {key}"},
        json={
            "model": "default",
            "temperature": temperature,
            "max_tokens": 5,
            "messages": [{"role": "user", "content": content}],
        },
    )


def test_limits_and_cache_degrade_while_redis_is_down_and_recover_when_it_returns(
    transactional_db, principals, key_a, upstream, private_redis
):
    route_alias("default", upstream.base_url)
    tier = principals.tenant_a.plan.tier
    tier.requests_per_minute, tier.requests_per_hour, tier.requests_per_day = 500, 5000, 50000
    tier.key_requests_per_minute = tier.user_requests_per_minute = 0
    tier.daily_budget = tier.monthly_budget = Decimal("0")
    tier.save()
    process, url = start_gateway_process(
        env={"REDIS_URL": private_redis.url, "LLMP_AUTH_CACHE_SECONDS": "1"}
    )
    try:
        assert ask(url, key_a, "warm").headers["X-Cache"] == "MISS"
        assert ask(url, key_a, "warm").headers["X-Cache"] == "HIT"

        private_redis.stop()
        # Request limits fail open: served, from the upstream (the cache is bypassed).
        during = ask(url, key_a, "warm")
        assert during.status_code == 200
        assert during.headers["X-Cache"] == "BYPASS"
        upstream_calls = len(upstream.requests)

        # A budget fails closed: refused with a typed 503, not served unmetered.
        plan = principals.tenant_a.plan
        plan.daily_budget = Decimal("100")
        plan.save()
        time.sleep(1.5)  # the gateway's authentication cache picks up the budget
        refused = ask(url, key_a, "another question")
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "limits_unavailable"
        assert refused.headers["Retry-After"] == "1"

        private_redis.start()  # the same port, empty: Redis keeps nothing on disk here
        deadline = time.monotonic() + 15
        while True:
            back = ask(url, key_a, "another question")
            if back.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert back.status_code == 200
        # Counting again, from zero: the restarted Redis is empty.
        assert back.headers["x-ratelimit-remaining-requests"] == "499"
        assert back.headers["X-Cache"] == "MISS"
        assert ask(url, key_a, "another question").headers["X-Cache"] == "HIT"
        assert len(upstream.requests) == upstream_calls + 1
    finally:
        process.terminate()
        process.wait(timeout=10)
