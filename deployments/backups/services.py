"""Taking backups and deleting them past the retention. Restores are in
``deployments.backups.restore``, the erasure ledger in ``deployments.backups.ledger``, RDS
snapshots in ``deployments.backups.rds``.

A run is claimed with a conditional UPDATE (``pending -> running``), so two workers given the
same backup run it once; a scheduled run is keyed by its window of half the RPO
(``Backup.slot``: 30 minutes by default), so a beat tick delivered twice finds the same row while
a schedule of every 30 minutes still takes two backups an hour. Every request, start, result
and deletion is audited in the transaction that makes it.
"""

from __future__ import annotations

import base64
import logging
import os
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connections, transaction
from django.db.models import Q
from django.utils import timezone

from deployments.backups import conf as backup_conf
from deployments.backups import engines, envelope, ledger, selectors
from deployments.backups.models import Backup
from deployments.backups.storage import (
    DUMP_NAME,
    MANIFEST_NAME,
    BackupStorageError,
    BackupStore,
    backup_dir,
)
from llmplatform.actors import Actor
from llmplatform.audit import AuditAction, audit_record

logger = logging.getLogger(__name__)

State = Backup.State
SYSTEM_ACTOR = Actor.system("system:backups")
MANIFEST_FORMAT = "llmplatform.backup/1"
ENCRYPTION_SCHEME = "llmp-stream-aes256gcm/1"


class BackupError(Exception):
    """A backup could not be taken, found or deleted."""


def _worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _snapshot(backup: Backup) -> dict[str, Any]:
    return {
        "state": backup.state,
        "mode": backup.mode,
        "engine": backup.engine,
        "size_bytes": backup.size_bytes,
        "sha256": backup.sha256,
        "storage_key": backup.storage_key,
        "encryption_key_id": backup.encryption_key_id,
        "error": backup.error[:300],
    }


# --------------------------------------------------------------------------- requesting


def scheduled_slot(now: datetime, rpo: timedelta) -> str:
    """The window of half the RPO that ``now`` falls in, e.g. ``2025-01-31T13:30``."""
    window = max(int(rpo.total_seconds() // 120), 1)  # minutes
    now = now.astimezone(UTC)
    minutes = (now.hour * 60 + now.minute) // window * window
    return f"{now:%Y-%m-%d}T{minutes // 60:02d}:{minutes % 60:02d}"


def backup_request(
    *, actor: Actor, trigger: str = Backup.Trigger.MANUAL, slot: str | None = None
) -> Backup:
    """A pending backup (audited). With ``slot``, the one of that slot if it exists already."""
    conf = backup_conf.get()
    requested_by = actor.label
    with transaction.atomic():
        if slot is not None:
            backup, created = Backup.objects.get_or_create(
                slot=slot,
                defaults={"trigger": trigger, "mode": conf.mode, "requested_by": requested_by},
            )
        else:
            backup = Backup.objects.create(
                trigger=trigger, mode=conf.mode, requested_by=requested_by
            )
            created = True
        if created:
            audit_record(
                actor=actor,
                action=AuditAction.BACKUP_REQUEST,
                obj=backup,
                after={"trigger": trigger, "mode": conf.mode, "slot": slot},
            )
    return backup


def backup_request_now(*, actor: Actor) -> Backup:
    """The admin's "back up now": a pending manual backup (audited), run by a worker after the
    commit (at once, in this process, when Celery runs tasks eagerly)."""
    from deployments.backups import tasks

    with transaction.atomic():
        backup = backup_request(actor=actor, trigger=Backup.Trigger.MANUAL)
        transaction.on_commit(lambda: tasks.run_backup.delay(backup.pk))
    return backup


# --------------------------------------------------------------------------- running


def backup_run(backup_id: int) -> bool:
    """Claim the pending backup and take it. Returns False without doing anything when another
    run claimed it first (or it is done). Failures are recorded on the row, not raised."""
    now = timezone.now()
    worker = _worker()
    with transaction.atomic():
        claimed = Backup.objects.filter(pk=backup_id, state=State.PENDING).update(
            state=State.RUNNING, started_at=now, worker=worker
        )
        if not claimed:
            return False
        backup = Backup.objects.get(pk=backup_id)
        audit_record(
            actor=SYSTEM_ACTOR,
            action=AuditAction.BACKUP_START,
            obj=backup,
            after={"worker": worker, "mode": backup.mode},
        )
    conf = backup_conf.get()
    try:
        if backup.mode == Backup.Mode.RDS:
            from deployments.backups import rds

            fields = rds.snapshot_take(backup, conf)
        else:
            fields = _take_dump(backup, conf)
    except Exception as exc:  # recorded and audited; the next scheduled run tries again
        error = f"{type(exc).__name__}: {exc}"[:2000]
        logger.error("backup %s failed: %s", backup.uuid, error)
        with transaction.atomic():
            Backup.objects.filter(pk=backup.pk, state=State.RUNNING, worker=worker).update(
                state=State.FAILED, finished_at=timezone.now(), error=error
            )
            backup.refresh_from_db()
            audit_record(
                actor=SYSTEM_ACTOR,
                action=AuditAction.BACKUP_FAIL,
                obj=backup,
                after=_snapshot(backup),
            )
        return True
    with transaction.atomic():
        Backup.objects.filter(pk=backup.pk, state=State.RUNNING, worker=worker).update(
            state=State.SUCCEEDED, error="", **fields
        )
        backup.refresh_from_db()
        audit_record(
            actor=SYSTEM_ACTOR,
            action=AuditAction.BACKUP_SUCCEED,
            obj=backup,
            after=_snapshot(backup),
        )
    return True


def _take_dump(backup: Backup, conf: backup_conf.BackupSettings) -> dict[str, Any]:
    """Dump, encrypt and upload in one stream (the plaintext of a PostgreSQL dump never touches
    the disk), then write the manifest. Returns the row's new fields."""
    store = BackupStore(conf)
    # Erasures not uploaded yet go first: the ledger must be ahead of every backup.
    ledger.erasure_ledger_upload(store=store)
    backup_uuid = str(backup.uuid)
    assert backup.started_at is not None
    directory = backup_dir(backup.started_at, backup_uuid)
    data_key, wrapped, master_key_id = envelope.new_data_key(backup_uuid)
    settings_dict = connections["default"].settings_dict
    uploaded = False
    try:
        with engines.dump(settings_dict, conf) as source:
            reader = envelope.EncryptingReader(source.stream, data_key)
            store.upload_stream(directory + DUMP_NAME, reader)
            uploaded = True
    except Exception:
        if uploaded:  # the dump tool failed after its output was stored: not a backup
            try:
                store.delete([directory + DUMP_NAME])
            except BackupStorageError:
                logger.warning("could not delete the partial dump %s", directory + DUMP_NAME)
        raise
    finished = timezone.now()
    fields = {
        "engine": source.engine,
        "finished_at": finished,
        "size_bytes": reader.ciphertext_bytes,
        "dump_bytes": reader.plaintext_bytes,
        "sha256": reader.sha256.hexdigest(),
        "storage_key": directory + DUMP_NAME,
        "encryption_key_id": master_key_id,
        "wrapped_key": wrapped,
        "table_counts": source.counts,
        "checksums": source.checksums,
    }
    store.put_json(
        directory + MANIFEST_NAME,
        {
            "format": MANIFEST_FORMAT,
            "uuid": backup_uuid,
            "mode": Backup.Mode.DUMP,
            "trigger": backup.trigger,
            "requested_by": backup.requested_by,
            "engine": source.engine,
            "started_at": backup.started_at.isoformat(),
            "finished_at": finished.isoformat(),
            "dump_key": directory + DUMP_NAME,
            "size_bytes": reader.ciphertext_bytes,
            "dump_bytes": reader.plaintext_bytes,
            "sha256": fields["sha256"],
            "encryption": {
                "scheme": ENCRYPTION_SCHEME,
                "master_key_id": master_key_id,
                "wrapped_key": base64.b64encode(wrapped).decode(),
            },
            "table_counts": source.counts,
            "checksums": source.checksums,
        },
    )
    return fields


def backups_fail_stalled(*, now: datetime | None = None) -> int:
    """Mark runs that have been running longer than ``LLMP_BACKUP_STALL_MINUTES`` failed (their
    worker died); the next scheduled run takes a new backup."""
    conf = backup_conf.get()
    now = now or timezone.now()
    failed = 0
    for backup in Backup.objects.filter(state=State.RUNNING, started_at__lt=now - conf.stall):
        with transaction.atomic():
            if Backup.objects.filter(pk=backup.pk, state=State.RUNNING).update(
                state=State.FAILED, finished_at=now, error="stalled: its worker stopped"
            ):
                backup.refresh_from_db()
                audit_record(
                    actor=SYSTEM_ACTOR,
                    action=AuditAction.BACKUP_FAIL,
                    obj=backup,
                    after=_snapshot(backup),
                )
                failed += 1
    return failed


def backup_scheduled(*, now: datetime | None = None) -> Backup | None:
    """The hourly run: the backup of this hour, taken unless it was already. None when
    backups are not configured."""
    conf = backup_conf.get()
    if not conf.configured:
        logger.warning(
            "scheduled backup skipped: %s is not set",
            "LLMP_BACKUP_RDS_INSTANCE" if conf.mode == "rds" else "LLMP_BACKUP_BUCKET",
        )
        return None
    now = now or timezone.now()
    backups_fail_stalled(now=now)
    backup = backup_request(
        actor=SYSTEM_ACTOR, trigger=Backup.Trigger.SCHEDULED, slot=scheduled_slot(now, conf.rpo)
    )
    backup_run(backup.pk)
    backup.refresh_from_db()
    return backup


# --------------------------------------------------------------------------- retention


@dataclass
class PruneResult:
    deleted: list[str] = field(default_factory=list)  # uuids
    kept_last_good: str | None = None
    ledger_entries: int = 0


def _dir_time(directory: str) -> datetime | None:
    try:
        return datetime.strptime(directory.split("/")[1][:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except (IndexError, ValueError):
        return None


def _delete_row(backup: Backup | None, *, backup_uuid: str, reason: str, actor: Actor) -> None:
    with transaction.atomic():
        if backup is not None:
            before = _snapshot(backup)
            repr_ = str(backup)
            Backup.objects.filter(pk=backup.pk).delete()
        else:
            before, repr_ = {"in_database": False}, f"backup {backup_uuid[:8]}"
        audit_record(
            actor=actor,
            action=AuditAction.BACKUP_DELETE,
            object_type="backups.Backup",
            object_id=str(backup.pk) if backup else "",
            object_repr=repr_,
            before={**before, "uuid": backup_uuid},
            after={"reason": reason},
        )


def backups_prune(*, actor: Actor = SYSTEM_ACTOR, now: datetime | None = None) -> PruneResult:
    """Delete backups started before the retention (default 7 days), in the store (or RDS) and
    in the table, each deletion audited. The newest good backup is kept whatever its age: a
    backup job that stopped plus the retention must never leave nothing to restore. Then the
    erasure-ledger entries that no kept backup can need."""
    conf = backup_conf.get()
    now = now or timezone.now()
    cutoff = now - conf.retention
    result = PruneResult()
    backups_fail_stalled(now=now)
    kept = selectors.last_good_backup()
    kept_uuid = str(kept.uuid) if kept else None
    result.kept_last_good = (
        kept_uuid if kept and kept.started_at and kept.started_at < cutoff else None
    )
    store = BackupStore(conf) if conf.bucket else None
    reason = f"older than the retention ({conf.retention.days} days)"

    if store is not None:
        directories: dict[str, list[str]] = {}
        for item in store.list("backups/"):
            directory = "/".join(item.key.split("/")[:2]) + "/"
            directories.setdefault(directory, []).append(item.key)
        for directory, keys in directories.items():
            started = _dir_time(directory)
            backup_uuid = directory.rstrip("/").split("/")[1][17:]
            if started is None or started >= cutoff or backup_uuid == kept_uuid:
                continue
            row = Backup.objects.filter(uuid=backup_uuid).first() if _is_uuid(backup_uuid) else None
            if row is not None and row.state == State.RUNNING:
                continue
            store.delete(keys)
            _delete_row(row, backup_uuid=backup_uuid, reason=reason, actor=actor)
            result.deleted.append(backup_uuid)

    expired = Backup.objects.filter(
        Q(started_at__lt=cutoff) | Q(started_at__isnull=True, created_at__lt=cutoff)
    ).exclude(state=State.RUNNING)
    if kept is not None:
        expired = expired.exclude(pk=kept.pk)
    for backup in expired:
        if backup.mode == Backup.Mode.RDS and backup.storage_key:
            from deployments.backups import rds

            rds.snapshot_delete(backup.storage_key, conf)
        elif backup.storage_key and store is not None:
            directory = backup.storage_key.rsplit("/", 1)[0] + "/"
            store.delete([directory + DUMP_NAME, directory + MANIFEST_NAME])
        _delete_row(backup, backup_uuid=str(backup.uuid), reason=reason, actor=actor)
        result.deleted.append(str(backup.uuid))

    if conf.mode == Backup.Mode.RDS and conf.rds_instance:
        from deployments.backups import rds

        for snapshot_id in rds.snapshots_older_than(cutoff, conf, keep=kept):
            rds.snapshot_delete(snapshot_id, conf)
            _delete_row(None, backup_uuid=snapshot_id, reason=reason, actor=actor)
            result.deleted.append(snapshot_id)

    oldest = (
        Backup.objects.filter(state=State.SUCCEEDED)
        .order_by("started_at")
        .values_list("started_at", flat=True)
        .first()
    )
    horizon = min(oldest or cutoff, cutoff) - ledger.MARGIN
    result.ledger_entries = ledger.erasure_ledger_prune(before=horizon, store=store, actor=actor)
    return result


def _is_uuid(value: str) -> bool:
    import uuid

    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------- after a restore


def backups_reconcile(*, store: BackupStore, actor: Actor = SYSTEM_ACTOR) -> dict[str, int]:
    """After a restore, make the table agree with the store: rows for every backup in the store
    (taken after the restored one, or the restored one itself, which the dump caught while it
    ran), and runs the dump caught unfinished marked failed."""
    # The store is read first: no network wait inside the transaction, which holds the
    # table's rows and the audit row together.
    manifests = [m for m in store.manifests() if m.get("format") == MANIFEST_FORMAT]
    stored = {manifest["uuid"] for manifest in manifests}
    created = updated = 0
    with transaction.atomic():
        for manifest in manifests:
            fields = {
                "state": State.SUCCEEDED,
                "mode": manifest["mode"],
                "engine": manifest["engine"],
                "started_at": datetime.fromisoformat(manifest["started_at"]),
                "finished_at": datetime.fromisoformat(manifest["finished_at"]),
                "size_bytes": manifest["size_bytes"],
                "dump_bytes": manifest["dump_bytes"],
                "sha256": manifest["sha256"],
                "storage_key": manifest["dump_key"],
                "encryption_key_id": manifest["encryption"]["master_key_id"],
                "wrapped_key": base64.b64decode(manifest["encryption"]["wrapped_key"]),
                "table_counts": manifest["table_counts"],
                "checksums": manifest["checksums"],
                "error": "",
            }
            row = Backup.objects.filter(uuid=manifest["uuid"]).first()
            if row is None:
                Backup.objects.create(
                    uuid=manifest["uuid"],
                    trigger=manifest.get("trigger", "manual"),
                    requested_by=manifest.get("requested_by", SYSTEM_ACTOR.label),
                    **fields,
                )
                created += 1
            elif row.state != State.SUCCEEDED:
                Backup.objects.filter(pk=row.pk).update(**fields)
                updated += 1
        interrupted = (
            Backup.objects.filter(state__in=[State.PENDING, State.RUNNING], mode=Backup.Mode.DUMP)
            .exclude(uuid__in=list(stored))
            .update(
                state=State.FAILED,
                finished_at=timezone.now(),
                error="interrupted: the database was restored from a backup taken "
                "while this run was pending or running",
            )
        )
        counts = {"created": created, "updated": updated, "interrupted": interrupted}
        audit_record(
            actor=actor,
            action=AuditAction.BACKUP_RECONCILE,
            object_type="backups.Backup",
            object_repr="backups table after a restore",
            after=counts,
        )
    return counts
