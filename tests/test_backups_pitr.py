"""Point-in-time recovery with pgBackRest: a scratch PostgreSQL cluster started here archives its
WAL to moto's S3 server over TLS; a restore to a moment between two sets of writes brings back
exactly the first, and an erasure made after that moment is replayed from the erasure ledger.

Needs pgbackrest and PostgreSQL's server binaries (``make test`` installs pgbackrest as root on
Debian); without them the tests say they were skipped, and fail under LLMP_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from deployments import evidence
from deployments.backups import conf as backup_conf
from deployments.backups import engines, pitr
from deployments.backups.models import ErasureLedgerEntry, RestoreDrill
from llmplatform.actors import Actor
from llmplatform.models import AuditEvent, Tenant
from privacy import services as privacy_services
from privacy.models import DataSubject
from tests import pitr_support

CIPHER_PASS = "correct-horse-battery-staple-" + "x" * 16


def _require_tools() -> None:
    missing = pitr_support.missing_tools()
    if missing:
        if os.environ.get("LLMP_REQUIRE_SERVICES") == "1":
            pytest.fail(f"LLMP_REQUIRE_SERVICES=1 but {missing}", pytrace=False)
        pytest.skip(missing)


@pytest.fixture
def pitr_repo(aws_region, monkeypatch):
    """An S3 bucket behind TLS, and LLMP_PITR_* pointing pgBackRest at it; also the dump store
    (where the erasure ledger lives) in the same moto, over plain HTTP. Yields the work dir."""
    _require_tools()
    # Not pytest's tmp_path: the cluster's owner must reach it, and pytest's is private to us.
    work = Path(tempfile.mkdtemp(prefix="llmp-pitr-"))
    work.chmod(0o755)
    pitr_support.give_to_owner(work)
    with pitr_support.moto_tls_server(work) as s3:
        bucket = f"pitr-{uuid.uuid4().hex[:10]}"
        client = boto3.client(
            "s3", region_name=aws_region, endpoint_url=s3.endpoint, verify=str(s3.ca_file)
        )
        client.create_bucket(
            Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": aws_region}
        )
        for name, value in {
            "LLMP_BACKUP_BUCKET": bucket,
            "LLMP_BACKUP_PREFIX": "site/",
            "LLMP_PITR_STANZA": "platform",
            "LLMP_PITR_S3_ENDPOINT": s3.endpoint,
            "LLMP_PITR_CA_FILE": str(s3.ca_file),
            "LLMP_PITR_S3_KEY": "testing",
            "LLMP_PITR_S3_KEY_SECRET": "testing",
            "LLMP_PITR_CIPHER_PASS": CIPHER_PASS,
            "LLMP_PITR_PG_HOST": str(work),
            "LLMP_PITR_PG_DATA": str(work / "data"),
            "LLMP_PITR_PG_BIN": str(pitr_support.PG_BIN),
            "LLMP_PITR_CONFIG": str(work / "pgbackrest" / "pgbackrest.conf"),
        }.items():
            monkeypatch.setenv(name, value)
        if pitr_support.RUN_AS:
            monkeypatch.setenv("LLMP_PITR_RUN_AS", pitr_support.RUN_AS)
        yield work
    shutil.rmtree(work, ignore_errors=True)


def _create(tenant: Tenant, external_id: str) -> None:
    privacy_services.subject_register_email(
        actor=Actor.system("test"),
        tenant=tenant,
        external_id=external_id,
        email=f"{external_id}@example.com",
    )


def _live_ids(database: dict) -> set[str]:
    with engines.as_default_database(database):
        return set(
            DataSubject.objects.filter(erased_at__isnull=True).values_list("external_id", flat=True)
        )


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.django_db
def test_a_point_in_time_restore_brings_back_exactly_the_rows_before_it_and_keeps_erasures(
    pitr_repo, monkeypatch
):
    work = pitr_repo
    conf = backup_conf.pitr_get()
    pitr.write_config(conf)
    # The archive_command reads the repository's secrets from the server's environment.
    source = pitr_support.init_cluster(
        work, settings=pitr.server_settings(conf), env=pitr.secret_env()
    )
    monkeypatch.setenv("LLMP_PITR_PG_PORT", str(source.port))
    conf = backup_conf.pitr_get()
    restored_dir = work / "restored"
    restored_port = pitr_support.free_port()
    name = connection.settings_dict["NAME"]
    try:
        pitr_support.copy_database(connection.settings_dict, source, name)
        pitr.stanza_create(conf)
        full = pitr.pitr_backup_run(actor=Actor.system("test"), kind="full")
        assert full.backup is not None and full.backup.kind == "full"
        audited = AuditEvent.objects.get(action="backups.pitr_backup.succeed")
        assert audited.after["label"] == full.backup.label
        # The scheduled task finds this recent full backup and takes no other.
        from deployments.backups import tasks

        assert tasks.run_pitr_backup("full") == full.backup.label
        assert [b.label for b in pitr.info(conf).backups] == [full.backup.label]

        platform = source.settings_dict(name)
        with engines.as_default_database(platform):
            tenant = Tenant.objects.create(name="Tenant P", slug="tenant-p")
            _create(tenant, "user-a1")
            _create(tenant, "user-a2")
        # The moment to restore to: the next whole second after rows A, before rows B.
        now = datetime.fromtimestamp(float(source.psql("SELECT extract(epoch FROM now())")), UTC)
        to_time = now.replace(microsecond=0) + timedelta(seconds=1)
        while datetime.now(UTC) < to_time + timedelta(milliseconds=300):
            time.sleep(0.05)
        with engines.as_default_database(platform):
            _create(tenant, "user-b1")
            # After the moment restored to, user-a2 is erased: the ledger must erase them again.
            subject = DataSubject.objects.get(tenant=tenant, external_id="user-a2")
            privacy_services.subject_erase(actor=Actor.system("test"), subject=subject)
            assert ErasureLedgerEntry.objects.get().uploaded_at is not None
        pitr.run(conf, "check", timeout=120)  # switches WAL and waits until it is archived

        # The measured RPO: the newest archived WAL segment is seconds old.
        rpo = evidence.run("backups.within_rpo")
        assert rpo.ok, rpo.summary
        assert "newest archived WAL segment" in rpo.summary
        assert rpo.details["age_seconds"] <= 300 and rpo.details["rpo_seconds"] == 300

        source.stop(mode="immediate")  # the disaster
        out = _call(
            "restore_backup",
            "--to-time",
            f"{to_time:%Y-%m-%d %H:%M:%S}",
            "--pg-data",
            str(restored_dir),
            "--pg-port",
            str(restored_port),
        )
        assert f"to {to_time:%Y-%m-%d %H:%M:%S} UTC" in out and "erasures replayed: 1" in out

        restored = pitr_support.ScratchCluster(restored_dir, work, restored_port)
        database = restored.settings_dict(name)
        # Exactly rows A, and user-a2 erased again (rows B are after the moment restored to).
        assert _live_ids(database) == {"user-a1"}
        with engines.as_default_database(database):
            assert DataSubject.objects.filter(erased_at__isnull=False).count() == 1
            assert not DataSubject.objects.filter(external_id="user-b1").exists()
            assert AuditEvent.objects.filter(action="backups.erasure_ledger.replay").count() == 1
        record = RestoreDrill.objects.get(kind="pitr")
        assert record.result == "succeeded" and record.erasures_replayed == 1
        assert record.recovery_target == to_time and record.backup_label == full.backup.label
        assert record.duration_seconds > 0 and record.tables_compared > 10
        restored.stop()

        # A drill (the end of the archive, a scratch cluster, removed afterwards) measures RTO.
        out = _call("restore_backup", "--to-time", "latest", "--drill")
        assert "a scratch cluster (stopped and removed)" in out
        drill = RestoreDrill.objects.get(kind="pitr-drill")
        check = evidence.run("backups.restore_drill_recent")
        assert check.ok and check.details["drill"] == drill.pk, check.summary
        assert check.details["duration_seconds"] == drill.duration_seconds

        # The wrong pass: a clear error, no traceback, no secret, and the RPO check says so.
        monkeypatch.setenv("LLMP_PITR_CIPHER_PASS", "not-the-pass")
        with pytest.raises(CommandError) as refused:
            _call("restore_backup", "--to-time", "latest", "--drill")
        assert "LLMP_PITR_CIPHER_PASS is not the pass" in str(refused.value)
        assert "not-the-pass" not in str(refused.value)
        assert CIPHER_PASS not in str(refused.value)
        failed = evidence.run("backups.within_rpo")
        assert not failed.ok and "cannot be decrypted" in failed.summary
    finally:
        for data in (restored_dir, source.data):
            pitr_support.ScratchCluster(data, work, 0).stop(mode="immediate")


def _call(*args: str) -> str:
    import io

    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


# --------------------------------------------------------------------------- quick


@pytest.mark.django_db
def test_a_bad_target_time_is_a_clear_error(monkeypatch, tmp_path):
    _require_tools()  # past its first argument checks, restore_backup needs pgbackrest
    monkeypatch.setenv("LLMP_PITR_STANZA", "platform")
    monkeypatch.setenv("LLMP_PITR_BUCKET", "bucket")
    for bad in ("yesterday", "2025-13-01 00:00:00", "2025-01-01T10:00:00Z", "2025-01-01"):
        with pytest.raises(CommandError) as caught:
            _call("restore_backup", "--to-time", bad, "--pg-data", str(tmp_path), "--pg-port", "1")
        assert "'YYYY-MM-DD HH:MM:SS' (UTC) or 'latest'" in str(caught.value)
    with pytest.raises(CommandError, match="needs --pg-data"):
        _call("restore_backup", "--to-time", "2025-01-01 10:00:00")
    with pytest.raises(CommandError, match="in the future"):
        _call(
            "restore_backup",
            "--to-time",
            f"{datetime.now(UTC) + timedelta(days=1):%Y-%m-%d %H:%M:%S}",
            "--pg-data",
            str(tmp_path / "new"),
            "--pg-port",
            "5999",
        )


@pytest.mark.django_db
def test_a_restore_refuses_a_data_directory_that_is_not_empty(monkeypatch, tmp_path):
    _require_tools()  # past its first argument checks, restore_backup needs pgbackrest
    monkeypatch.setenv("LLMP_PITR_STANZA", "platform")
    monkeypatch.setenv("LLMP_PITR_BUCKET", "bucket")
    (tmp_path / "PG_VERSION").write_text("15")
    with pytest.raises(CommandError, match="is not empty"):
        _call(
            "restore_backup",
            "--to-time",
            "2025-01-01 10:00:00",
            "--pg-data",
            str(tmp_path),
            "--pg-port",
            "5999",
        )
    assert (tmp_path / "PG_VERSION").read_text() == "15"


def test_no_secret_is_in_the_config_or_the_archive_command(monkeypatch, tmp_path, settings):
    settings.DATA_DIR = tmp_path
    monkeypatch.setenv("LLMP_PITR_STANZA", "platform")
    monkeypatch.setenv("LLMP_PITR_BUCKET", "bucket")
    monkeypatch.setenv("LLMP_PITR_CIPHER_PASS", "cipher-pass-value")
    monkeypatch.setenv("LLMP_PITR_S3_KEY", "AKIAKEYVALUE")
    monkeypatch.setenv("LLMP_PITR_S3_KEY_SECRET", "s3-secret-value")
    conf = backup_conf.pitr_get()
    text = pitr.render_config(conf) + repr(pitr.server_settings(conf))
    for secret in ("cipher-pass-value", "AKIAKEYVALUE", "s3-secret-value"):
        assert secret not in text
    assert "repo1-cipher-type=aes-256-cbc" in text and "repo1-retention-full=2" in text
    assert pitr.secret_env() == {
        "PGBACKREST_REPO1_CIPHER_PASS": "cipher-pass-value",
        "PGBACKREST_REPO1_S3_KEY": "AKIAKEYVALUE",
        "PGBACKREST_REPO1_S3_KEY_SECRET": "s3-secret-value",
    }
    # Without keys, the instance's IAM role; without a pass, nothing runs unencrypted.
    monkeypatch.delenv("LLMP_PITR_S3_KEY")
    monkeypatch.delenv("LLMP_PITR_S3_KEY_SECRET")
    assert "repo1-s3-key-type=auto" in pitr.render_config(backup_conf.pitr_get())
    monkeypatch.delenv("LLMP_PITR_CIPHER_PASS")
    with pytest.raises(pitr.PitrError, match="always encrypted"):
        pitr.secret_env()


def test_an_http_endpoint_is_refused_at_start(monkeypatch):
    from django.core.exceptions import ImproperlyConfigured

    monkeypatch.setenv("LLMP_PITR_S3_ENDPOINT", "http://s3.example.org")
    with pytest.raises(ImproperlyConfigured, match="LLMP_PITR_S3_ENDPOINT"):
        backup_conf.pitr_get()


def test_full_and_differential_backups_are_scheduled_and_idle_without_a_stanza(monkeypatch):
    from deployments.backups import tasks
    from llmplatform.celery import app

    scheduled = {
        entry["args"][0]
        for entry in app.conf.beat_schedule.values()
        if entry["task"] == "backups.run_pitr_backup"
    }
    assert scheduled == {"full", "diff"}
    monkeypatch.delenv("LLMP_PITR_STANZA", raising=False)
    assert tasks.run_pitr_backup("diff") is None
