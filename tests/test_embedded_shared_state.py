"""The pieces the embedded default shares between its processes, one at a time: the response
cache file, the routing generation counter, the file broker, the launcher's restart policy and
the worker and beat readiness checks. (tests/test_embedded_tasks.py runs them together.)"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.conf import settings
from kombu import Connection, Consumer, Exchange, Producer, Queue

from gateway import cache
from gateway.pipeline import route
from gateway.providers.base import Usage
from llmplatform.health import celery_readiness
from llmplatform.launcher import RestartPolicy, write_status
from llmplatform.tasks import HEARTBEAT_KEY
from tests.platform_process import minimal_env

# --- The response cache file ------------------------------------------------------------------


def _key(subject: str | None = "erin", digest: str = "d" * 64) -> cache.CacheKey:
    return cache.CacheKey(tenant_id=7, alias="chat", digest=digest, subject=subject)


ANSWER = cache.CachedAnswer("cached", "stop", Usage(1, 2), "dep", "v1", True)


def test_two_processes_of_the_platform_see_one_cache(tmp_path: Path):
    """Two instances on one file stand for the web process and the worker."""
    path = str(tmp_path / "responses.sqlite3")
    web, worker = cache.SqliteResponseCache(path), cache.SqliteResponseCache(path)
    key = _key()
    namespace, found = asyncio.run(web.lookup(key))
    assert found is None
    asyncio.run(web.store(key, namespace, ANSWER, 600))
    assert asyncio.run(web.lookup(key))[1] == ANSWER

    # An erasure carried out by the worker: the web process no longer finds the answer.
    assert worker.purge_subject(7, "erin") == 1
    assert asyncio.run(web.lookup(key))[1] is None

    # An invalidation in the worker moves the web process to a new namespace.
    asyncio.run(web.store(key, namespace, ANSWER, 600))
    worker.bump(key.ns_keys[0])
    new_namespace, found = asyncio.run(web.lookup(key))
    assert (new_namespace, found) == ("1.0.0", None)


def test_copies_stored_later_are_written_together_within_the_delay(tmp_path: Path):
    store = cache.SqliteResponseCache(str(tmp_path / "responses.sqlite3"))
    other_process = cache.SqliteResponseCache(str(tmp_path / "responses.sqlite3"))
    keys = [_key(digest=f"{i}" * 64) for i in range(3)]

    async def answer_three() -> list[object]:
        for key in keys:
            store.store_later(key, "0.0.0", ANSWER, 600)
        seen_at_once = [(await other_process.lookup(k))[1] for k in keys]
        await asyncio.sleep(cache.SqliteResponseCache.DELAY_MS / 1000 * 3)
        return seen_at_once

    assert asyncio.run(answer_three()) == [None, None, None]  # not yet: gathered
    assert [asyncio.run(other_process.lookup(k))[1] for k in keys] == [ANSWER] * 3
    # An erasure in this process writes what was gathered first, then removes it.
    asyncio.run(_store_later_then_purge(store, keys[0]))
    assert asyncio.run(other_process.lookup(keys[0]))[1] is None


async def _store_later_then_purge(store: cache.SqliteResponseCache, key: cache.CacheKey) -> None:
    store.purge_subject(7, "erin")
    store.store_later(key, "0.0.0", ANSWER, 600)
    assert store.purge_subject(7, "erin") == 1


def test_entries_expire_and_the_sweep_bounds_the_file(tmp_path: Path, monkeypatch):
    store = cache.SqliteResponseCache(str(tmp_path / "responses.sqlite3"))
    expired, kept = _key(digest="a" * 64), _key(digest="b" * 64)
    store.store_later(expired, "0.0.0", ANSWER, ttl=-1)
    store.store_later(kept, "0.0.0", ANSWER, ttl=600)
    assert asyncio.run(store.lookup(expired))[1] is None  # past its TTL: not served

    monkeypatch.setattr(cache.SqliteResponseCache, "MAX_ENTRIES", 3)
    for i in range(5):
        store.store_later(_key(digest=f"{i}" * 64), "0.0.0", ANSWER, ttl=1000 + i)
    removed = store.sweep()

    assert removed == 1 + 3  # the expired one, then the soonest to expire beyond 3
    assert asyncio.run(store.lookup(_key(digest="4" * 64)))[1] == ANSWER
    assert asyncio.run(store.lookup(kept))[1] is None


def test_a_store_does_not_wait_long_for_another_process_holding_the_file(tmp_path: Path):
    """A store from the request path gives up after STORE_BUSY_MS (the copy is dropped: it is a
    cache) instead of holding the event loop for the ten seconds an erasure may wait."""
    import sqlite3

    path = tmp_path / "responses.sqlite3"
    store = cache.SqliteResponseCache(str(path))
    store.bump("warm")  # creates the file and its tables
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process writing
    try:
        started = time.monotonic()
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            asyncio.run(store.store(_key(), "0.0.0", ANSWER, 600))
        assert time.monotonic() - started < 2.0
        store.store_later(_key(), "0.0.0", ANSWER, 600)  # a copy: dropped, not raised
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert asyncio.run(store.lookup(_key()))[1] is None
    asyncio.run(store.store(_key(), "0.0.0", ANSWER, 600))  # and works again once it is free
    assert asyncio.run(store.lookup(_key()))[1] == ANSWER


# --- Routing changes made by another process ----------------------------------------------------


def test_a_routing_change_saved_by_another_process_is_followed_without_redis(
    tmp_path: Path, settings, monkeypatch
):
    settings.REDIS_URL = None
    settings.LLMP_SHARED_CACHE_PATH = tmp_path / "responses.sqlite3"
    other_process = cache.SqliteResponseCache(str(tmp_path / "responses.sqlite3"))
    table = route.RoutingTable()
    table._follow_shared_generation()  # first look: remembers the generation
    table._table = {"kept": object()}  # type: ignore[dict-item]

    other_process.bump(route._GENERATION_KEY)  # what invalidate_routing does elsewhere
    table._follow_shared_generation()
    assert table._table is not None  # looked less than GENERATION_CHECK_SECONDS ago

    table._generation_checked -= route.GENERATION_CHECK_SECONDS
    table._follow_shared_generation()
    assert table._table is None  # rebuilt from the database on the next request


def test_invalidate_routing_bumps_the_shared_counter_without_redis(tmp_path: Path, settings):
    settings.REDIS_URL = None
    settings.LLMP_SHARED_CACHE_PATH = tmp_path / "responses.sqlite3"
    before = cache.shared_file_cache().counter(route._GENERATION_KEY)
    route.invalidate_routing()
    assert cache.shared_file_cache().counter(route._GENERATION_KEY) == before + 1


# --- The file broker ----------------------------------------------------------------------------


def _connection(folder: Path) -> Connection:
    options = {
        "data_folder_in": str(folder / "queue"),
        "data_folder_out": str(folder / "queue"),
        "control_folder": str(folder / "control"),
        "polling_interval": 0.01,
    }
    for name in ("queue", "control"):
        (folder / name).mkdir(parents=True, exist_ok=True)
    return Connection(
        "filesystem://localhost/",
        transport="llmplatform.broker:FilesystemTransport",
        transport_options=options,
    )


def test_no_message_is_read_half_written_or_twice_with_two_producers_and_a_consumer(tmp_path: Path):
    queue = Queue("tasks", Exchange("tasks", type="direct"), routing_key="tasks")
    per_producer = 300
    received: list[int] = []
    errors: list[BaseException] = []

    def produce(offset: int) -> None:
        try:
            with _connection(tmp_path) as conn:
                producer = Producer(conn.default_channel)
                for i in range(per_producer):
                    # Large enough that a write is not one page: a reader could see it half done.
                    producer.publish(
                        {"n": offset + i, "pad": "x" * 20_000},
                        exchange=queue.exchange,
                        routing_key="tasks",
                        declare=[queue],
                    )
        except BaseException as exc:  # reported below
            errors.append(exc)

    def consume() -> None:
        def on_message(body, message) -> None:
            received.append(body["n"])
            message.ack()

        try:
            with _connection(tmp_path) as conn, Consumer(conn, [queue], callbacks=[on_message]):
                deadline = time.monotonic() + 60
                while len(received) < 2 * per_producer and time.monotonic() < deadline:
                    with contextlib.suppress(TimeoutError):
                        conn.drain_events(timeout=0.2)
        except BaseException as exc:  # reported below
            errors.append(exc)

    consumer = threading.Thread(target=consume)
    consumer.start()
    producers = [threading.Thread(target=produce, args=(k * per_producer,)) for k in range(2)]
    for thread in producers:
        thread.start()
    for thread in [*producers, consumer]:
        thread.join(90)

    assert errors == []
    assert sorted(received) == list(range(2 * per_producer))
    assert list((tmp_path / "queue").iterdir()) == []  # nothing left, nothing half-written


def test_the_embedded_default_queues_tasks_for_a_worker_and_never_runs_them_in_process(
    tmp_path: Path,
):
    """Settings with nothing configured: the file broker, not eager. Queued from this process,
    the task waits as a file for a worker."""
    script = (
        "import django; django.setup()\n"
        "from django.conf import settings\n"
        "from llmplatform.celery import app\n"
        "from llmplatform.tasks import heartbeat\n"
        "from django.core.cache import cache\n"
        "heartbeat.delay()\n"
        "import json; print(json.dumps({'eager': app.conf.task_always_eager,"
        f" 'transport': app.conf.broker_transport, 'ran': cache.get('{HEARTBEAT_KEY}') is not"
        " None}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        env=minimal_env(LLMP_DATA_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="llmplatform.settings"),
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {
        "eager": False,
        "transport": "llmplatform.broker:FilesystemTransport",
        "ran": False,
    }
    queued = [p for p in (tmp_path / "broker" / "queue").iterdir() if p.suffix == ".msg"]
    assert len(queued) == 1 and "llmplatform.heartbeat" in queued[0].read_text()


# --- Restarts and readiness ---------------------------------------------------------------------


def test_the_restart_policy_backs_off_resets_when_healthy_and_caps_starts_per_minute():
    policy = RestartPolicy(first=1.0, longest=4.0, per_minute=3, healthy_after=60.0)
    policy.reset()
    assert [policy.delay_after_exit(ran_for=2.0) for _ in range(4)] == [1.0, 2.0, 4.0, 4.0]
    assert policy.delay_after_exit(ran_for=61.0) == 1.0  # it had run long enough: from the start
    assert [policy.next_allowed(100.0 + i) for i in range(3)] == [None, None, None]
    assert policy.next_allowed(103.0) == 160.0  # the fourth start in a minute waits
    assert policy.next_allowed(160.5) is None


def _status(path: Path, state: str, pid: int | None, started: float | None) -> None:
    write_status(
        path, {"state": state, "pid": pid, "restarts": 0, "last_exit": "", "started": started}
    )


def test_readiness_of_a_celery_process(tmp_path: Path, settings):
    from django.core.cache import cache as django_cache

    path = tmp_path / "celery-worker.json"
    now = time.time()
    grace = 3 * settings.LLMP_CELERY_HEARTBEAT_SECONDS
    django_cache.delete(HEARTBEAT_KEY)

    assert celery_readiness(path) == (False, "no status from the launcher")

    # Just started, no heartbeat yet: ready (beat has not had its first tick).
    _status(path, "running", os.getpid(), now)
    ok, detail = celery_readiness(path, now=now + 1)
    assert ok and "no heartbeat yet" in detail

    # Running for longer than three intervals with no heartbeat: not doing its work.
    ok, detail = celery_readiness(path, now=now + grace + 1)
    assert not ok and f"no heartbeat within {grace:.0f}s" in detail

    django_cache.set(HEARTBEAT_KEY, {"at": now + grace, "pid": 1})
    ok, detail = celery_readiness(path, now=now + grace + 1)
    assert ok and "last heartbeat 1s ago" in detail

    # A pid that is gone (the launcher has not noticed yet) and a restarting child.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _status(path, "running", dead.pid, now)
    ok, detail = celery_readiness(path, now=now + 1)
    assert not ok and f"pid {dead.pid} is gone" in detail
    write_status(path, {"state": "restarting", "pid": None, "last_exit": "was killed by SIGKILL"})
    ok, detail = celery_readiness(path, now=now + 1)
    assert not ok and detail.startswith("restarting: was killed by SIGKILL")
