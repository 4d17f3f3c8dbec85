"""Take a backup now (the same run as the scheduled task) and print its result: a dump, or with
``--pitr full|diff`` a pgBackRest backup (point-in-time recovery)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from deployments.backups import conf, services
from deployments.backups.models import Backup
from llmplatform.actors import Actor


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser):
        parser.add_argument("--pitr", choices=["full", "diff"], help="a pgBackRest backup")

    def handle(self, *args, **options):
        if options["pitr"]:
            return self._pitr(options["pitr"])
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

    def _pitr(self, kind: str) -> None:
        from deployments.backups import pitr

        try:
            result = pitr.pitr_backup_run(actor=Actor.system("command:run_backup"), kind=kind)
        except pitr.PitrError as exc:
            raise CommandError(str(exc)) from None
        backup = result.backup
        self.stdout.write(
            f"{kind} backup {backup.label if backup else '?'} in {result.duration_seconds:.1f} s: "
            f"{(backup.size_bytes if backup else 0):,} bytes of data, "
            f"{(backup.repo_bytes if backup else 0):,} in the repository"
        )
