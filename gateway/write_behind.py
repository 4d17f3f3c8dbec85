"""Redis writes that can wait a few milliseconds, sent together as one pipeline.

Two kinds of write follow every answer and need not hold it up: the corrections of limit
reservations to actual use (``gateway.limits``), and copies of answers kept only as a fallback
for when every provider fails (``gateway.cache``). Gathered for ``DELAY_MS`` and sent in one
round trip, they cost one Redis call per window instead of up to two per request.

A failed flush is logged. Lost corrections leave the reservations standing until their windows
end (the safe side of a limit); lost fallback copies only make the degraded mode poorer.
"""

from __future__ import annotations

import asyncio

import structlog

from llmplatform.redis_client import async_redis

log = structlog.get_logger("gateway.write_behind")

# Add each delta to counters that still exist; a window that has ended is left alone. Sent with
# EVAL (not EVALSHA): in a pipeline, redis-py would check the script cache with an extra round
# trip on every flush.
CORRECT_SCRIPT = """
for i, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then
    redis.call('INCRBY', key, tonumber(ARGV[i]))
  end
end
return 1
"""


def queue_set(pipe, key: str, value: bytes, ttl: int, index_key: str | None = None) -> None:
    """SET ``key`` with a TTL on ``pipe``; with ``index_key``, also add it to that set (same
    TTL). Shared by the cache's immediate store and this buffer."""
    pipe.set(key, value, ex=ttl)
    if index_key:
        pipe.sadd(index_key, key)
        pipe.expire(index_key, ttl)


class WriteBehind:
    DELAY_MS = 20

    def __init__(self) -> None:
        self._deltas: dict[str, int] = {}
        # By key: a key written again before the flush is written once, with its last value.
        self._sets: dict[str, tuple[bytes, int, str | None]] = {}
        self._flusher: asyncio.Task | None = None

    def add_deltas(self, deltas: list[tuple[str, int]]) -> None:
        for key, delta in deltas:
            self._deltas[key] = self._deltas.get(key, 0) + delta
        self._schedule()

    def add_set(self, key: str, value: bytes, ttl: int, index_key: str | None = None) -> None:
        """SET ``key`` with a TTL; with ``index_key``, also add it to that set (same TTL)."""
        self._sets[key] = (value, ttl, index_key)
        self._schedule()

    def _schedule(self) -> None:
        if (self._deltas or self._sets) and (self._flusher is None or self._flusher.done()):
            self._flusher = asyncio.get_running_loop().create_task(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(self.DELAY_MS / 1000)
        await self.flush()

    async def flush(self) -> None:
        deltas = [(k, d) for k, d in self._deltas.items() if d]
        sets, self._deltas, self._sets = self._sets, {}, {}
        if not deltas and not sets:
            return
        try:
            async with async_redis().pipeline(transaction=False) as pipe:
                if deltas:
                    pipe.eval(
                        CORRECT_SCRIPT,
                        len(deltas),
                        *[k for k, _ in deltas],
                        *[d for _, d in deltas],
                    )
                for key, (value, ttl, index_key) in sets.items():
                    queue_set(pipe, key, value, ttl, index_key)
                await pipe.execute()
        except Exception as exc:
            log.error(
                "write_behind_failed",
                corrections=len(deltas),
                cache_copies=len(sets),
                error=type(exc).__name__,
            )


buffer = WriteBehind()
