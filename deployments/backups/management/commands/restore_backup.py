"""Restore a backup into an EMPTY database, or run a restore drill.

    manage.py restore_backup ID                   # into the platform's database (must be empty)
    manage.py restore_backup ID --target-url URL  # into another empty database
    manage.py restore_backup ID --drill           # into a scratch database, verified, dropped
    manage.py restore_backup --list               # the backups in the store (by uuid)
    manage.py restore_backup ID --rds-instance N  # an RDS snapshot backup, into a new instance

ID is the backup's id in the platform's database, or its uuid (when the database is lost).
The dump is decrypted and its SHA-256 checked before anything is written; row counts and
checksums are compared with those taken at backup time; erasures made since the backup are
applied again from the erasure ledger. Each run is recorded as a RestoreDrill with its duration.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from deployments.backups import conf, restore
from deployments.backups.storage import BackupStorageError, BackupStore
from llmplatform.actors import Actor


class Command(BaseCommand):
    help = "Restore a backup into an empty database (--drill: into a scratch one)."
    # The platform's database may be empty (that is the point): no checks that query it.
    requires_system_checks: list = []
    requires_migrations_checks = False

    def add_arguments(self, parser):
        parser.add_argument("backup", nargs="?", help="backup id or uuid")
        parser.add_argument(
            "--target-url",
            help="an empty database (postgres://… or "
            "sqlite:////path); default: the platform's own database",
        )
        parser.add_argument(
            "--drill", action="store_true", help="restore into a scratch database, verify, drop it"
        )
        parser.add_argument("--list", action="store_true", help="list the backups in the store")
        parser.add_argument("--rds-instance", help="RDS snapshot backups: the new instance id")

    def handle(self, *args, **options):
        actor = Actor.system("command:restore_backup")
        try:
            if options["list"]:
                return self._list()
            if not options["backup"]:
                raise CommandError("name a backup (its id or uuid), or use --list")
            if options["rds_instance"]:
                instance = restore.backup_restore_rds(
                    actor=actor, reference=options["backup"], instance_id=options["rds_instance"]
                )
                endpoint = instance.get("Endpoint") or {}
                self.stdout.write(
                    f"RDS instance {options['rds_instance']} restored "
                    f"({endpoint.get('Address', '?')}:{endpoint.get('Port', '?')}). Now run: "
                    "manage.py replay_erasure_ledger --backup "
                    f"{options['backup']} --target-url postgres://…"
                )
                return None
            report = restore.backup_restore(
                actor=actor,
                reference=options["backup"],
                target_url=options["target_url"],
                drill=options["drill"],
            )
        except (restore.RestoreError, BackupStorageError) as exc:
            raise CommandError(str(exc)) from None
        rto = report.rto_seconds
        self.stdout.write(
            f"{report.kind} of backup {report.backup_uuid} into {report.target}: "
            f"{report.duration_seconds:.1f} s (RTO {rto} s: "
            f"{'met' if report.met_rto else 'NOT met'}); {report.tables_compared} tables, "
            f"{report.rows_verified:,}/{report.rows_compared:,} rows and "
            f"{report.checksums_verified} table checksums verified; erasures replayed: "
            f"{report.replay.erased} ({report.replay.absent} already gone)"
        )
        if report.mismatches:
            for mismatch in report.mismatches:
                self.stderr.write(f"mismatch: {mismatch}")
            raise CommandError("the restored data does not match the backup (recorded)")
        return None

    def _list(self) -> None:
        settings = conf.get()
        if not settings.bucket:
            raise CommandError("LLMP_BACKUP_BUCKET is not set")
        for manifest in restore.stored_backups(BackupStore(settings)):
            self.stdout.write(
                f"{manifest['uuid']}  {manifest['started_at']}  {manifest['engine']:<10} "
                f"{manifest['size_bytes']:>14,} bytes  "
                f"key {manifest['encryption']['master_key_id']}"
            )
