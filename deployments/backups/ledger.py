"""The erasure ledger: every erasure of a data subject is written down where it survives losing
the database, so a restore from a backup taken before the erasure can erase the subject again.

* ``privacy.signals.subject_erased`` is sent inside the erasure's transaction;
  ``erasure_ledger_append`` (connected in ``BackupsConfig.ready``) writes a row in the same
  transaction, and after the commit puts one object in the backup store,
  ``ledger/<erased at>-<tenant id>-<subject hash>.json``. A row whose upload failed (store
  unreachable) stays pending and is uploaded by the next backup run, before its dump.
* An entry holds the tenant id and the keyed hash of the subject's external id
  (``privacy.crypto.subject_hmac(external_id, purpose="external_id")``, HMAC-SHA256 with
  ``LLMP_SUBJECT_HMAC_KEY``): enough to find the subject again in a restored database (by
  hashing its live subjects' ids with the same key), not enough to name the person without
  that key. The external id itself is never stored; the key must be kept (and not rotated)
  while backups older than a rotation are kept.
* ``erasure_ledger_replay`` runs after a restore: each entry newer than the backup (less a
  margin for erasures that committed while the dump started) whose subject is live in the
  restored database is erased again through the data map (``llmplatform.datamap.erase_all``),
  audited there. Replaying is idempotent: an erased subject is not live any more.
* Entries older than every backup still kept (less the margin) can never be needed: the daily
  prune deletes them from the store and the table.
"""

from __future__ import annotations

import contextvars
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import DatabaseError, transaction
from django.utils import timezone

from deployments.backups import conf as backup_conf
from deployments.backups.models import ErasureLedgerEntry
from deployments.backups.storage import BackupStore
from llmplatform import datamap
from llmplatform.actors import Actor
from llmplatform.audit import AuditAction, audit_record
from llmplatform.models import Tenant

logger = logging.getLogger(__name__)

REPLAY_ACTOR = Actor.system("system:backups.erasure_ledger")
PRUNE_ACTOR = Actor.system("system:backups")
# Erasures stamped up to this long before a backup started are replayed too: an erasure's
# time is taken before its transaction commits, so one may miss a snapshot taken after it.
# Replaying an erasure that the backup already holds finds no live subject and does nothing.
MARGIN = timedelta(hours=24)
_KEY = re.compile(r"^ledger/(\d{8}T\d{12}Z)-(\d+)-([0-9a-f]{64})\.json$")
_STAMP = "%Y%m%dT%H%M%S%fZ"

_replaying: contextvars.ContextVar[bool] = contextvars.ContextVar("ledger_replaying", default=False)


@dataclass(frozen=True, slots=True)
class LedgerRecord:
    storage_key: str
    tenant_id: int
    subject_hash: str
    erased_at: datetime


def ledger_key(tenant_id: int, subject_hash: str, erased_at: datetime) -> str:
    return f"ledger/{erased_at.astimezone(UTC):{_STAMP}}-{tenant_id}-{subject_hash}.json"


def parse_ledger_key(key: str) -> LedgerRecord | None:
    match = _KEY.match(key)
    if match is None:
        return None
    erased_at = datetime.strptime(match.group(1), _STAMP).replace(tzinfo=UTC)
    return LedgerRecord(key, int(match.group(2)), match.group(3), erased_at)


# --------------------------------------------------------------------------- writing


def on_subject_erased(
    sender: Any, *, tenant_id: int, subject_hash: str, erased_at: datetime, **kwargs: Any
) -> None:
    """Receiver of ``privacy.signals.subject_erased``."""
    erasure_ledger_append(tenant_id=tenant_id, subject_hash=subject_hash, erased_at=erased_at)


def erasure_ledger_append(
    *, tenant_id: int, subject_hash: str, erased_at: datetime
) -> ErasureLedgerEntry | None:
    """Write the entry in the caller's (the erasure's) transaction; upload it after the commit.
    Erasures replayed from the ledger are not written again."""
    if _replaying.get():
        return None
    entry = ErasureLedgerEntry.objects.create(
        storage_key=ledger_key(tenant_id, subject_hash, erased_at),
        tenant_id=tenant_id,
        subject_hash=subject_hash,
        erased_at=erased_at,
    )
    transaction.on_commit(lambda: erasure_ledger_upload(entry_ids=[entry.pk]), robust=True)
    return entry


def erasure_ledger_upload(
    *, entry_ids: list[int] | None = None, store: BackupStore | None = None
) -> int:
    """Upload pending entries (the given ones, or all). Returns how many were uploaded. Without
    a configured bucket they stay pending. Safe to run twice: the key is the entry's."""
    if store is None:
        conf = backup_conf.get()
        if not conf.bucket:
            return 0
        store = BackupStore(conf)
    pending = ErasureLedgerEntry.objects.filter(uploaded_at__isnull=True)
    if entry_ids is not None:
        pending = pending.filter(pk__in=entry_ids)
    uploaded = 0
    for entry in pending.order_by("erased_at"):
        store.put_json(
            entry.storage_key,
            {
                "format": "llmplatform.erasure-ledger/1",
                "tenant_id": entry.tenant_id,
                "subject_hash": entry.subject_hash,
                "erased_at": entry.erased_at.isoformat(),
            },
        )
        ErasureLedgerEntry.objects.filter(pk=entry.pk, uploaded_at__isnull=True).update(
            uploaded_at=timezone.now()
        )
        uploaded += 1
    return uploaded


# --------------------------------------------------------------------------- reading


def erasure_ledger_since(since: datetime, *, store: BackupStore | None) -> list[LedgerRecord]:
    """Entries erased at or after ``since``: those in the store, and those in this database's
    table (which may hold some not uploaded yet), without duplicates, oldest first."""
    records: dict[str, LedgerRecord] = {}
    if store is not None:
        start_after = f"ledger/{(since - timedelta(microseconds=1)).astimezone(UTC):{_STAMP}}"
        for item in store.list("ledger/", start_after=start_after):
            record = parse_ledger_key(item.key)
            if record is not None and record.erased_at >= since:
                records[record.storage_key] = record
    try:
        for entry in ErasureLedgerEntry.objects.filter(erased_at__gte=since):
            records.setdefault(
                entry.storage_key,
                LedgerRecord(
                    entry.storage_key, entry.tenant_id, entry.subject_hash, entry.erased_at
                ),
            )
    except DatabaseError:
        # The platform's database is the one being restored (empty, or not migrated yet): the
        # store is the whole ledger.
        pass
    return sorted(records.values(), key=lambda record: (record.erased_at, record.storage_key))


# --------------------------------------------------------------------------- replaying


@dataclass
class ReplayResult:
    entries: int = 0
    erased: int = 0
    absent: int = 0


def erasure_ledger_replay(
    records: list[LedgerRecord], *, actor: Actor = REPLAY_ACTOR
) -> ReplayResult:
    """Erase again, in the current database, every subject of ``records`` that is live there.
    Each erasure runs the whole data map in one transaction with its audit row."""
    from privacy import crypto
    from privacy.models import DataSubject

    result = ReplayResult(entries=len(records))
    by_tenant: dict[int, dict[str, LedgerRecord]] = {}
    for record in records:
        by_tenant.setdefault(record.tenant_id, {})[record.subject_hash] = record
    token = _replaying.set(True)
    try:
        for tenant_id, wanted in by_tenant.items():
            tenant = Tenant.objects.filter(pk=tenant_id).first()
            found: dict[str, str] = {}
            live = (
                DataSubject.objects.for_tenant(tenant_id)
                .filter(erased_at__isnull=True)
                .values_list("external_id", flat=True)
            )
            for live_id in live.iterator(chunk_size=5000):
                hashed = crypto.subject_hmac(live_id, purpose="external_id")
                if hashed in wanted:
                    found[hashed] = live_id
            for subject_hash, record in wanted.items():
                external_id = found.get(subject_hash)
                if external_id is None:
                    result.absent += 1
                    continue
                with transaction.atomic():
                    counts = datamap.erase_all(tenant_id, external_id)
                    audit_record(
                        actor=actor,
                        action=AuditAction.ERASURE_LEDGER_REPLAY,
                        object_type="privacy.DataSubject",
                        object_id="",
                        object_repr=f"subject {subject_hash[:12]}… of tenant {tenant_id}",
                        tenant=tenant,
                        after={"erased_at": record.erased_at.isoformat(), "counts": counts},
                    )
                result.erased += 1
    finally:
        _replaying.reset(token)
    return result


def erasure_ledger_record_locally(records: list[LedgerRecord]) -> int:
    """Put entries read from the store into this database's table (after a restore, so the
    admin lists them all)."""
    now = timezone.now()
    created = ErasureLedgerEntry.objects.bulk_create(
        [
            ErasureLedgerEntry(
                storage_key=r.storage_key,
                tenant_id=r.tenant_id,
                subject_hash=r.subject_hash,
                erased_at=r.erased_at,
                uploaded_at=now,
            )
            for r in records
        ],
        ignore_conflicts=True,
    )
    return len(created)


# --------------------------------------------------------------------------- pruning


def erasure_ledger_prune(
    *, before: datetime, store: BackupStore | None, actor: Actor = PRUNE_ACTOR
) -> int:
    """Delete entries erased before ``before`` (no kept backup is older), in the store and the
    table. One audit row per run."""
    keys: list[str] = []
    if store is not None:
        for item in store.list("ledger/"):
            record = parse_ledger_key(item.key)
            if record is None:
                continue
            if record.erased_at >= before:
                break  # keys are in time order
            keys.append(item.key)
        if keys:
            store.delete(keys)
    with transaction.atomic():
        # Pending rows (never uploaded) are kept whatever their age: they are the only copy.
        deleted, _ = ErasureLedgerEntry.objects.filter(
            erased_at__lt=before, uploaded_at__isnull=False
        ).delete()
        count = max(len(keys), deleted)
        if count:
            audit_record(
                actor=actor,
                action=AuditAction.ERASURE_LEDGER_PRUNE,
                object_type="backups.ErasureLedgerEntry",
                object_repr=f"{count} ledger entries erased before {before:%Y-%m-%d %H:%M}",
                after={"before": before.isoformat(), "store_objects": len(keys), "rows": deleted},
            )
    return count
