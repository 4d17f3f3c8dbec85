"""Point-in-time recovery (pgBackRest) of a PostgreSQL database of at least 1 GiB: measured RPO
and RTO.

    .venv/bin/python bench/backup_pitr.py                        # about 1.2 GiB
    .venv/bin/python bench/backup_pitr.py --usage-rows 200000 --conversations 20000   # quick

Needs pgbackrest and PostgreSQL 15's server binaries (``/usr/lib/postgresql/15/bin``; run as
root, the cluster runs as ``postgres``). It starts what ``tests/test_backups_pitr.py`` starts:
moto's S3 server behind TLS (in this process) and a scratch cluster archiving its WAL to a
pgBackRest repository in it (encrypted, bundled, lz4), migrates the platform's schema into it,
then:

1. takes a full backup of the empty platform (as ``pitr_setup --create-stanza`` does);
2. fills the database in SQL as ``bench/backup.py`` does (usage records, incompressible
   conversation records), every WAL segment archived as it closes; times how long the archive
   takes to catch up once the load stops;
3. measures the RPO as the compliance check does: the age of the newest archived segment, once
   right after ``pgbackrest check`` (a segment switch) and once after a quiet minute
   (``archive_timeout`` is 60 s);
4. takes a differential backup, timed;
5. runs a restore drill to the end of the archive (``restore_backup --to-time latest
   --drill``: restore, WAL replay, promotion, the platform's tables counted, the erasure
   ledger replayed, the cluster stopped and removed), timed: the RTO.

Everything is in a temporary directory, removed at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from backup import fill, human
from purge import BASE_DIR
from run import PLATFORM_ENV_PREFIXES, production_settings

DB = "llmp_bench_pitr"


def report_wal(connection) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT archived_count FROM pg_stat_archiver")
        return f"{cursor.fetchone()[0]} WAL segments of 16 MiB archived in all"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--usage-rows", type=int, default=1_300_000)
    parser.add_argument("--conversations", type=int, default=240_000)
    parser.add_argument("--quiet-seconds", type=int, default=70)
    args = parser.parse_args()

    sys.path.insert(0, str(BASE_DIR))
    from tests import pitr_support

    missing = pitr_support.missing_tools()
    if missing:
        print(f"bench: {missing}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="llmp-pitr-bench-"))
    work.chmod(0o755)
    pitr_support.give_to_owner(work)
    port = pitr_support.free_port()
    for name in list(os.environ):
        if name.startswith((*PLATFORM_ENV_PREFIXES, "AWS_")):
            del os.environ[name]
    with pitr_support.moto_tls_server(work) as s3:
        os.environ.update(
            {
                **production_settings(),
                "ALLOWED_HOSTS": "127.0.0.1",
                "DATABASE_URL": f"postgres://postgres@{urllib.parse.quote(str(work), safe='')}"
                f":{port}/{DB}",
                "DATABASE_POOL": "false",
                "LLMP_DATA_DIR": str(work / "platform"),
                "AWS_ACCESS_KEY_ID": "bench",
                "AWS_SECRET_ACCESS_KEY": "bench",
                "AWS_REGION": "eu-west-1",
                "AWS_CA_BUNDLE": str(s3.ca_file),
                "LLMP_BACKUP_BUCKET": "llmp-bench-pitr",
                "LLMP_BACKUP_ENDPOINT_URL": s3.endpoint,
                "LLMP_BACKUP_PREFIX": "bench/",
                "LLMP_PITR_STANZA": "bench",
                "LLMP_PITR_S3_ENDPOINT": s3.endpoint,
                "LLMP_PITR_CA_FILE": str(s3.ca_file),
                "LLMP_PITR_S3_KEY": "bench",
                "LLMP_PITR_S3_KEY_SECRET": "bench",
                "LLMP_PITR_CIPHER_PASS": "bench-cipher-pass-" + "x" * 20,
                "LLMP_PITR_PG_HOST": str(work),
                "LLMP_PITR_PG_PORT": str(port),
                "LLMP_PITR_PG_DATA": str(work / "data"),
                "LLMP_PITR_PG_BIN": str(pitr_support.PG_BIN),
                "LLMP_PITR_CONFIG": str(work / "pgbackrest" / "pgbackrest.conf"),
                **({"LLMP_PITR_RUN_AS": pitr_support.RUN_AS} if pitr_support.RUN_AS else {}),
            }
        )
        cluster = None
        try:
            import boto3
            import django

            django.setup()
            from django.core.management import call_command
            from django.db import connection

            from deployments.backups import conf, pitr
            from llmplatform import datamap
            from llmplatform.actors import Actor

            settings = conf.pitr_get()
            s3_client = boto3.client("s3", region_name="eu-west-1", endpoint_url=s3.endpoint)
            s3_client.create_bucket(
                Bucket="llmp-bench-pitr",
                CreateBucketConfiguration={"LocationConstraint": "eu-west-1"},
            )
            pitr.write_config(settings)
            cluster = pitr_support.init_cluster(
                work, settings=pitr.server_settings(settings), env=pitr.secret_env(), port=port
            )
            cluster.psql(f'CREATE DATABASE "{DB}"')
            call_command("migrate", verbosity=0)
            pitr.stanza_create(settings)
            actor = Actor.system("bench")
            full = pitr.pitr_backup_run(actor=actor, kind="full")
            print(f"full backup of the empty platform: {full.duration_seconds:.1f} s")

            clock = time.monotonic()
            filled = fill(args.usage_rows, args.conversations)
            fill_seconds = time.monotonic() - clock
            with connection.cursor() as cursor:
                # Close the segment being written, so "caught up" means every write archived.
                cursor.execute("SELECT pg_walfile_name(pg_switch_wal())")
                current = cursor.fetchone()[0]
            clock = time.monotonic()
            while True:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT last_archived_wal, failed_count FROM pg_stat_archiver")
                    archived, failed = cursor.fetchone()
                if archived and archived >= current:
                    break
                time.sleep(0.5)
            catch_up = time.monotonic() - clock
            print(
                f"database {human(filled['size'])}, filled in {fill_seconds:.0f} s; the WAL "
                f"archive caught up {catch_up:.1f} s after the load stopped "
                f"({failed} failed pushes retried); {report_wal(connection)}"
            )

            datamap.erase_all(filled["tenant"].pk, "user-3")  # an erasure in the ledger
            clock = time.monotonic()
            pitr.run(settings, "check", timeout=600)
            check_seconds = time.monotonic() - clock
            wal = pitr.archived_wal(settings)
            assert wal is not None
            rpo_now = wal.age().total_seconds()
            time.sleep(args.quiet_seconds)
            wal_later = pitr.archived_wal(settings)
            assert wal_later is not None
            rpo_quiet = wal_later.age().total_seconds()
            print(
                f"RPO (age of the newest archived WAL segment): {rpo_now:.1f} s right after a "
                f"segment switch (pgbackrest check {check_seconds:.1f} s), {rpo_quiet:.1f} s "
                f"after {args.quiet_seconds} s with no writes; target "
                f"{settings.rpo.total_seconds():.0f} s"
            )

            diff = pitr.pitr_backup_run(actor=actor, kind="diff")
            assert diff.backup is not None
            print(
                f"differential backup: {diff.duration_seconds:.1f} s, "
                f"{human(diff.backup.size_bytes)} of data, {human(diff.backup.repo_bytes)} "
                "in the repository"
            )
            drill_dir = work / "drill"
            drill_dir.mkdir(mode=0o755)
            pitr_support.give_to_owner(drill_dir)
            report = pitr.pitr_restore(
                actor=actor,
                to_time=None,
                pg_data=str(drill_dir / "data"),
                port=pitr_support.free_port(),
                drill=True,
            )
            print(
                f"RTO (restore drill to the end of the archive, backup set "
                f"{report.backup_label}): {report.duration_seconds:.1f} s against "
                f"{report.rto_seconds} s; {report.tables} tables, {report.rows:,} rows; "
                f"erasure ledger: {report.replay.entries} entries, {report.replay.erased} "
                f"erased again, {report.replay.absent} already erased in the archive"
            )
        finally:
            from django.db import connections

            connections.close_all()
            if cluster is not None:
                cluster.stop(mode="immediate")
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
