"""The kernel's own Celery task: the heartbeat that shows beat and worker are alive."""

from __future__ import annotations

import os
import time

from celery import shared_task
from django.core.cache import cache

HEARTBEAT_KEY = "llmp:celery:heartbeat"


@shared_task(name="llmplatform.heartbeat", ignore_result=True)  # type: ignore[untyped-decorator]  # celery is untyped
def heartbeat() -> float:
    """Sent by beat every ``HEARTBEAT_SECONDS``, run by a worker: the time it ran is kept in the
    shared cache, where ``/readyz`` reads it (so a beat that stopped sending, or a worker that
    stopped taking tasks, shows as a growing age)."""
    now = time.time()
    cache.set(HEARTBEAT_KEY, {"at": now, "pid": os.getpid()}, timeout=24 * 3600)
    return now


def last_heartbeat() -> float | None:
    """When a worker last ran the heartbeat (seconds since the epoch), or None."""
    value = cache.get(HEARTBEAT_KEY)
    return float(value["at"]) if isinstance(value, dict) and "at" in value else None
