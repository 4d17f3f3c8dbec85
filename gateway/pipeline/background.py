"""Work a request starts that its answer does not wait for (a security-event row, a cache
entry kept for the fallback chain, a conversation record, ``last_used_at``).

``spawn`` keeps a reference to each task, so it is not collected before it ends. ``after_answer``
is for work that must not be lost silently: it runs in the background (before the response
completes only with ``LLMP_AFTER_ANSWER_INLINE``, as most tests set); a failure is logged, never
raised into an answer that was already given.

``after_answer_durably`` is for records the client was promised (a consented conversation):
while the database is unreachable (a restart, a failover) the write is retried with backoff for
up to ``DURABLE_RETRY_SECONDS``, so a database restart loses none of them. The retries live in
the process's memory: a crash of the process itself during an outage loses what it held.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import structlog
from django.conf import settings
from django.db import InterfaceError, OperationalError
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential_jitter,
)

log = structlog.get_logger("gateway.background")

_T = TypeVar("_T")

_tasks: set[asyncio.Task[object]] = set()


def spawn(job: Coroutine[Any, Any, _T]) -> asyncio.Task[_T]:
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
    if settings.LLMP_AFTER_ANSWER_INLINE:
        await _logged(job, event)
    else:
        spawn(_logged(job, event))


DURABLE_RETRY_SECONDS = 900.0


async def _durably(make_job: Callable[[int], Coroutine[Any, Any, Any]], event: str) -> None:
    try:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type((OperationalError, InterfaceError)),
            wait=wait_exponential_jitter(multiplier=0.5, max=10.0),
            stop=stop_after_delay(DURABLE_RETRY_SECONDS),
            reraise=True,
        ):
            with attempt:
                await make_job(attempt.retry_state.attempt_number)
    except Exception:
        log.exception(event)


async def after_answer_durably(
    make_job: Callable[[int], Coroutine[Any, Any, Any]], *, event: str
) -> None:
    """``make_job(attempt)`` builds the write; from the second attempt on it must check whether
    an earlier attempt committed (a connection can drop after the commit)."""
    if settings.LLMP_AFTER_ANSWER_INLINE:
        await _logged(make_job(1), event)
    else:
        spawn(_durably(make_job, event))
