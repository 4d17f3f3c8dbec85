"""Celery tasks of the backups app (schedules in ``llmplatform/celery.py``). Each takes ids,
calls one service, and is idempotent: a backup is claimed with a conditional UPDATE, and the
scheduled one is keyed by its window (half the RPO)."""

from __future__ import annotations

from celery import shared_task
from django.contrib.auth import get_user_model

from deployments.backups import restore, services
from llmplatform.actors import Actor


@shared_task(name="backups.run_scheduled_backup", ignore_result=True)
def run_scheduled_backup() -> str | None:
    """Back up the database (a second delivery of the same tick does nothing)."""
    backup = services.backup_scheduled()
    return backup.state if backup is not None else None


@shared_task(name="backups.prune_backups", ignore_result=True)
def prune_backups() -> int:
    """Daily: delete backups past the retention, and ledger entries no backup needs."""
    return len(services.backups_prune().deleted)


@shared_task(name="backups.run_backup", ignore_result=True)
def run_backup(backup_id: int) -> bool:
    """A backup requested by hand (the admin's "back up now")."""
    return services.backup_run(backup_id)


@shared_task(name="backups.run_restore_drill", ignore_result=True)
def run_restore_drill(backup_id: int, actor: str, user_id: int | None = None) -> bool:
    """A restore drill requested from the admin; the result is recorded as a RestoreDrill, in
    the name of who asked (``actor``, the label the request was audited under, and the
    person's id when a person asked)."""
    user = get_user_model().objects.filter(pk=user_id).first() if user_id is not None else None
    requester = Actor.for_user(user) if user is not None else Actor.system(actor)
    try:
        report = restore.backup_restore(actor=requester, reference=str(backup_id), drill=True)
    except restore.RestoreError:
        return False  # recorded (and audited) as a failed drill, unless refused outright
    return report.verified


@shared_task(name="backups.run_pitr_backup", ignore_result=True)
def run_pitr_backup(kind: str) -> str | None:
    """A pgBackRest backup (``full`` weekly, ``diff`` daily) when point-in-time recovery is
    configured; a second delivery of the same tick finds the recent backup and does nothing."""
    from deployments.backups import conf, pitr

    if not conf.pitr_get().configured:
        return None
    result = pitr.pitr_backup_run(
        actor=Actor.system("system:backups.pitr"), kind=kind, scheduled=True
    )
    return result.backup.label if result.backup is not None else None
