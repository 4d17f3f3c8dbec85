from __future__ import annotations

import os
from typing import Any

from celery import Celery, signals
from celery.schedules import crontab

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "llmplatform.settings")

app = Celery("llmplatform")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def _start_tracing(**_: Any) -> None:
    """OpenTelemetry traces in the worker and beat, when configured: a task's span is linked
    to the span that enqueued it (its context travels in the message's headers). Set up before
    the pool forks; the SDK restarts its export thread in each child."""
    from llmplatform import tracing

    tracing.configure()


signals.worker_init.connect(_start_tracing, weak=False)
signals.beat_init.connect(_start_tracing, weak=False)


def _purge_schedule() -> tuple[crontab | float, int]:
    """Hourly at :17, or every LLMP_RETENTION_PURGE_SECONDS seconds when that is set."""
    from django.conf import settings

    seconds = settings.LLMP_RETENTION_PURGE_SECONDS
    if seconds:
        return seconds, max(1, int(seconds * 0.9))
    return crontab(minute=17), 50 * 60


def _heartbeat_seconds() -> float:
    from django.conf import settings

    return settings.LLMP_CELERY_HEARTBEAT_SECONDS


_purge_every, _purge_expires = _purge_schedule()
HEARTBEAT_SECONDS = _heartbeat_seconds()

# Every periodic schedule of the platform is declared here, in one place: the embedded default
# (runplatform's worker and beat) and production (their own containers) run the same one.
app.conf.beat_schedule = {
    # Retention: delete expired conversation records (privacy.services). Hourly; a run left
    # queued past the next one is dropped.
    "privacy-purge-expired-conversations": {
        "task": "privacy.purge_expired_conversations",
        "schedule": _purge_every,
        "options": {"expires": _purge_expires},
    },
    # Retention of the text kept with security events (gateway.services).
    "gateway-purge-security-event-text": {
        "task": "gateway.purge_security_event_text",
        "schedule": _purge_every,
        "options": {"expires": _purge_expires},
    },
    # Beat and worker health: the worker records when it last ran this; /readyz reports it.
    "platform-heartbeat": {
        "task": "llmplatform.heartbeat",
        "schedule": HEARTBEAT_SECONDS,
        "options": {"expires": max(1.0, HEARTBEAT_SECONDS - 1)},
    },
    # Data-subject requests (privacy.subject_requests): restart lost, failed and stalled executions,
    # close public requests never verified, delete exports whose link expired.
    "privacy-resume-subject-requests": {
        "task": "privacy.resume_stalled_subject_requests",
        "schedule": crontab(minute="*/5"),
        "options": {"expires": 4 * 60},
    },
    # Rollouts (deployments.rollouts): advance scheduled canary stages, roll back versions
    # whose error rate or latency breaks the guard.
    "rollouts-evaluate": {
        "task": "rollouts.evaluate_rollouts",
        "schedule": 15.0,
        "options": {"expires": 14},
    },
    # Compliance evidence (deployments.compliance): re-run every live check.
    "compliance-run-evidence-checks": {
        "task": "compliance.run_evidence_checks",
        "schedule": crontab(minute=7),
        "options": {"expires": 50 * 60},
    },
    # Backups (deployments.backups): back up the database every 30 minutes, so that with a
    # run's own duration the newest backup is never older than the 1 h RPO; then delete
    # backups past the retention.
    "backups-run-backup": {
        "task": "backups.run_scheduled_backup",
        "schedule": crontab(minute="11,41"),
        "options": {"expires": 25 * 60},
    },
    # Point-in-time recovery (deployments.backups.pitr, when LLMP_PITR_STANZA is set): the WAL
    # archive is continuous (PostgreSQL's archive_command); a full pgBackRest backup on Sundays
    # and a differential one the other days bound how much WAL a restore replays.
    "backups-pitr-full": {
        "task": "backups.run_pitr_backup",
        "schedule": crontab(minute=23, hour=2, day_of_week="sun"),
        "args": ("full",),
        "options": {"expires": 6 * 60 * 60},
    },
    "backups-pitr-diff": {
        "task": "backups.run_pitr_backup",
        "schedule": crontab(minute=23, hour=2, day_of_week="mon-sat"),
        "args": ("diff",),
        "options": {"expires": 6 * 60 * 60},
    },
    "backups-prune": {
        "task": "backups.prune_backups",
        "schedule": crontab(minute=53, hour=3),
        "options": {"expires": 3 * 60 * 60},
    },
}
