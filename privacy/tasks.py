from __future__ import annotations

from celery import shared_task

from privacy import services


@shared_task(name="privacy.purge_expired_conversations")
def purge_expired_conversations() -> int:
    """The retention purge (hourly, see llmplatform/celery.py). Idempotent, and a run that
    overlaps another returns at once (PostgreSQL advisory lock)."""
    run = services.purge_expired_conversations()
    return run.deleted if run is not None else 0
