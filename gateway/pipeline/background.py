"""Work a request starts that its answer does not wait for (a security-event row, a cache
entry kept for the fallback chain, a conversation record, ``last_used_at``).

``spawn`` keeps a reference to each task, so it is not collected before it ends. ``after_answer``
is for work that must not be lost silently: it runs at once when usage records are written at
once (``LLMP_USAGE_FLUSH_MS=0``, as the tests do), else in the background; a failure is logged,
never raised into an answer that was already given.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import structlog
from django.conf import settings

log = structlog.get_logger("gateway.background")

_tasks: set[asyncio.Task] = set()


def spawn(job: Coroutine[Any, Any, Any]) -> asyncio.Task:
    task = asyncio.get_running_loop().create_task(job)
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)
    return task


async def _logged(job: Coroutine[Any, Any, Any], event: str) -> None:
    try:
        await job
    except Exception:
        log.exception(event)


async def after_answer(job: Coroutine[Any, Any, Any], *, event: str) -> None:
    if settings.LLMP_USAGE_FLUSH_MS <= 0:
        await _logged(job, event)
    else:
        spawn(_logged(job, event))
