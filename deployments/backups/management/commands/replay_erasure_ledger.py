"""Apply again the erasures recorded in the erasure ledger since a backup, to a restored
database (``restore_backup`` does this itself; use this after an RDS snapshot restore, or to
check). Idempotent: subjects already erased are skipped."""

from __future__ import annotations

from datetime import datetime

from django.core.management.base import BaseCommand, CommandError

from deployments.backups import conf, engines, ledger, selectors
from deployments.backups.storage import BackupStorageError, BackupStore


class Command(BaseCommand):
    help = __doc__
    requires_system_checks: list = []

    def add_arguments(self, parser):
        group = parser.add_mutually_exclusive_group(required=True)
        group.add_argument("--backup", help="the restored backup (id or uuid)")
        group.add_argument("--since", help="ISO time: replay erasures from then on")
        parser.add_argument("--target-url", help="the restored database (default: the platform's)")

    def handle(self, *args, **options):
        if options["backup"]:
            backup = selectors.backup_for_reference(options["backup"])
            if backup is None or backup.started_at is None:
                raise CommandError(f"no backup {options['backup']!r} here; use --since")
            since = backup.started_at - ledger.MARGIN
        else:
            try:
                since = datetime.fromisoformat(options["since"])
            except ValueError:
                raise CommandError("--since must be an ISO time with a zone") from None
            if since.tzinfo is None:
                raise CommandError("--since must be an ISO time with a zone")
        settings = conf.get()
        try:
            store = BackupStore(settings) if settings.bucket else None
            records = ledger.erasure_ledger_since(since, store=store)
            target = engines.parse_url(options["target_url"]) if options["target_url"] else None
        except (BackupStorageError, engines.EngineError) as exc:
            raise CommandError(str(exc)) from None
        if target is None:
            result = ledger.erasure_ledger_replay(records)
        else:
            with engines.as_default_database(target):
                result = ledger.erasure_ledger_replay(records)
        self.stdout.write(
            f"{result.entries} ledger entries since {since.isoformat()}: "
            f"{result.erased} subjects erased again, {result.absent} already gone"
        )
