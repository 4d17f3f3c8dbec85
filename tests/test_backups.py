"""Backups and restore: encrypted dumps in a real S3-compatible store (moto's server on
loopback), restore round trips into empty databases, the erasure ledger, retention, claims,
RDS snapshots, the compliance checks and the admin.

SQLite round trips run in the normal suite; the PostgreSQL ones (pg_dump / pg_restore) are
marked ``postgres``."""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
import uuid
from datetime import timedelta

import boto3
import pytest
import time_machine
from django.core.management import CommandError, call_command
from django.db import connection, connections
from django.utils import timezone

from deployments import evidence
from deployments.backups import engines, envelope, restore, selectors, services
from deployments.backups.models import Backup, ErasureLedgerEntry, RestoreDrill
from llmplatform import datamap
from llmplatform.actors import Actor
from llmplatform.models import AuditEvent
from privacy import crypto
from privacy import services as privacy_services
from privacy.models import Conversation, DataSubject, SubjectKey

# Tables compared row by row after a round trip.
COMPARED_TABLES = [
    "llmplatform_tenant",
    "llmplatform_membership",
    "auth_user",
    "gateway_apikey",
    "privacy_datasubject",
    "privacy_subjectkey",
    "privacy_conversation",
]


@pytest.fixture
def store(aws_region, monkeypatch, settings):
    """A fresh bucket in moto, configured as the backup store; yields (s3 client, bucket)."""
    s3 = boto3.client("s3", region_name=aws_region, endpoint_url=settings.LLMP_AWS_ENDPOINT_URL)
    bucket = f"backups-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": aws_region})
    monkeypatch.setenv("LLMP_BACKUP_BUCKET", bucket)
    monkeypatch.setenv("LLMP_BACKUP_PREFIX", "site/")
    return s3, bucket


def _keys(s3, bucket: str, prefix: str = "site/") -> list[str]:
    return [
        item["Key"] for item in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    ]


def _subject(tenant, external_id: str, email: str) -> DataSubject:
    """A data subject with a contact email and one stored conversation (both encrypted with
    the subject's data key)."""
    subject = privacy_services.subject_register_email(
        actor=Actor.system("test"), tenant=tenant, external_id=external_id, email=email
    )
    prompt = crypto.encrypt(
        subject, f"prompt of {external_id}", aad=crypto.record_aad(subject, "prompt")
    )
    response = crypto.encrypt(
        subject, f"answer to {external_id}", aad=crypto.record_aad(subject, "response")
    )
    Conversation.objects.create(
        tenant=tenant,
        subject=subject,
        alias="default",
        request_id=f"req-{external_id}",
        prompt_ciphertext=prompt,
        response_ciphertext=response,
        key_id=crypto.ciphertext_key_id(prompt),
        expires_at=timezone.now() + timedelta(days=30),
    )
    return subject


@pytest.fixture
def data(principals, key_a, key_b):
    return {
        "ann": _subject(principals.tenant_a, "user-ann", "ann@example.com"),
        "bea": _subject(principals.tenant_a, "user-bea", "bea@example.com"),
        "cal": _subject(principals.tenant_b, "user-cal", "cal@example.com"),
        "principals": principals,
    }


def _take_backup() -> Backup:
    backup = services.backup_request(actor=Actor.system("test"))
    assert services.backup_run(backup.pk) is True
    backup.refresh_from_db()
    assert backup.state == Backup.State.SUCCEEDED, backup.error
    return backup


def _rows(table: str) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT * FROM "{table}" ORDER BY 1')
        return [
            tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)
            for row in cursor.fetchall()
        ]


def _rows_in(target: dict, table: str) -> list[tuple]:
    with engines.as_default_database(target):
        return _rows(table)


def _decrypted_dump(s3, bucket: str, backup: Backup) -> bytes:
    body = s3.get_object(Bucket=bucket, Key="site/" + backup.storage_key)["Body"]
    key = envelope.unwrap_data_key(
        bytes(backup.wrapped_key), backup.encryption_key_id, str(backup.uuid)
    )
    out = io.BytesIO()
    envelope.decrypt_stream(body.read, key, out)
    return out.getvalue()


def _dump_header() -> bytes:
    return b"PGDMP" if connection.vendor == "postgresql" else b"SQLite format 3"


# --------------------------------------------------------------------------- the file format


def test_the_stream_encryption_round_trips_and_refuses_damage():
    key = os.urandom(32)
    plaintext = os.urandom(10_000)
    reader = envelope.EncryptingReader(io.BytesIO(plaintext), key, chunk_bytes=1024)
    sealed = b""
    while part := reader.read(777):  # read as boto3 does, in parts of another size
        sealed += part
    assert reader.sha256.hexdigest() == hashlib.sha256(plaintext).hexdigest()
    out = io.BytesIO()
    assert envelope.decrypt_stream(io.BytesIO(sealed).read, key, out)[1] == len(plaintext)
    assert out.getvalue() == plaintext

    def fails(blob: bytes, with_key: bytes = key) -> str:
        with pytest.raises(envelope.BackupDecryptionFailed) as caught:
            envelope.decrypt_stream(io.BytesIO(blob).read, with_key, io.BytesIO())
        return str(caught.value)

    record = 5 + 1024 + 16  # flag, length, one full chunk and its tag
    header = envelope.HEADER_BYTES
    assert "truncated" in fails(sealed[: header + record])  # the last chunk cut off
    swapped = (
        sealed[:header]
        + sealed[header + record : header + 2 * record]
        + sealed[header : header + record]
        + sealed[header + 2 * record :]
    )
    assert "does not decrypt" in fails(swapped)  # chunks reordered
    assert "does not decrypt" in fails(sealed, os.urandom(32))  # another key
    assert "not an encrypted" in fails(plaintext)


# --------------------------------------------------------------------------- taking backups


@pytest.mark.django_db(transaction=True)
def test_a_backup_goes_to_s3_encrypted_and_is_recorded(store, data):
    s3, bucket = store
    backup = _take_backup()

    stored = s3.get_object(Bucket=bucket, Key="site/" + backup.storage_key)["Body"].read()
    assert len(stored) == backup.size_bytes > 0
    # Encrypted: neither the dump's header nor any row's text is in the stored object...
    assert _dump_header() not in stored
    assert b"tenant-a" not in stored and b"Tenant A" not in stored
    # ...and it decrypts, with the data key the manifest wraps, to a dump of the database.
    dump = _decrypted_dump(s3, bucket, backup)
    assert dump.startswith(_dump_header())
    assert len(dump) == backup.dump_bytes

    manifest_key = "site/" + backup.storage_key.rsplit("/", 1)[0] + "/manifest.json"
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=manifest_key)["Body"].read())
    assert manifest["uuid"] == str(backup.uuid)
    assert manifest["sha256"] == backup.sha256
    assert manifest["table_counts"]["privacy_datasubject"] == 3
    assert manifest["encryption"]["master_key_id"] == backup.encryption_key_id
    assert backup.encryption_key_id.startswith("local:")
    actions = list(
        AuditEvent.objects.filter(object_type="backups.Backup").values_list("action", flat=True)
    )
    assert sorted(actions) == [
        "backups.backup.request",
        "backups.backup.start",
        "backups.backup.succeed",
    ]


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_claims_of_one_backup_run_it_once(store, principals):
    if connection.vendor != "postgresql":
        # The claim is the same UPDATE on SQLite, but its in-memory test database locks
        # whole tables across threads: the race is run on PostgreSQL.
        pytest.skip("needs postgres for two concurrent connections")
    s3, bucket = store
    backup = services.backup_request(actor=Actor.system("test"))
    barrier = threading.Barrier(2)
    results: list[bool] = []

    def claim() -> None:
        try:
            barrier.wait()
            results.append(services.backup_run(backup.pk))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=claim) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False, True]
    assert AuditEvent.objects.filter(action="backups.backup.start").count() == 1
    assert len([k for k in _keys(s3, bucket) if k.endswith("dump.enc")]) == 1


@pytest.mark.django_db(transaction=True)
def test_a_claimed_backup_is_not_run_again(store, principals):
    s3, bucket = store
    backup = _take_backup()
    assert services.backup_run(backup.pk) is False
    assert AuditEvent.objects.filter(action="backups.backup.start").count() == 1
    assert len([k for k in _keys(s3, bucket) if k.endswith("dump.enc")]) == 1


@pytest.mark.django_db(transaction=True)
def test_the_scheduled_task_backs_up_once_per_hour(store, principals):
    from deployments.backups import tasks

    tick = timezone.now().replace(minute=41, second=0)
    with time_machine.travel(tick):
        tasks.run_scheduled_backup()
    with time_machine.travel(tick + timedelta(minutes=2)):
        tasks.run_scheduled_backup()  # the same beat tick delivered twice
    assert Backup.objects.filter(trigger=Backup.Trigger.SCHEDULED).count() == 1
    # A schedule every 30 minutes (what an RPO of 1 h needs) takes a backup each time.
    with time_machine.travel(tick + timedelta(minutes=30)):
        tasks.run_scheduled_backup()
    assert list(Backup.objects.values_list("state", flat=True)) == ["succeeded"] * 2


@pytest.mark.django_db
def test_without_a_bucket_no_backup_is_taken_and_the_rpo_check_says_why(monkeypatch):
    from deployments.backups import tasks

    monkeypatch.delenv("LLMP_BACKUP_BUCKET", raising=False)
    assert tasks.run_scheduled_backup() is None
    assert not Backup.objects.exists()
    result = evidence.run("backups.within_rpo")
    assert not result.ok
    assert "LLMP_BACKUP_BUCKET" in result.summary


# --------------------------------------------------------------------------- restoring


def _sqlite_target(tmp_path) -> tuple[str, dict]:
    path = tmp_path / "restored.sqlite3"
    return f"sqlite:///{path}", {"ENGINE": "django.db.backends.sqlite3", "NAME": str(path)}


@pytest.mark.django_db(transaction=True)
def test_a_sqlite_restore_round_trip_returns_the_same_data(store, data, tmp_path):
    if connection.vendor != "sqlite":
        pytest.skip("the SQLite round trip (the PostgreSQL one is below)")
    backup = _take_backup()
    url, target = _sqlite_target(tmp_path)

    call_command("restore_backup", str(backup.pk), target_url=url)

    for table in COMPARED_TABLES:
        assert _rows_in(target, table) == _rows(table), table
    drill = RestoreDrill.objects.get()
    assert drill.kind == RestoreDrill.Kind.RESTORE
    assert drill.result == RestoreDrill.Result.SUCCEEDED
    assert drill.rows_verified == drill.rows_compared > 0
    assert drill.checksums_verified >= 5
    assert AuditEvent.objects.filter(action="backups.restore.run").count() == 1
    # The restored database knows its own backup as finished, not as the run the dump caught.
    with engines.as_default_database(target):
        assert Backup.objects.get(uuid=backup.uuid).state == Backup.State.SUCCEEDED


@pytest.mark.django_db(transaction=True)
def test_erased_subjects_stay_erased_after_a_restore(store, data, tmp_path):
    s3, bucket = store
    tenant_a = data["principals"].tenant_a
    _take_backup()
    # After the backup, ann is erased (as an erasure request does, through the data map).
    datamap.erase_all(tenant_a.pk, "user-ann")
    ann = DataSubject.objects.get(pk=data["ann"].pk)
    assert ann.erased_at is not None

    # The ledger is in the store, holding a keyed hash, not the subject's id.
    ledger_keys = _keys(s3, bucket, "site/ledger/")
    assert len(ledger_keys) == 1
    entry = json.loads(s3.get_object(Bucket=bucket, Key=ledger_keys[0])["Body"].read())
    assert entry["tenant_id"] == tenant_a.pk
    assert entry["subject_hash"] == crypto.subject_hmac("user-ann", purpose="external_id")
    assert "user-ann" not in json.dumps(entry) and "user-ann" not in ledger_keys[0]
    assert ErasureLedgerEntry.objects.get().uploaded_at is not None

    # Lose the database's ledger table too: the store's copy is enough.
    ErasureLedgerEntry.objects.all().delete()
    target = _restore_elsewhere(tmp_path)

    with engines.as_default_database(target):
        assert not DataSubject.objects.filter(
            tenant_id=tenant_a.pk, external_id="user-ann", erased_at__isnull=True
        ).exists()
        restored_ann = DataSubject.objects.get(pk=data["ann"].pk)
        assert restored_ann.erased_at is not None and restored_ann.email_ciphertext is None
        assert SubjectKey.objects.get(subject_id=data["ann"].pk).wrapped_key is None
        assert not Conversation.objects.filter(subject_id=data["ann"].pk).exists()
        # Everyone else is back as they were.
        bea = DataSubject.objects.get(pk=data["bea"].pk)
        assert bea.erased_at is None and bea.email_ciphertext is not None
        assert Conversation.objects.filter(subject_id=data["bea"].pk).count() == 1
        assert AuditEvent.objects.filter(action="backups.erasure_ledger.replay").count() == 1
        # The restored table lists the replayed entry.
        assert ErasureLedgerEntry.objects.count() == 1
    assert RestoreDrill.objects.get().erasures_replayed == 1


def _empty_target(tmp_path) -> tuple[str, dict]:
    """A new, empty database of the test's engine (dropped after the test on PostgreSQL)."""
    if connection.vendor == "postgresql":
        target = engines.create_scratch_database(connection.settings_dict)
        _created_databases.append(target)
        return (
            f"postgres://{target['USER']}@{target['HOST']}:{target['PORT']}/{target['NAME']}",
            target,
        )
    return _sqlite_target(tmp_path)


def _restore_elsewhere(tmp_path) -> dict:
    """Restore the latest backup (named by its uuid) into a new, empty database."""
    return _restore_elsewhere_by_uuid(tmp_path, str(selectors.last_good_backup().uuid))


_created_databases: list[dict] = []


@pytest.fixture(autouse=True)
def _drop_created_databases():
    yield
    while _created_databases:
        engines.drop_database(_created_databases.pop())


@pytest.mark.django_db(transaction=True)
def test_a_non_empty_target_is_refused(store, data, tmp_path):
    backup = _take_backup()
    # The platform's own database (the default target) holds data.
    with pytest.raises(CommandError, match="is not empty"):
        call_command("restore_backup", str(backup.pk))
    if connection.vendor == "sqlite":
        url, target = _sqlite_target(tmp_path)
        import sqlite3

        existing = sqlite3.connect(target["NAME"])
        existing.execute("CREATE TABLE keep_me (id integer)")
        existing.close()
        with pytest.raises(CommandError, match="is not empty"):
            call_command("restore_backup", str(backup.pk), target_url=url)
    # Refused before anything was written or recorded.
    assert DataSubject.objects.count() == 3
    assert not RestoreDrill.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_damaged_backup_is_not_restored(store, data, tmp_path):
    s3, bucket = store
    backup = _take_backup()
    key = "site/" + backup.storage_key
    body = bytearray(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    body[len(body) // 2] ^= 0x01
    s3.put_object(Bucket=bucket, Key=key, Body=bytes(body))
    url, target = _empty_target(tmp_path)

    with pytest.raises(CommandError, match="does not decrypt"):
        call_command("restore_backup", str(backup.pk), target_url=url)

    assert engines.is_empty(target)
    drill = RestoreDrill.objects.get()
    assert drill.result == RestoreDrill.Result.FAILED and "does not decrypt" in drill.error


@pytest.mark.django_db(transaction=True)
def test_a_restore_drill_verifies_records_and_drops_its_scratch_database(store, data):
    backup = _take_backup()
    before = psql_databases() if connection.vendor == "postgresql" else None

    report = restore.backup_restore(
        actor=Actor.system("test"), reference=str(backup.pk), drill=True
    )

    assert report.verified and report.rows_verified == report.rows_compared
    drill = RestoreDrill.objects.get()
    assert drill.kind == RestoreDrill.Kind.DRILL and drill.result == "succeeded"
    assert drill.met_rto and drill.duration_seconds == pytest.approx(
        report.duration_seconds, abs=0.01
    )
    if before is not None:
        assert psql_databases() == before  # the scratch database is gone
    check = evidence.run("backups.restore_drill_recent")
    assert check.ok and "met" in check.summary
    assert selectors.last_restore_drill() == drill
    with time_machine.travel(timezone.now() + timedelta(days=91)):
        assert not evidence.run("backups.restore_drill_recent").ok


def psql_databases() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT datname FROM pg_database")
        return {row[0] for row in cursor.fetchall()}


@pytest.mark.django_db(transaction=True)
def test_the_rpo_check_follows_the_age_of_the_last_good_backup(store, principals, monkeypatch):
    assert not evidence.run("backups.within_rpo").ok
    backup = _take_backup()
    result = evidence.run("backups.within_rpo")
    assert result.ok and result.details["backup"] == str(backup.uuid)
    assert selectors.last_good_backup() == backup
    with time_machine.travel(timezone.now() + timedelta(minutes=61)):
        result = evidence.run("backups.within_rpo")
        assert not result.ok and "OUTSIDE" in result.summary
        monkeypatch.setenv("LLMP_BACKUP_RPO_MINUTES", "120")
        assert evidence.run("backups.within_rpo").ok


@pytest.mark.django_db(transaction=True)
def test_a_backup_key_can_be_wrapped_by_kms_and_restored_when_the_database_is_lost(
    store, principals, settings, tmp_path
):
    kms = boto3.client(
        "kms", region_name=settings.AWS_REGION, endpoint_url=settings.LLMP_AWS_ENDPOINT_URL
    )
    crypto.clear_kms_clients()
    arn = kms.create_key(Description="llmp backups test")["KeyMetadata"]["Arn"]
    settings.LLMP_KEY_PROVIDER = "kms"
    settings.LLMP_KMS_KEY_ID = arn
    out = io.StringIO()
    call_command("run_backup", stdout=out)
    backup = Backup.objects.get()
    assert backup.encryption_key_id == arn and "succeeded" in out.getvalue()

    # With the database gone, the store lists the backups by uuid, and a uuid restores.
    Backup.objects.all().delete()
    out = io.StringIO()
    call_command("restore_backup", list=True, stdout=out)
    assert str(backup.uuid) in out.getvalue()
    with pytest.raises(CommandError, match="name it by its uuid"):
        call_command("restore_backup", str(backup.pk))
    target = _restore_elsewhere_by_uuid(tmp_path, str(backup.uuid))
    assert _rows_in(target, "llmplatform_tenant") == _rows("llmplatform_tenant")
    crypto.clear_kms_clients()


def _restore_elsewhere_by_uuid(tmp_path, backup_uuid: str) -> dict:
    url, target = _empty_target(tmp_path)
    call_command("restore_backup", backup_uuid, target_url=url)
    return target


# --------------------------------------------------------------------------- retention


@pytest.mark.django_db(transaction=True)
def test_retention_deletes_old_backups_in_s3_and_the_table(store, data):
    s3, bucket = store
    start = timezone.now()
    with time_machine.travel(start - timedelta(days=8)):
        old = _take_backup()
        datamap.erase_all(data["principals"].tenant_a.pk, "user-ann")  # an old ledger entry
    with time_machine.travel(start - timedelta(days=6)):
        kept = _take_backup()
    assert len([k for k in _keys(s3, bucket) if k.endswith("dump.enc")]) == 2

    result = services.backups_prune()

    assert result.deleted == [str(old.uuid)]
    assert list(Backup.objects.values_list("uuid", flat=True)) == [kept.uuid]
    remaining = _keys(s3, bucket, "site/backups/")
    assert remaining and all(str(kept.uuid) in key for key in remaining)
    deletion = AuditEvent.objects.get(action="backups.backup.delete")
    assert deletion.before["uuid"] == str(old.uuid)
    # The ledger entry is older than every kept backup (and the margin): no restore needs it.
    assert _keys(s3, bucket, "site/ledger/") == []
    assert not ErasureLedgerEntry.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_retention_keeps_the_last_good_backup_however_old(store, principals):
    s3, bucket = store
    with time_machine.travel(timezone.now() - timedelta(days=30)):
        only = _take_backup()
    assert services.backups_prune().deleted == []
    assert Backup.objects.get() == only
    assert any(key.endswith("dump.enc") for key in _keys(s3, bucket))


# --------------------------------------------------------------------------- RDS snapshots


@pytest.mark.django_db(transaction=True)
def test_rds_snapshot_mode_takes_and_expires_snapshots(
    aws_region, monkeypatch, settings, principals
):
    rds = boto3.client("rds", region_name=aws_region, endpoint_url=settings.LLMP_AWS_ENDPOINT_URL)
    instance = f"db-{uuid.uuid4().hex[:8]}"
    rds.create_db_instance(
        DBInstanceIdentifier=instance,
        Engine="postgres",
        DBInstanceClass="db.t3.micro",
        AllocatedStorage=20,
        MasterUsername="llmp",
        MasterUserPassword="not-a-secret-1",
        StorageEncrypted=True,
        KmsKeyId="alias/aws/rds",
    )
    monkeypatch.setenv("LLMP_BACKUP_MODE", "rds")
    monkeypatch.setenv("LLMP_BACKUP_RDS_INSTANCE", instance)
    monkeypatch.delenv("LLMP_BACKUP_BUCKET", raising=False)

    def snapshots() -> set[str]:
        return {
            s["DBSnapshotIdentifier"]
            for s in rds.describe_db_snapshots(
                DBInstanceIdentifier=instance, SnapshotType="manual"
            )["DBSnapshots"]
        }

    start = timezone.now()
    with time_machine.travel(start - timedelta(days=8)):
        old = _take_backup()
    new = _take_backup()
    assert old.mode == Backup.Mode.RDS and old.engine == "postgres"
    assert snapshots() == {old.storage_key, new.storage_key}
    assert old.size_bytes == 20 * 1024**3
    assert evidence.run("backups.within_rpo").ok

    assert services.backups_prune().deleted == [str(old.uuid)]
    assert snapshots() == {new.storage_key}
    assert list(Backup.objects.all()) == [new]

    restored = f"restored-{uuid.uuid4().hex[:6]}"
    call_command("restore_backup", str(new.pk), rds_instance=restored)
    assert rds.describe_db_instances(DBInstanceIdentifier=restored)["DBInstances"]
    assert RestoreDrill.objects.get().target_database == f"rds://{restored}"


# --------------------------------------------------------------------------- admin


@pytest.mark.django_db(transaction=True)
def test_the_admin_shows_the_measured_figures_and_backs_up_now(
    store, principals, admin_client, tmp_path
):
    url = "/admin/backups/backup/"
    page = admin_client.get(url).content.decode()
    assert "Last good backup:" in page and "none" in page

    response = admin_client.post(url + "back-up-now/")
    assert response.status_code == 302
    backup = Backup.objects.get()
    assert backup.state == Backup.State.SUCCEEDED  # Celery runs eagerly in the tests
    assert AuditEvent.objects.get(action="backups.backup.request").actor == "user:admin"
    # The "restore drill" action (a worker runs it: eagerly here).
    response = admin_client.post(url, {"action": "drill_selected", "_selected_action": [backup.pk]})
    assert response.status_code == 302
    assert AuditEvent.objects.filter(action="backups.drill.request").count() == 1
    assert RestoreDrill.objects.get().result == RestoreDrill.Result.SUCCEEDED

    page = admin_client.get(url).content.decode()
    assert 'id="backup-age"' in page and "within" in page
    assert 'id="drill-duration"' in page and "met" in page
    assert admin_client.get("/admin/backups/restoredrill/").status_code == 200
    assert admin_client.get("/admin/backups/erasureledgerentry/").status_code == 200
    assert admin_client.get(url + "back-up-now/").status_code == 405


@pytest.mark.django_db
def test_the_backup_list_runs_a_fixed_number_of_queries(admin_client, monkeypatch):
    from django.db import connection as conn
    from django.test.utils import CaptureQueriesContext

    monkeypatch.setenv("LLMP_BACKUP_BUCKET", "not-used")

    def add(count: int) -> None:
        now = timezone.now()
        for n in range(count):
            Backup.objects.create(
                trigger="scheduled",
                requested_by="test",
                state="succeeded",
                started_at=now - timedelta(hours=n),
                finished_at=now,
                size_bytes=1000 * n,
                encryption_key_id="local:abc",
            )
        RestoreDrill.objects.create(
            backup_uuid=uuid.uuid4(),
            kind="drill",
            actor="test",
            started_at=now,
            finished_at=now,
            duration_seconds=3.5,
            rto_seconds=900,
            target_database="x",
            result="succeeded",
        )

    def queries() -> int:
        with CaptureQueriesContext(conn) as captured:
            assert admin_client.get("/admin/backups/backup/").status_code == 200
            assert admin_client.get("/admin/backups/restoredrill/").status_code == 200
        return len(captured)

    add(2)
    few = queries()
    add(10)
    assert queries() == few


# --------------------------------------------------------------------------- PostgreSQL


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_postgres_restore_round_trip_returns_the_same_data(store, data, tmp_path):
    backup = _take_backup()
    assert backup.engine == "postgresql"
    target = _restore_elsewhere(tmp_path)
    for table in COMPARED_TABLES:
        assert _rows_in(target, table) == _rows(table), table
    drill = RestoreDrill.objects.get()
    assert drill.result == "succeeded" and drill.rows_verified == drill.rows_compared
