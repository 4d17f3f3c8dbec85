"""One ``redis.asyncio`` client per event loop, for hot-path code.

A ``redis.asyncio`` connection belongs to the loop that opened it. Under uvicorn there is one
loop per process, so this is one pool per process; Django's test client and ``async_to_sync``
run each call in a new loop, which gets its own client.
"""

from __future__ import annotations

import asyncio
import weakref
from functools import lru_cache
from typing import Any, NamedTuple

import redis
import redis.asyncio as aioredis
from django.conf import settings
from redis.commands.core import AsyncScript

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis] = (
    weakref.WeakKeyDictionary()
)


def redis_configured() -> bool:
    return bool(settings.REDIS_URL)


def async_redis() -> aioredis.Redis:
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        url = settings.REDIS_URL
        assert url is not None  # hot-path code asks for Redis only when redis_configured()
        client = aioredis.Redis.from_url(
            url,
            socket_connect_timeout=1.0,
            socket_timeout=1.0,
            health_check_interval=30,
        )
        _clients[loop] = client
    return client


_scripts: weakref.WeakKeyDictionary[aioredis.Redis, dict[str, AsyncScript]] = (
    weakref.WeakKeyDictionary()
)


def async_script(source: str) -> AsyncScript:
    """``async_redis().register_script(source)``, made once per client: registering hashes the
    script, which every request would otherwise pay for."""
    client = async_redis()
    scripts = _scripts.get(client)
    if scripts is None:
        scripts = _scripts[client] = {}
    script = scripts.get(source)
    if script is None:
        script = scripts[source] = client.register_script(source)
    return script


@lru_cache(maxsize=4)
def _sync_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=1.0)


def sync_redis() -> redis.Redis:
    return _sync_client(settings.REDIS_URL)


# ---------------------------------------------------------------------------------------------
# Scripts called in the same turn of the event loop, sent together


class ScriptBatcher:
    """Sends the script calls that requests make in the same turn of the event loop as one
    pipeline: one write to Redis and one read back for all of them, instead of one of each per
    request.

    Under load most of a worker's cost in talking to Redis is the write itself (on loopback the
    sender's write delivers the data and wakes the server), not the bytes; requests that arrive
    together (several are read from their sockets in one turn) reach their admission in the same
    turn. The first caller of a turn leads: it yields once to the loop, so that the others of
    that turn can join, then sends what was gathered and hands each caller its own reply. A
    caller alone (one request at a time) pays only that yield.

    redis-py has no automatic pipelining (as ioredis's ``enableAutoPipelining``), hence this.
    Replies and errors are each caller's own: a script error or an unknown script (NOSCRIPT,
    after a Redis restart) fails or retries only that call; a connection error fails every
    call of the batch, as it would have failed each alone.
    """

    def __init__(self) -> None:
        self._gathering: list[_Call] | None = None
        self._sending: set[asyncio.Task[None]] = set()

    async def call(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        loop = asyncio.get_running_loop()
        gathering = self._gathering
        if gathering is not None:  # another caller leads this turn: join it
            future = loop.create_future()
            gathering.append(_Call(script, keys, args, future))
            return await future
        batch = self._gathering = [_Call(script, keys, args, None)]
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError:
            self._gathering = None
            if len(batch) > 1:  # the others still get their replies
                self._start(loop, batch[1:])
            raise
        self._gathering = None
        if len(batch) == 1:
            return await script(keys=keys, args=args)
        own = loop.create_future()
        batch[0] = batch[0]._replace(future=own)
        # A task, so that followers get their replies even if the leader is cancelled.
        self._start(loop, batch)
        return await own

    def _start(self, loop: asyncio.AbstractEventLoop, batch: list[_Call]) -> None:
        task = loop.create_task(self._send(batch))
        self._sending.add(task)  # held until done: the loop keeps only weak references
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[_Call]) -> None:
        client = batch[0].script.registered_client
        try:
            async with client.pipeline(transaction=False) as pipe:
                for c in batch:
                    pipe.evalsha(c.script.sha, len(c.keys), *c.keys, *c.args)
                replies = await pipe.execute(raise_on_error=False)
        except BaseException as exc:  # handed to every caller, then re-raised
            for c in batch:
                _fail(c.future, exc)
            if not isinstance(exc, Exception):
                raise
            return
        for c, reply in zip(batch, replies, strict=True):
            if isinstance(reply, redis.exceptions.NoScriptError):
                # Redis lost its scripts (a restart): this call loads it and runs alone.
                try:
                    reply = await c.script(keys=c.keys, args=c.args)
                except Exception as exc:  # the caller's own error
                    reply = exc
            if isinstance(reply, BaseException):
                _fail(c.future, reply)
            elif c.future is not None and not c.future.done():
                c.future.set_result(reply)


class _Call(NamedTuple):
    script: AsyncScript
    keys: list[str]
    args: list[Any]
    future: asyncio.Future[Any] | None


def _fail(future: asyncio.Future[Any] | None, exc: BaseException) -> None:
    if future is not None and not future.done():
        future.set_exception(exc)


_batchers: weakref.WeakKeyDictionary[aioredis.Redis, ScriptBatcher] = weakref.WeakKeyDictionary()


def script_batcher() -> ScriptBatcher:
    """This loop's client's batcher."""
    client = async_redis()
    batcher = _batchers.get(client)
    if batcher is None:
        batcher = _batchers[client] = ScriptBatcher()
    return batcher
