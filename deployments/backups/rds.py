"""RDS snapshot mode (``LLMP_BACKUP_MODE=rds``): for a database on Amazon RDS, a backup is a
manual DB snapshot of ``LLMP_BACKUP_RDS_INSTANCE`` (encrypted at rest by RDS with the
instance's KMS key when its storage is encrypted), kept for the same retention. Snapshots this
app takes are named ``llmp-<time>-<backup uuid prefix>``; others are never touched.

A restore creates a new instance from the snapshot (``restore_backup ID --rds-instance NAME``);
point ``replay_erasure_ledger`` at it afterwards (the ledger needs ``LLMP_BACKUP_BUCKET``).
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from deployments.backups.conf import BackupSettings

if TYPE_CHECKING:
    from deployments.backups.models import Backup

SNAPSHOT_PREFIX = "llmp-"


class RdsError(Exception):
    pass


def _client(conf: BackupSettings) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "rds",
        region_name=conf.region,
        endpoint_url=conf.endpoint_url,
        config=Config(
            connect_timeout=5, read_timeout=30, retries={"max_attempts": 5, "mode": "standard"}
        ),
    )


def _call(client: Any, operation: str, **kwargs: Any) -> dict:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return getattr(client, operation)(**kwargs)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        raise RdsError(f"RDS {operation} failed ({code})") from None
    except BotoCoreError as exc:
        raise RdsError(f"RDS {operation} failed ({type(exc).__name__})") from None


def _wait(
    client: Any, describe: str, key: str, identifier: str, list_key: str, deadline: float
) -> dict:
    while True:
        item = _call(client, describe, **{key: identifier})[list_key][0]
        status = item.get("Status") or item.get("DBInstanceStatus")
        if status == "available":
            return item
        if status in ("failed", "incompatible-restore", "incompatible-parameters"):
            raise RdsError(f"{identifier} is {status}")
        if time.monotonic() > deadline:
            raise RdsError(f"{identifier} is still {status}")
        time.sleep(10)


def snapshot_take(backup: Backup, conf: BackupSettings) -> dict[str, Any]:
    """Create the snapshot and wait (up to ``LLMP_BACKUP_RDS_WAIT_MINUTES``) until it is
    available. Returns the backup row's fields."""
    from django.utils import timezone

    if not conf.rds_instance:
        raise RdsError("LLMP_BACKUP_RDS_INSTANCE is not set")
    client = _client(conf)
    assert backup.started_at is not None
    snapshot_id = f"{SNAPSHOT_PREFIX}{backup.started_at:%Y%m%d%H%M%S}-{str(backup.uuid)[:8]}"
    _call(
        client,
        "create_db_snapshot",
        DBSnapshotIdentifier=snapshot_id,
        DBInstanceIdentifier=conf.rds_instance,
        Tags=[{"Key": "llmplatform-backup", "Value": str(backup.uuid)}],
    )
    snapshot = _wait(
        client,
        "describe_db_snapshots",
        "DBSnapshotIdentifier",
        snapshot_id,
        "DBSnapshots",
        time.monotonic() + conf.rds_wait.total_seconds(),
    )
    return {
        "engine": str(snapshot.get("Engine", "rds"))[:16],
        "finished_at": timezone.now(),
        "storage_key": snapshot_id,
        "size_bytes": int(snapshot.get("AllocatedStorage") or 0) * 1024**3,
        "encryption_key_id": snapshot.get("KmsKeyId", "") if snapshot.get("Encrypted") else "",
    }


def snapshot_delete(snapshot_id: str, conf: BackupSettings) -> None:
    from botocore.exceptions import ClientError

    try:
        _client(conf).delete_db_snapshot(DBSnapshotIdentifier=snapshot_id)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "DBSnapshotNotFound":
            raise RdsError("RDS delete_db_snapshot failed") from None


def snapshots_older_than(
    cutoff: datetime, conf: BackupSettings, *, keep: Backup | None
) -> list[str]:
    """This app's snapshots of the instance taken before ``cutoff`` (except ``keep``'s)."""
    client = _client(conf)
    found, marker = [], None
    while True:
        kwargs: dict[str, Any] = {
            "DBInstanceIdentifier": conf.rds_instance,
            "SnapshotType": "manual",
        }
        if marker:
            kwargs["Marker"] = marker
        page = _call(client, "describe_db_snapshots", **kwargs)
        for snapshot in page.get("DBSnapshots", []):
            identifier = snapshot["DBSnapshotIdentifier"]
            created = snapshot.get("SnapshotCreateTime")
            if (
                identifier.startswith(SNAPSHOT_PREFIX)
                and created is not None
                and created < cutoff
                and (keep is None or identifier != keep.storage_key)
            ):
                found.append(identifier)
        marker = page.get("Marker")
        if not marker:
            return found


def instance_restore(
    snapshot_id: str, instance_id: str, conf: BackupSettings, *, wait: bool = True
) -> dict[str, Any]:
    """A new DB instance from the snapshot (RDS restores only into a new instance, so the
    target is empty by construction). Returns its description (endpoint)."""
    client = _client(conf)
    _call(
        client,
        "restore_db_instance_from_db_snapshot",
        DBInstanceIdentifier=instance_id,
        DBSnapshotIdentifier=snapshot_id,
    )
    if not wait:
        return _call(client, "describe_db_instances", DBInstanceIdentifier=instance_id)[
            "DBInstances"
        ][0]
    return _wait(
        client,
        "describe_db_instances",
        "DBInstanceIdentifier",
        instance_id,
        "DBInstances",
        time.monotonic() + conf.rds_wait.total_seconds(),
    )
