"""Restores and restore drills.

``backup_restore`` finds the backup's manifest in the store (the database may be gone: a backup
is named by its uuid then), refuses a target database that is not empty, downloads and decrypts
the dump (every chunk authenticated, then the whole dump's SHA-256 checked against the manifest)
before anything is written, loads it (``pg_restore`` / SQLite's backup API), compares every
table's row count and the checksums of a few tables with those taken at backup time, and replays
the erasure ledger into it. A drill does the same into a scratch database that it drops
afterwards. Each restore or drill is recorded (``RestoreDrill``, audited) in the platform's
database with its measured duration, the recovery time to compare with the RTO.
"""

from __future__ import annotations

import base64
import logging
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from django.db import DatabaseError, connections, transaction
from django.utils import timezone

from deployments.backups import conf as backup_conf
from deployments.backups import engines, envelope, ledger, selectors, services
from deployments.backups.models import Backup, RestoreDrill
from deployments.backups.storage import MANIFEST_NAME, BackupStore
from llmplatform.actors import Actor
from llmplatform.errors import Conflict

logger = logging.getLogger(__name__)


class RestoreError(Exception):
    """The restore could not be done (the message says why, for the operator)."""


class RestoreRefused(RestoreError, Conflict):
    """Refused before anything was written: unknown backup, wrong engine, non-empty target."""


@dataclass
class RestoreReport:
    backup_uuid: str
    kind: str
    target: str
    duration_seconds: float = 0.0
    tables_compared: int = 0
    rows_compared: int = 0
    rows_verified: int = 0
    checksums_verified: int = 0
    mismatches: list[dict[str, Any]] = field(default_factory=list)
    replay: ledger.ReplayResult = field(default_factory=ledger.ReplayResult)
    rto_seconds: int = 0
    drill: RestoreDrill | None = None

    @property
    def verified(self) -> bool:
        return not self.mismatches

    @property
    def met_rto(self) -> bool:
        return self.verified and self.duration_seconds <= self.rto_seconds


def _platform_database() -> dict[str, Any]:
    return dict(connections["default"].settings_dict)


def _row(reference: str) -> Backup | None:
    try:
        return selectors.backup_for_reference(reference)
    except DatabaseError:
        # The platform's database is the empty one being restored: the store is the truth.
        return None


def stored_backups(store: BackupStore) -> list[dict[str, Any]]:
    """The manifests in the store, oldest first (what ``restore_backup --list`` shows)."""
    return [m for m in store.manifests() if m.get("format") == services.MANIFEST_FORMAT]


def find_manifest(store: BackupStore, reference: str) -> tuple[dict[str, Any], Backup | None]:
    row = _row(reference)
    if row is not None:
        if row.mode == Backup.Mode.RDS:
            raise RestoreRefused(
                f"{row} is an RDS snapshot ({row.storage_key}): restore it with "
                "--rds-instance NEW_INSTANCE_ID"
            )
        if row.state != Backup.State.SUCCEEDED:
            raise RestoreRefused(
                f"{row} is {row.state}: only a backup that succeeded can be restored"
            )
        backup_uuid = str(row.uuid)
    else:
        try:
            backup_uuid = str(uuid.UUID(reference.strip()))
        except ValueError:
            raise RestoreRefused(
                f"no backup {reference!r} in this database; name it by its uuid "
                "(`manage.py restore_backup --list` lists the backups in the store)"
            ) from None
    suffix = f"-{backup_uuid}/{MANIFEST_NAME}"
    for item in store.list("backups/"):
        if item.key.endswith(suffix):
            return store.get_json(item.key), row
    raise RestoreRefused(
        f"backup {backup_uuid} is not in the store (deleted by the retention, or never finished)"
    )


def _download(store: BackupStore, manifest: dict[str, Any], path: Path) -> None:
    encryption = manifest["encryption"]
    key = envelope.unwrap_data_key(
        base64.b64decode(encryption["wrapped_key"]), encryption["master_key_id"], manifest["uuid"]
    )
    body = store.open(manifest["dump_key"])
    try:
        with path.open("wb") as out:
            digest, size = envelope.decrypt_stream(body.read, key, out)
    finally:
        body.close()
    if digest != manifest["sha256"] or size != manifest["dump_bytes"]:
        raise RestoreError(
            "the decrypted dump does not match the SHA-256 in its manifest; nothing was restored"
        )


def _compare(
    report: RestoreReport,
    manifest: dict[str, Any],
    counts: dict[str, int],
    checksums: dict[str, str],
) -> None:
    expected_counts: dict[str, int] = manifest["table_counts"]
    report.tables_compared = len(expected_counts)
    report.rows_compared = sum(expected_counts.values())
    for table, expected in sorted(expected_counts.items()):
        found = counts.get(table)
        if found == expected:
            report.rows_verified += expected
        else:
            report.mismatches.append(
                {"table": table, "rows_expected": expected, "rows_found": found}
            )
    for table, expected in sorted(manifest["checksums"].items()):
        if checksums.get(table) == expected:
            report.checksums_verified += 1
        else:
            report.mismatches.append({"table": table, "checksum": "differs"})


def _record(
    report: RestoreReport, *, actor: Actor, started_at: datetime, error: str = ""
) -> RestoreDrill | None:
    """The drill's row and audit, in the platform's database (after a restore into it, the
    restored one). Skipped, with a warning, if that database has no such table."""
    from llmplatform.audit import AuditAction, audit_record

    result = (
        RestoreDrill.Result.SUCCEEDED
        if not error and report.verified
        else RestoreDrill.Result.FAILED
    )
    try:
        with transaction.atomic():
            drill = RestoreDrill.objects.create(
                backup=Backup.objects.filter(uuid=report.backup_uuid).first(),
                backup_uuid=report.backup_uuid,
                kind=report.kind,
                actor=actor.label,
                started_at=started_at,
                finished_at=timezone.now(),
                duration_seconds=round(report.duration_seconds, 3),
                rto_seconds=report.rto_seconds,
                target_database=report.target[:300],
                tables_compared=report.tables_compared,
                rows_compared=report.rows_compared,
                rows_verified=report.rows_verified,
                checksums_verified=report.checksums_verified,
                mismatches=report.mismatches,
                erasures_replayed=report.replay.erased,
                result=result,
                error=error[:2000],
            )
            audit_record(
                actor=actor,
                action=(
                    AuditAction.BACKUP_DRILL_RUN
                    if report.kind == RestoreDrill.Kind.DRILL
                    else AuditAction.BACKUP_RESTORE_RUN
                ),
                obj=drill,
                after={
                    "backup": report.backup_uuid,
                    "result": result,
                    "duration_seconds": drill.duration_seconds,
                    "rto_seconds": report.rto_seconds,
                    "met_rto": drill.met_rto,
                    "target": report.target,
                    "mismatches": len(report.mismatches),
                    "erasures_replayed": report.replay.erased,
                    "error": error[:300],
                },
            )
    except DatabaseError as exc:
        logger.warning(
            "the %s was not recorded: the platform's database has no table for it (%s)",
            report.kind,
            type(exc).__name__,
        )
        return None
    return drill


def backup_restore(
    *, actor: Actor, reference: str, target_url: str | None = None, drill: bool = False
) -> RestoreReport:
    """Restore backup ``reference`` (its id here, or its uuid) into an empty database: the one
    at ``target_url``, else the platform's own. With ``drill``, into a scratch database
    (created and dropped here unless ``target_url`` names one) and the platform's database is
    not touched beyond recording the drill. Raises ``RestoreRefused`` before writing anything,
    ``RestoreError`` (after recording a failed drill) when a later step fails; a verification
    mismatch is reported in the result (and recorded as failed), not raised."""
    conf = backup_conf.get()
    if not conf.bucket:
        raise RestoreRefused("LLMP_BACKUP_BUCKET is not set: there is no store to restore from")
    store = BackupStore(conf)
    manifest, _ = find_manifest(store, reference)
    platform = _platform_database()
    scratch: dict[str, Any] | None = None
    scratch_dir: tempfile.TemporaryDirectory | None = None
    if target_url:
        target = engines.parse_url(target_url)
    elif drill:
        if manifest["engine"] == engines.POSTGRES:
            if engines.engine_of(platform) != engines.POSTGRES:
                raise RestoreRefused(
                    "a drill of a PostgreSQL backup needs a PostgreSQL server: "
                    "give --target-url of an empty database"
                )
            scratch = target = engines.create_scratch_database(platform)
        else:
            scratch_dir = tempfile.TemporaryDirectory(prefix="llmp-drill-")
            scratch = target = {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": str(Path(scratch_dir.name) / "drill.sqlite3"),
            }
    else:
        target = platform
    report = RestoreReport(
        backup_uuid=manifest["uuid"],
        kind=RestoreDrill.Kind.DRILL if drill else RestoreDrill.Kind.RESTORE,
        target=engines.describe(target),
        rto_seconds=int(conf.rto.total_seconds()),
    )
    started_at = timezone.now()
    clock = time.monotonic()
    try:
        if engines.engine_of(target) != manifest["engine"]:
            raise RestoreRefused(
                f"backup {manifest['uuid']} is a {manifest['engine']} dump; the "
                f"target {report.target} is {engines.engine_of(target)}"
            )
        if not engines.is_empty(target):
            raise RestoreRefused(
                f"the target database {report.target} is not empty: a restore only goes into an "
                "empty database (create a new one, or give --target-url of an empty one)"
            )
        try:
            with tempfile.TemporaryDirectory(prefix="llmp-restore-") as directory:
                dump_path = Path(directory) / "dump"
                _download(store, manifest, dump_path)
                if engines.same_database(target, platform):
                    connections["default"].close()
                engines.load(target, dump_path, conf)
            counts, checksums = engines.stats(target, tuple(manifest["checksums"]))
            _compare(report, manifest, counts, checksums)
            since = datetime.fromisoformat(manifest["started_at"]) - ledger.MARGIN
            records = ledger.erasure_ledger_since(since, store=store)
            with engines.as_default_database(target):
                report.replay = ledger.erasure_ledger_replay(records)
                if not drill:
                    ledger.erasure_ledger_record_locally(records)
                    services.backups_reconcile(store=store, actor=actor)
        except RestoreRefused:
            raise
        except Exception as exc:
            report.duration_seconds = time.monotonic() - clock
            error = f"{type(exc).__name__}: {exc}"
            report.drill = _record(report, actor=actor, started_at=started_at, error=error)
            raise RestoreError(error) from exc
        report.duration_seconds = time.monotonic() - clock
    finally:
        if scratch is not None and scratch_dir is None:
            engines.drop_database(scratch)
        if scratch_dir is not None:
            scratch_dir.cleanup()
    report.drill = _record(report, actor=actor, started_at=started_at)
    return report


def backup_restore_rds(*, actor: Actor, reference: str, instance_id: str) -> dict[str, Any]:
    """Restore an RDS snapshot backup into a new instance ``instance_id`` and wait until it is
    available; records the restore (its duration is the time RDS took). Returns the instance's
    description. The erasure ledger is replayed separately, once the instance's URL is known
    (``manage.py replay_erasure_ledger``)."""
    from deployments.backups import rds

    conf = backup_conf.get()
    row = _row(reference)
    if row is None or row.mode != Backup.Mode.RDS or row.state != Backup.State.SUCCEEDED:
        raise RestoreRefused(f"no succeeded RDS snapshot backup {reference!r}")
    report = RestoreReport(
        backup_uuid=str(row.uuid),
        kind=RestoreDrill.Kind.RESTORE,
        target=f"rds://{instance_id}",
        rto_seconds=int(conf.rto.total_seconds()),
    )
    started_at = timezone.now()
    clock = time.monotonic()
    try:
        instance = rds.instance_restore(row.storage_key, instance_id, conf)
    except rds.RdsError as exc:
        report.duration_seconds = time.monotonic() - clock
        _record(report, actor=actor, started_at=started_at, error=str(exc))
        raise RestoreError(str(exc)) from None
    report.duration_seconds = time.monotonic() - clock
    report.drill = _record(report, actor=actor, started_at=started_at)
    return instance


def restore_drill_request(*, actor: Actor, backup: Backup) -> None:
    """Ask a worker for a drill of ``backup`` (audited now; the drill audits its result)."""
    from deployments.backups import tasks
    from llmplatform.audit import AuditAction, audit_record

    if backup.state != Backup.State.SUCCEEDED or backup.mode != Backup.Mode.DUMP:
        raise RestoreRefused(f"{backup} cannot be drilled: only a succeeded dump can")
    label, user_id = actor.label, actor.user.pk if actor.user is not None else None
    with transaction.atomic():
        audit_record(actor=actor, action=AuditAction.BACKUP_DRILL_REQUEST, obj=backup)
        transaction.on_commit(lambda: tasks.run_restore_drill.delay(backup.pk, label, user_id))
