"""Restore a backup into an EMPTY database, or run a restore drill.

    manage.py restore_backup ID                   # into the platform's database (must be empty)
    manage.py restore_backup ID --target-url URL  # into another empty database
    manage.py restore_backup ID --drill           # into a scratch database, verified, dropped
    manage.py restore_backup --list               # the backups in the store (by uuid)
    manage.py restore_backup ID --rds-instance N  # an RDS snapshot backup, into a new instance

    # Point-in-time (pgBackRest, LLMP_PITR_STANZA): into an EMPTY data directory, started on
    # --pg-port; 'YYYY-MM-DD HH:MM:SS' is UTC, 'latest' the end of the WAL archive.
    manage.py restore_backup --to-time '2025-01-31 13:05:00' --pg-data DIR --pg-port 5433
    manage.py restore_backup --to-time latest --drill   # a scratch cluster, timed, removed

ID is the backup's id in the platform's database, or its uuid (when the database is lost).
The dump is decrypted and its SHA-256 checked before anything is written; row counts and
checksums are compared with those taken at backup time; erasures made since the backup are
applied again from the erasure ledger. Each run is recorded as a RestoreDrill with its duration.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path

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
        parser.add_argument(
            "--to-time",
            help="point-in-time restore (pgBackRest): 'YYYY-MM-DD HH:MM:SS' in UTC, or 'latest'",
        )
        parser.add_argument("--pg-data", help="--to-time: the empty data directory to restore into")
        parser.add_argument(
            "--pg-port", type=int, help="--to-time: the port the restored cluster listens on"
        )

    def handle(self, *args, **options):
        actor = Actor.system("command:restore_backup")
        try:
            if options["list"]:
                return self._list()
            if options["to_time"] is not None:
                return self._point_in_time(actor, options)
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

    def _point_in_time(self, actor: Actor, options: dict) -> None:
        from deployments.backups import pitr

        if options["backup"] or options["target_url"] or options["rds_instance"]:
            raise CommandError("--to-time restores the WAL archive: give no backup id or URL")
        try:
            target = pitr.parse_target(options["to_time"])
        except pitr.PitrRefused as exc:
            raise CommandError(str(exc)) from None
        port = options["pg_port"]
        if port is not None and not 0 < port < 65536:
            raise CommandError("--pg-port must be a TCP port (1-65535)")
        scratch: str | None = None
        if options["drill"]:
            if options["pg_data"]:
                raise CommandError("a drill restores into a scratch directory: no --pg-data")
            scratch = tempfile.mkdtemp(prefix="llmp-pitr-drill-")
            # The cluster's owner (LLMP_PITR_RUN_AS) must reach its data directory inside.
            os.chmod(scratch, 0o755)  # noqa: S103 - a directory holding only the 0700 data dir
            pg_data = str(Path(scratch) / "data")
            port = port or _free_port()
        else:
            if not options["pg_data"] or port is None:
                raise CommandError("--to-time needs --pg-data (an empty directory) and --pg-port")
            pg_data = options["pg_data"]
        try:
            report = pitr.pitr_restore(
                actor=actor, to_time=target, pg_data=pg_data, port=port, drill=options["drill"]
            )
        except pitr.PitrError as exc:
            raise CommandError(str(exc)) from None
        finally:
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)
        moment = f"{target:%Y-%m-%d %H:%M:%S} UTC" if target else "the end of the WAL archive"
        where = "a scratch cluster (stopped and removed)" if options["drill"] else pg_data
        self.stdout.write(
            f"point-in-time {'drill' if options['drill'] else 'restore'} to {moment} from "
            f"backup set {report.backup_label or '?'} into {where}: "
            f"{report.duration_seconds:.1f} s (RTO {report.rto_seconds} s: "
            f"{'met' if report.met_rto else 'NOT met'}); {report.tables} tables, "
            f"{report.rows:,} rows; erasures replayed: {report.replay.erased} "
            f"({report.replay.absent} already gone)"
        )
        if not options["drill"]:
            self.stdout.write(
                f"the restored cluster is running on port {port}: point DATABASE_URL at it"
            )

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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
