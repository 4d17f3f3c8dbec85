"""One ``redis.asyncio`` client per event loop, for hot-path code.

A ``redis.asyncio`` connection belongs to the loop that opened it. Under uvicorn there is one
loop per process, so this is one pool per process; Django's test client and ``async_to_sync``
run each call in a new loop, which gets its own client.
"""

from __future__ import annotations

import asyncio
import weakref
from functools import lru_cache

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
