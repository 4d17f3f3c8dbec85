from __future__ import annotations

from celery import shared_task

from gateway import services


@shared_task(name="gateway.purge_security_event_text")
def purge_security_event_text() -> int:
    """Retention of flagged texts kept with security events (scheduled in llmplatform/celery.py
    beside the conversation purge). Idempotent."""
    return services.security_event_text_purge()
