"""/readyz probe: at least one enabled provider answers. Results are kept for a few seconds so a
load balancer polling often does not hammer the providers."""

from __future__ import annotations

import asyncio
import time

from gateway.pipeline.route import routing_table
from gateway.providers.registry import get_adapter

_CACHE_SECONDS = 10.0
_last: tuple[float, tuple[bool, str]] | None = None


async def providers_ready() -> tuple[bool, str]:
    global _last
    if _last is not None and time.monotonic() - _last[0] < _CACHE_SECONDS:
        return _last[1]
    configs = {
        t.provider.name: t.provider
        for route in (await routing_table.routes()).values()
        for t in route.targets
    }
    if not configs:
        result = (False, "no model alias is routed to an enabled provider")
    else:
        names = sorted(configs)
        checks = await asyncio.gather(
            *(asyncio.wait_for(get_adapter(configs[n]).check(), 3.0) for n in names),
            return_exceptions=True,
        )
        up = [n for n, ok in zip(names, checks, strict=True) if ok is True]
        result = (bool(up), f"reachable: {', '.join(up) or 'none'} of {', '.join(names)}")
    _last = (time.monotonic(), result)
    return result
