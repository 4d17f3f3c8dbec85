"""Backups of the platform's database, restore drills, and the erasure ledger.

A ``Backup`` row is the database's own record; the truth a restore needs lives next to the
dump in the backup store (its manifest), because a restore is what you do when the database is
gone. See ``deployments.backups.services``.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from django.db import models


class Backup(models.Model):
    class State(models.TextChoices):
        PENDING = "pending", "pending"
        RUNNING = "running", "running"
        SUCCEEDED = "succeeded", "succeeded"
        FAILED = "failed", "failed"

    class Trigger(models.TextChoices):
        SCHEDULED = "scheduled", "scheduled"
        MANUAL = "manual", "manual"

    class Mode(models.TextChoices):
        DUMP = "dump", "encrypted dump to S3"
        RDS = "rds", "RDS snapshot"

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    state = models.CharField(
        max_length=16, choices=State.choices, default=State.PENDING, db_index=True
    )
    trigger = models.CharField(max_length=16, choices=Trigger.choices)
    # The scheduled run's window of half the RPO ("2025-01-31T13:30"): a second delivery of the
    # same beat tick finds the same row instead of taking a second backup.
    slot = models.CharField(max_length=32, null=True, blank=True, unique=True)
    mode = models.CharField(max_length=8, choices=Mode.choices, default=Mode.DUMP)
    engine = models.CharField(
        max_length=16, blank=True, help_text="postgresql, sqlite, or the RDS engine"
    )
    requested_by = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(
        null=True,
        blank=True,
        db_index=True,
        help_text="The moment the data is from (the snapshot).",
    )
    finished_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=200, blank=True, help_text="Who claimed the run")
    size_bytes = models.BigIntegerField(
        null=True, blank=True, help_text="Size in the store (encrypted)"
    )
    dump_bytes = models.BigIntegerField(null=True, blank=True, help_text="Plaintext dump size")
    sha256 = models.CharField(max_length=64, blank=True, help_text="SHA-256 of the plaintext dump")
    storage_key = models.CharField(
        max_length=500, blank=True, help_text="Object key in the bucket, or the RDS snapshot id"
    )
    encryption_key_id = models.CharField(
        max_length=300,
        blank=True,
        help_text="The master key (local:… or a KMS key ARN) that wrapped the data key",
    )
    wrapped_key = models.BinaryField(null=True, blank=True, editable=False)
    table_counts = models.JSONField(default=dict, blank=True)
    checksums = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["state", "-started_at"])]

    def __str__(self) -> str:
        when = self.started_at or self.created_at
        return f"backup {str(self.uuid)[:8]} of {when:%Y-%m-%d %H:%M} UTC" if when else "backup"

    @property
    def duration(self) -> timedelta | None:
        if self.started_at and self.finished_at:
            return self.finished_at - self.started_at
        return None


class RestoreDrill(models.Model):
    """One restore: a drill into a scratch database, or a real restore. Its duration is the
    measured recovery time (download, decrypt, load, verify, replay erasures)."""

    class Kind(models.TextChoices):
        DRILL = "drill", "drill (scratch database)"
        RESTORE = "restore", "restore"
        PITR = "pitr", "point-in-time restore"
        PITR_DRILL = "pitr-drill", "point-in-time drill (scratch cluster)"

    class Result(models.TextChoices):
        SUCCEEDED = "succeeded", "succeeded"
        FAILED = "failed", "failed"

    backup = models.ForeignKey(
        Backup, null=True, blank=True, on_delete=models.SET_NULL, related_name="drills"
    )
    # Frozen: the backup row goes when the retention deletes it; the drill stays as evidence.
    # A point-in-time restore names pgBackRest's backup set instead, and the moment restored to.
    backup_uuid = models.UUIDField(null=True, blank=True)
    backup_label = models.CharField(max_length=64, blank=True)
    recovery_target = models.DateTimeField(
        null=True, blank=True, help_text="Point-in-time restores: the moment restored to"
    )
    kind = models.CharField(max_length=16, choices=Kind.choices)
    actor = models.CharField(max_length=200)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(db_index=True)
    duration_seconds = models.FloatField()
    rto_seconds = models.PositiveIntegerField(help_text="The RTO at the time of the drill")
    target_database = models.CharField(max_length=300, help_text="Without its password")
    tables_compared = models.PositiveIntegerField(default=0)
    rows_compared = models.BigIntegerField(default=0, help_text="Rows in the source at backup time")
    rows_verified = models.BigIntegerField(
        default=0, help_text="Rows found again after the restore"
    )
    checksums_verified = models.PositiveIntegerField(default=0)
    mismatches = models.JSONField(default=list, blank=True)
    erasures_replayed = models.PositiveIntegerField(default=0)
    result = models.CharField(max_length=16, choices=Result.choices)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-finished_at", "-id"]

    def __str__(self) -> str:
        source = str(self.backup_uuid)[:8] if self.backup_uuid else self.backup_label or "?"
        return f"{self.kind} of backup {source} at {self.finished_at:%Y-%m-%d %H:%M}"

    @property
    def met_rto(self) -> bool:
        return self.result == self.Result.SUCCEEDED and self.duration_seconds <= self.rto_seconds


class ErasureLedgerEntry(models.Model):
    """One erasure, kept so that a restore from a backup taken before it can erase the subject
    again. The copy that counts is the object in the backup store (it survives the database);
    this table lists them quickly and holds entries not yet uploaded.

    Holds no more than is needed to find the subject again: the tenant id and the keyed hash of
    the subject's external id (HMAC-SHA256 with ``LLMP_SUBJECT_HMAC_KEY``, as the retired
    subject row keeps it), never the id itself."""

    storage_key = models.CharField(max_length=300, unique=True)
    tenant_id = models.BigIntegerField()  # not a foreign key: it outlives a deleted tenant
    subject_hash = models.CharField(max_length=64)
    erased_at = models.DateTimeField(db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    uploaded_at = models.DateTimeField(null=True, blank=True, db_index=True)

    class Meta:
        ordering = ["-erased_at"]
        verbose_name_plural = "erasure ledger entries"

    def __str__(self) -> str:
        return f"erasure in tenant {self.tenant_id} at {self.erased_at:%Y-%m-%d %H:%M}"
