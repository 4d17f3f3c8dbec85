"""The admit and cache stages share one Redis round trip: the reservation and the cache's read
go in one script. What that script does is what the two did apart: a refused request reserves
nothing, an admitted one reserves everything and gets the tenant's entry (or, when the cache
may not answer it, only the namespace its fresh answer will be kept under)."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis import exceptions as redis_exceptions

from gateway import cache as response_cache
from gateway import limits
from gateway.pipeline import admit
from gateway.providers.base import Usage

pytestmark = pytest.mark.redis

TENANT = 515151


def _counter(kind: str, limit: int, amount: int, owner: str = "-") -> limits.Counter:
    return limits.counter(
        kind=kind,
        scope="tenant",
        owner=owner,
        window="minute",
        limit=limit,
        amount=amount,
        tenant_id=TENANT,
        now=time.time(),
    )


def _key() -> response_cache.CacheKey:
    return response_cache.CacheKey(
        tenant_id=TENANT, alias="one-trip", digest="e" * 64, subject=None
    )


def _answer() -> response_cache.CachedAnswer:
    return response_cache.CachedAnswer("Paris", "stop", Usage(3, 1), "dep", "v1", True)


def _evalsha_calls() -> int:
    from llmplatform.redis_client import sync_redis

    stats = sync_redis().info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def _value(counter: limits.Counter) -> int:
    from llmplatform.redis_client import sync_redis

    return int(sync_redis().get(counter.key) or 0)


async def test_an_admitted_request_reserves_and_reads_the_entry_in_one_call():
    cache = response_cache.response_cache()
    key = _key()
    cache.bump(key.ns_keys[1])  # a tenant namespace other than the start
    namespace = await cache.namespace(key)
    await cache.store(key, namespace, _answer(), 60)
    requests = _counter(limits.REQUESTS, limit=5, amount=1)
    tokens = _counter(limits.TOKENS, limit=1000, amount=300)
    await admit.admit_and_read([requests, tokens], time.time(), key, entry=True)  # loads it
    before = _evalsha_calls()
    admission, found = await admit.admit_and_read([requests, tokens], time.time(), key, entry=True)
    assert _evalsha_calls() - before == 1
    assert admission.allowed and admission.values == [2, 600]
    assert (_value(requests), _value(tokens)) == (2, 600)
    assert not isinstance(found, BaseException)
    assert found[0] == namespace
    assert found[1] is not None and found[1].content == "Paris"
    # The namespace alone: the same namespace, the entry not read.
    _, only_namespace = await admit.admit_and_read([requests], time.time(), key, entry=False)
    assert only_namespace == (namespace, None)


async def test_a_refused_request_reserves_nothing_and_gets_the_refusal():
    key = _key()
    requests = _counter(limits.REQUESTS, limit=1, amount=1)
    tokens = _counter(limits.TOKENS, limit=1000, amount=10)
    await admit.admit_and_read([requests, tokens], time.time(), key, entry=True)
    with pytest.raises(admit.RateLimitExceeded) as refused:
        await admit.admit_and_read([tokens, requests], time.time(), key, entry=True)
    assert "limit is 1 requests" in refused.value.message
    assert refused.value.headers["Retry-After"]
    # Neither the counter with room (first) nor the one without was added to.
    assert (_value(requests), _value(tokens)) == (1, 10)


async def test_an_unreachable_redis_follows_the_limits_settings_and_bypasses_the_cache(settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    key = _key()
    rate = _counter(limits.REQUESTS, limit=1, amount=1)
    admission, found = await admit.admit_and_read([rate], time.time(), key, entry=True)
    assert admission.allowed and admission.degraded  # request limits fail open by default
    assert isinstance(found, Exception)
    budget = _counter(limits.SPEND, limit=10**9, amount=1)
    with pytest.raises(admit.LimitsUnavailable):  # budgets fail closed by default
        await admit.admit_and_read([rate, budget], time.time(), key, entry=True)


# Requests that reach their admission in the same turn of the event loop share one pipeline.


def _connections_opened() -> int:
    from llmplatform.redis_client import async_redis

    pool = async_redis().connection_pool
    return len(pool._available_connections) + len(pool._in_use_connections)


async def _admit(counters, key, *, entry=True):
    return await admit.admit_and_read(counters, time.time(), key, entry=entry)


async def test_requests_admitted_together_share_one_connection_and_the_limit_stays_exact():
    key = _key()
    requests = _counter(limits.REQUESTS, limit=5, amount=1, owner="together")
    outcomes = await asyncio.gather(
        *(_admit([requests], key) for _ in range(8)), return_exceptions=True
    )
    allowed = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, admit.RateLimitExceeded)]
    assert (len(allowed), len(refused)) == (5, 3)
    assert sorted(a.values[0] for a, _ in allowed) == [1, 2, 3, 4, 5]
    assert all(found[0] for _, found in allowed)  # each got its own cache read back
    assert _value(requests) == 5
    # One connection carried all eight (eight calls one by one in parallel would open eight).
    assert _connections_opened() == 1


async def test_a_failing_call_in_a_batch_fails_alone():
    from llmplatform.redis_client import async_script, script_batcher

    good = async_script("return ARGV[1]")
    bad = async_script("return redis.error_reply('refused by the script')")
    outcomes = await asyncio.gather(
        script_batcher().call(good, [], ["one"]),
        script_batcher().call(bad, [], []),
        script_batcher().call(good, [], ["three"]),
        return_exceptions=True,
    )
    assert outcomes[0] == b"one" and outcomes[2] == b"three"
    assert isinstance(outcomes[1], redis_exceptions.ResponseError)
    assert "refused by the script" in str(outcomes[1])


async def test_scripts_lost_by_a_redis_restart_are_loaded_again_for_a_batch():
    from llmplatform.redis_client import sync_redis

    key = _key()
    requests = _counter(limits.REQUESTS, limit=100, amount=1, owner="flushed")
    await _admit([requests], key)  # the script is known to Redis
    sync_redis().script_flush()  # as after a restart
    outcomes = await asyncio.gather(*(_admit([requests], key) for _ in range(3)))
    assert sorted(a.values[0] for a, _ in outcomes) == [2, 3, 4]


async def test_a_cancelled_request_does_not_strand_the_others_admitted_with_it():
    key = _key()
    requests = _counter(limits.REQUESTS, limit=100, amount=1, owner="cancelled")
    first = asyncio.ensure_future(_admit([requests], key))
    second = asyncio.ensure_future(_admit([requests], key))
    await asyncio.sleep(0)  # both are waiting: the first for the turn to end, the second on it
    first.cancel()
    admission, _ = await asyncio.wait_for(second, 5)
    assert admission.allowed and admission.values == [1]
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_an_unreachable_redis_answers_every_request_of_a_batch_as_it_would_one(settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    key = _key()
    rate = _counter(limits.REQUESTS, limit=1, amount=1)
    budget = _counter(limits.SPEND, limit=10**9, amount=1)
    outcomes = await asyncio.gather(
        _admit([rate], key),
        _admit([rate, budget], key),
        _admit([rate], key),
        return_exceptions=True,
    )
    assert isinstance(outcomes[1], admit.LimitsUnavailable)  # budgets fail closed
    for admission, found in (outcomes[0], outcomes[2]):  # request limits fail open
        assert admission.allowed and admission.degraded
        assert isinstance(found, Exception)
