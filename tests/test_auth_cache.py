"""The per-process cache of verified keys: when an entry is missing or has expired, the requests
in flight for that key share one database load, and a change made while a load runs (a
revocation) is not cached by it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from gateway import services
from gateway.errors import AuthenticationFailed
from gateway.models import ApiKey
from gateway.pipeline import authenticate
from llmplatform.actors import Actor

pytestmark = pytest.mark.django_db(transaction=True)


class CountedLoads:
    """Wraps the database load: counts calls, and can hold a load's answer until released."""

    def __init__(self) -> None:
        self.calls = 0
        self.started = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def wrap(self, load):
        def counted(*args):
            self.calls += 1
            principal = load(*args)
            self.started.set()
            self.release.wait(10)  # the load has read the key; its answer is held back
            return principal

        return counted


@pytest.fixture
def loads(monkeypatch) -> Iterator[CountedLoads]:
    counted = CountedLoads()
    monkeypatch.setattr(authenticate, "_load", counted.wrap(authenticate._load))
    authenticate.clear_cache()
    yield counted
    counted.release.set()
    authenticate.clear_cache()


async def _many(header: str, count: int) -> list[object]:
    return await asyncio.gather(
        *(authenticate.authenticate(header) for _ in range(count)), return_exceptions=True
    )


def test_concurrent_requests_that_miss_the_cache_share_one_load(loads, key_a, principals):
    results = asyncio.run(_many(f"Bearer {key_a}", 20))
    assert loads.calls == 1
    assert all(getattr(r, "tenant_id", None) == principals.tenant_a.pk for r in results)
    # Cached now: more requests make no load.
    asyncio.run(_many(f"Bearer {key_a}", 5))
    assert loads.calls == 1


def test_concurrent_requests_with_a_wrong_key_share_one_load_and_all_fail(loads, key_a):
    wrong = key_a[:-4] + ("0000" if not key_a.endswith("0000") else "1111")
    results = asyncio.run(_many(f"Bearer {wrong}", 10))
    assert loads.calls == 1
    assert all(isinstance(r, AuthenticationFailed) for r in results)
    # A failure is never cached: the next request loads again.
    asyncio.run(_many(f"Bearer {wrong}", 1))
    assert loads.calls == 2


def test_a_key_revoked_while_it_is_being_loaded_is_not_cached_by_that_load(
    loads, key_a, principals
):
    loads.release.clear()

    async def scenario() -> object:
        first = asyncio.ensure_future(authenticate.authenticate(f"Bearer {key_a}"))
        await asyncio.to_thread(loads.started.wait, 10)
        # The revocation lands (and clears the cache, as its signal does) while the load runs.
        await asyncio.to_thread(
            lambda: services.api_key_revoke(
                actor=Actor.for_user(principals.alice), key=ApiKey.objects.get(name="a-key")
            )
        )
        loads.release.set()
        await first  # that load read the key before the revocation
        try:
            return await authenticate.authenticate(f"Bearer {key_a}")
        except AuthenticationFailed as refused:
            return refused

    assert isinstance(asyncio.run(scenario()), AuthenticationFailed)
    assert loads.calls == 2


def test_when_the_request_that_loads_is_cancelled_the_others_load_for_themselves(
    loads, key_a, principals
):
    loads.release.clear()

    async def scenario() -> list[object]:
        loader = asyncio.ensure_future(authenticate.authenticate(f"Bearer {key_a}"))
        await asyncio.to_thread(loads.started.wait, 10)
        waiters = [
            asyncio.ensure_future(authenticate.authenticate(f"Bearer {key_a}")) for _ in range(3)
        ]
        await asyncio.sleep(0)  # the waiters join the load under way
        loader.cancel()  # its client went away
        loads.release.set()
        return await asyncio.gather(*waiters, return_exceptions=True)

    results = asyncio.run(scenario())
    assert all(getattr(r, "tenant_id", None) == principals.tenant_a.pk for r in results)
    assert loads.calls == 2  # the cancelled load, then one load for the three waiters
