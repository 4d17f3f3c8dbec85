"""The write-behind buffer: writes nobody waits for (limit corrections, fallback copies of
answers), gathered and sent to Redis as one pipeline."""

from __future__ import annotations

import pytest

from gateway.write_behind import WriteBehind
from llmplatform.redis_client import sync_redis

pytestmark = pytest.mark.redis


def _calls(command: str) -> int:
    stats = sync_redis().info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


async def test_a_copy_written_again_before_the_flush_is_sent_once_with_its_last_value():
    buffer = WriteBehind()
    buffer.add_set("llmp:test:wb:a", b"first answer", 60, "llmp:test:wb:subject")
    buffer.add_set("llmp:test:wb:b", b"other answer", 60)
    buffer.add_set("llmp:test:wb:a", b"second answer", 60, "llmp:test:wb:subject")
    before = _calls("set")
    await buffer.flush()
    assert _calls("set") - before == 2
    client = sync_redis()
    assert client.get("llmp:test:wb:a") == b"second answer"
    assert client.get("llmp:test:wb:b") == b"other answer"
    assert 0 < client.ttl("llmp:test:wb:a") <= 60
    assert client.smembers("llmp:test:wb:subject") == {b"llmp:test:wb:a"}


async def test_corrections_add_up_per_counter_and_leave_ended_windows_alone():
    client = sync_redis()
    client.set("llmp:test:wb:counter", 100, ex=60)
    buffer = WriteBehind()
    buffer.add_deltas([("llmp:test:wb:counter", -30), ("llmp:test:wb:ended", 5)])
    buffer.add_deltas([("llmp:test:wb:counter", -20)])
    await buffer.flush()
    assert client.get("llmp:test:wb:counter") == b"50"
    assert client.get("llmp:test:wb:ended") is None  # not made again by a late correction
