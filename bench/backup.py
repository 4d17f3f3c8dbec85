"""Backup and restore drill of a PostgreSQL database of about 1 GB, against the RPO and RTO.

    .venv/bin/python bench/backup.py                       # about 1 GB
    .venv/bin/python bench/backup.py --usage-rows 200000 --conversations 20000   # quick

It creates the scratch database ``llmp_bench_backup`` on 127.0.0.1:5432 (user postgres, trust
auth), migrates it with the production settings, fills it in SQL with usage records
(``generate_series``) and encrypted-looking conversation records (random bytes, as AES-GCM
ciphertext is: incompressible), registers a few data subjects, starts moto's S3 server as a
separate process on loopback, then:

1. takes a backup as the hourly task does (pg_dump --format=custom of an exported snapshot,
   AES-256-GCM streamed in 1 MiB chunks, multipart upload to S3), timed;
2. erases one subject (the erasure ledger gets an entry);
3. runs a restore drill (``restore_backup ID --drill``: download, decrypt, SHA-256 check,
   pg_restore into a new scratch database, row counts of every table and checksums of a few,
   erasure-ledger replay, drop), timed;

prints the figures against the RPO (1 h) and RTO (15 min), and drops the databases, stops
moto and removes its temporary files.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from purge import BASE_DIR, admin_execute
from run import PLATFORM_ENV_PREFIXES, free_port, production_settings

BENCH_DB = "llmp_bench_backup"


def production_env(data_dir: str, endpoint: str, bucket: str) -> None:
    for name in list(os.environ):
        if name.startswith((*PLATFORM_ENV_PREFIXES, "AWS_")):
            del os.environ[name]
    os.environ.update(
        {
            **production_settings(),
            "ALLOWED_HOSTS": "127.0.0.1",
            "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{BENCH_DB}",
            "DATABASE_POOL": "false",
            "LLMP_DATA_DIR": data_dir,
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_REGION": "eu-west-1",
            "LLMP_BACKUP_BUCKET": bucket,
            "LLMP_BACKUP_ENDPOINT_URL": endpoint,
            "LLMP_BACKUP_PREFIX": "bench/",
            "TMPDIR": data_dir,  # the drill's decrypted dump lands here, removed with it
        }
    )


def _value(field, kind: str) -> str:
    """An SQL expression for a usage-record column, by field type (``i`` is the series)."""
    overrides = {
        "created_at": "now() - (i * interval '1 second')",
        "tenant_id": "%(tenant)s",
        "api_key_id": "NULL",
        "request_id": "'req-' || md5(i::text)",
        "route": "'/v1/chat/completions'",
        "alias": "'default'",
        "version": "CASE WHEN i % 20 = 0 THEN 'v2' ELSE 'v1' END",
        "deployment": "'gemma-local'",
        "status_code": "CASE WHEN i % 97 = 0 THEN 502 ELSE 200 END",
        "prompt_tokens": "(i % 900) + 20",
        "completion_tokens": "(i % 400) + 5",
        "cost": "((i % 1000) * 0.0000137)::numeric(14, 8)",
        "latency_ms": "(i % 3000) * 1.7",
        "upstream_latency_ms": "(i % 2900) * 1.6",
    }
    if field.column in overrides:
        return overrides[field.column]
    if kind == "BooleanField":
        return "false"
    if kind in ("CharField", "TextField", "SlugField"):
        return "''"
    if kind.endswith(("IntegerField", "FloatField", "DecimalField")):
        return "0"
    if field.null:
        return "NULL"
    raise SystemExit(f"bench: no value for the usage-record column {field.column} ({kind})")


def fill(usage_rows: int, conversations: int) -> dict:
    """Usage records in SQL, conversations by COPY of random ciphertext-sized bytes."""
    from django.db import connection

    from gateway.models import UsageRecord
    from llmplatform.actors import Actor
    from llmplatform.models import Tenant
    from privacy import services as privacy_services

    tenant = Tenant.objects.create(name="bench", slug="bench")
    subjects = [
        privacy_services.subject_register_email(
            actor=Actor.system("bench"),
            tenant=tenant,
            external_id=f"user-{n}",
            email=f"user{n}@example.com",
        )
        for n in range(20)
    ]
    fields = [f for f in UsageRecord._meta.concrete_fields if f.column != "id"]
    columns = ", ".join(f.column for f in fields)
    values = ", ".join(_value(f, f.get_internal_type()) for f in fields)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {UsageRecord._meta.db_table} ({columns}) "
            f"SELECT {values.replace('%(tenant)s', str(tenant.pk))} "
            f"FROM generate_series(1, {usage_rows}) i"
        )
    # Conversation records: two AES-GCM-sized ciphertexts, random (incompressible) bytes.
    raw = connection.connection
    with (
        raw.cursor() as cursor,
        cursor.copy(
            "COPY privacy_conversation (tenant_id, subject_id, alias, request_id, "
            "prompt_ciphertext, response_ciphertext, key_id, created_at, expires_at) "
            "FROM STDIN"
        ) as copy,
    ):
        for n in range(conversations):
            subject = subjects[n % len(subjects)]
            copy.write_row(
                (
                    tenant.pk,
                    subject.pk,
                    "default",
                    f"req-c{n}",
                    os.urandom(700),
                    os.urandom(1500),
                    f"dk:{subject.pk}",
                    "2025-01-01T00:00:00Z",
                    "2099-01-01T00:00:00Z",
                )
            )
    raw.commit()
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
        cursor.execute("SELECT pg_database_size(current_database())")
        size = cursor.fetchone()[0]
    return {"tenant": tenant, "size": size}


def human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{size:.0f} B"
        size /= 1024
    return f"{size:.1f} GiB"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--usage-rows", type=int, default=1_300_000)
    parser.add_argument("--conversations", type=int, default=200_000)
    parser.add_argument("--keep-db", action="store_true", help="do not drop the database")
    args = parser.parse_args()

    for path in ("/tmp", str(BASE_DIR)):
        free = shutil.disk_usage(path).free
        if free < 6 * 1024**3:
            print(f"bench: only {human(free)} free on {path}; needs about 6 GiB", file=sys.stderr)
            return 2
    data_dir = tempfile.mkdtemp(prefix="llmp-backup-bench-")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    bucket = "llmp-bench-backups"
    moto = subprocess.Popen(
        [str(BASE_DIR / ".venv/bin/moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=data_dir,
        env={**os.environ, "TMPDIR": data_dir},
    )
    admin_execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
    admin_execute(f"CREATE DATABASE {BENCH_DB}")
    production_env(data_dir, endpoint, bucket)
    tempfile.tempdir = data_dir
    sys.path.insert(0, str(BASE_DIR))
    try:
        import boto3
        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connection, connections

        from deployments.backups import conf, restore, services
        from llmplatform import datamap
        from llmplatform.actors import Actor

        deadline = time.monotonic() + 30
        while True:
            try:
                s3 = boto3.client("s3", region_name="eu-west-1", endpoint_url=endpoint)
                s3.create_bucket(
                    Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
                )
                break
            except Exception:
                if time.monotonic() > deadline or moto.poll() is not None:
                    raise
                time.sleep(0.3)

        call_command("migrate", verbosity=0)
        started = time.perf_counter()
        filled = fill(args.usage_rows, args.conversations)
        print(
            f"filled {BENCH_DB}: {human(filled['size'])} ({args.usage_rows:,} usage records, "
            f"{args.conversations:,} conversations) in {time.perf_counter() - started:.0f} s",
            flush=True,
        )

        started = time.perf_counter()
        backup = services.backup_request(actor=Actor.system("bench"))
        services.backup_run(backup.pk)
        backup_seconds = time.perf_counter() - started
        backup.refresh_from_db()
        if backup.state != "succeeded":
            print(f"backup failed: {backup.error}", file=sys.stderr)
            return 1
        print(f"backup {backup.uuid}: {backup_seconds:.1f} s", flush=True)

        datamap.erase_all(filled["tenant"].pk, "user-3")

        report = restore.backup_restore(
            actor=Actor.system("bench"), reference=str(backup.pk), drill=True
        )
        print(f"drill: {report.duration_seconds:.1f} s", flush=True)

        settings = conf.get()
        rows = sum(backup.table_counts.values())
        print()
        print("| measure | value |")
        print("|---|---|")
        print(
            f"| PostgreSQL server / pg_dump | {connection.pg_version // 10000} / "
            f"{Path(settings.pg_dump or '?').name} |"
        )
        print(f"| database size (pg_database_size) | {human(filled['size'])} |")
        print(f"| rows in the backup (all tables) | {rows:,} |")
        print(f"| dump size (pg_dump custom, compressed) | {human(backup.dump_bytes)} |")
        print(f"| stored size (encrypted) | {human(backup.size_bytes)} |")
        print(
            f"| backup: dump + encrypt + upload to S3 (moto, loopback) | {backup_seconds:.1f} s |"
        )
        print(
            f"| backup throughput (database size / time) | "
            f"{human(filled['size'] / backup_seconds)}/s |"
        )
        print(
            f"| restore drill: download + decrypt + pg_restore "
            f"(--jobs {settings.restore_jobs}) + verify + replay | "
            f"{report.duration_seconds:.1f} s |"
        )
        print(f"| rows verified / compared | {report.rows_verified:,} / {report.rows_compared:,} |")
        print(f"| table checksums verified | {report.checksums_verified} |")
        print(f"| erasures replayed | {report.replay.erased} |")
        rto, rpo = settings.rto.total_seconds(), settings.rpo.total_seconds()
        print(
            f"| RTO {rto / 60:.0f} min | drill took {report.duration_seconds / rto:.0%} of it: "
            f"{'met' if report.duration_seconds <= rto else 'NOT met'} |"
        )
        worst = 3600 + backup_seconds
        print(
            f"| RPO {rpo / 60:.0f} min: worst-case loss at the hourly schedule "
            f"(60 min + one run) | {worst / 60:.1f} min: "
            f"{'met' if worst <= rpo else 'NOT met'} |"
        )
        ok = report.verified and report.replay.erased == 1
        connections.close_all()
        return 0 if ok else 1
    finally:
        moto.terminate()
        with contextlib.suppress(Exception):
            moto.wait(timeout=10)
        if not args.keep_db:
            with contextlib.suppress(Exception):
                admin_execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
