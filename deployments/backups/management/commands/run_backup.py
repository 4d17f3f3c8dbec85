"""Take a backup now (the same run as the hourly task) and print its result."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from deployments.backups import conf, services
from deployments.backups.models import Backup
from llmplatform.actors import Actor


class Command(BaseCommand):
    help = __doc__

    def handle(self, *args, **options):
        if not conf.get().configured:
            raise CommandError(
                "backups are not configured: set LLMP_BACKUP_BUCKET (or "
                "LLMP_BACKUP_MODE=rds and LLMP_BACKUP_RDS_INSTANCE)"
            )
        backup = services.backup_request(actor=Actor.system("command:run_backup"))
        services.backup_run(backup.pk)
        backup.refresh_from_db()
        if backup.state != Backup.State.SUCCEEDED:
            raise CommandError(f"backup {backup.uuid} failed: {backup.error}")
        duration = backup.duration.total_seconds() if backup.duration else 0
        self.stdout.write(
            f"backup {backup.pk} ({backup.uuid}) succeeded in {duration:.1f} s: "
            f"{backup.engine}, {backup.size_bytes or 0:,} bytes in the store "
            f"({backup.dump_bytes or 0:,} dumped), key {backup.encryption_key_id}, "
            f"{backup.storage_key}"
        )
