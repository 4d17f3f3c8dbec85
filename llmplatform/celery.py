from __future__ import annotations

import os

from celery import Celery
from celery.schedules import crontab

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "llmplatform.settings")

app = Celery("llmplatform")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Every periodic schedule of the platform is declared here, in one place.
app.conf.beat_schedule = {
    # Retention: delete expired conversation records (privacy.services). Hourly; a run left
    # queued past the next one is dropped.
    "privacy-purge-expired-conversations": {
        "task": "privacy.purge_expired_conversations",
        "schedule": crontab(minute=17),
        "options": {"expires": 50 * 60},
    },
    # Data-subject requests (privacy.requests): restart lost, failed and stalled executions,
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
    "backups-prune": {
        "task": "backups.prune_backups",
        "schedule": crontab(minute=53, hour=3),
        "options": {"expires": 3 * 60 * 60},
    },
}
