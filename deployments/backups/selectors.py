"""Reads other code relies on (the dashboard, the compliance checks, the admin)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from django.utils import timezone

from deployments.backups.models import Backup, RestoreDrill


def last_good_backup() -> Backup | None:
    """The newest backup that succeeded (by the moment its data is from), or None."""
    return (
        Backup.objects.filter(state=Backup.State.SUCCEEDED, started_at__isnull=False)
        .order_by("-started_at", "-id")
        .first()
    )


def last_good_backup_age(*, now: datetime | None = None) -> timedelta | None:
    """How old the data of the newest good backup is: what a disaster now would lose."""
    backup = last_good_backup()
    if backup is None or backup.started_at is None:
        return None
    return (now or timezone.now()) - backup.started_at


def last_restore_drill() -> RestoreDrill | None:
    """The newest restore drill or restore, whatever its result, or None."""
    return RestoreDrill.objects.select_related("backup").order_by("-finished_at", "-id").first()


def last_successful_restore_drill() -> RestoreDrill | None:
    return (
        RestoreDrill.objects.select_related("backup")
        .filter(result=RestoreDrill.Result.SUCCEEDED)
        .order_by("-finished_at", "-id")
        .first()
    )


def backup_for_reference(reference: str) -> Backup | None:
    """A backup by its id in this database or its uuid (the name the store knows it by)."""
    reference = reference.strip()
    if reference.isdigit():
        return Backup.objects.filter(pk=int(reference)).first()
    try:
        value = uuid.UUID(reference)
    except ValueError:
        return None
    return Backup.objects.filter(uuid=value).first()
