"""How long the retention purge takes to delete 1,000,000 expired conversation records on
PostgreSQL.

    .venv/bin/python bench/purge.py                    # 1,000,000 expired + 100,000 live rows
    .venv/bin/python bench/purge.py --rows 200000 --batch-size 10000

It creates the scratch database ``llmp_purge_bench`` on 127.0.0.1:5432 (user postgres, trust
auth), migrates it with the production settings (``LLMP_ENV=production``), bulk-inserts the
rows in SQL (``generate_series``; expired and live rows interleaved, ciphertext-sized values),
runs ``privacy.services.purge_expired_conversations`` as the Celery task does, prints seconds,
rows/s, batches and the longest batch (the longest any row lock is held), checks that only
expired rows went, and drops the database.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from run import PLATFORM_ENV_PREFIXES, production_settings

BASE_DIR = Path(__file__).resolve().parent.parent
ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
BENCH_DB = "llmp_purge_bench"


def admin_execute(sql: str) -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql)


def production_env(data_dir: str) -> None:
    for name in list(os.environ):
        if name.startswith(PLATFORM_ENV_PREFIXES):
            del os.environ[name]
    os.environ.update(
        {
            **production_settings(),
            "ALLOWED_HOSTS": "127.0.0.1",
            "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{BENCH_DB}",
            "LLMP_DATA_DIR": data_dir,
        }
    )


def fill(rows: int, live: int) -> None:
    """``rows`` expired and ``live`` unexpired records, interleaved, for 1,000 subjects."""
    from django.db import connection

    total = rows + live
    # Every (total / live)-th row is live, so the expired ones are spread across the table.
    every = max(total // live, 2) if live else 0
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO llmplatform_tenant (name, slug, is_active, created_at) "
            "VALUES ('bench', 'bench', true, now()) RETURNING id"
        )
        tenant_id = cursor.fetchone()[0]
        cursor.execute(
            "INSERT INTO privacy_datasubject (tenant_id, external_id, email_hmac, do_not_sell, "
            "created_at) SELECT %s, 'user-' || s, '', false, now() "
            "FROM generate_series(1, 1000) s",
            [tenant_id],
        )
        cursor.execute("SELECT min(id) FROM privacy_datasubject")
        first_subject = cursor.fetchone()[0]
        live_row = f"(i %% {every} = 0 AND i / {every} <= {live})" if live else "false"
        # About the size of real records: two AES-GCM ciphertexts of a few hundred bytes.
        cursor.execute(
            f"""
            INSERT INTO privacy_conversation
              (tenant_id, subject_id, alias, request_id, prompt_ciphertext, response_ciphertext,
               key_id, created_at, expires_at)
            SELECT %s, %s + (i %% 1000), 'chat', 'req-' || i,
                   decode(repeat(md5(i::text), 6), 'hex'),
                   decode(repeat(md5((i + 1)::text), 10), 'hex'),
                   'dk:' || (i %% 1000),
                   now() - interval '40 days',
                   CASE WHEN {live_row}
                        THEN now() + interval '20 days' + i * interval '1 millisecond'
                        ELSE now() - interval '10 days' + i * interval '1 millisecond' END
            FROM generate_series(1, %s) i
            """,
            [tenant_id, first_subject, total],
        )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE privacy_conversation")
        cursor.execute("CHECKPOINT")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="expired rows")
    parser.add_argument("--live", type=int, default=100_000, help="unexpired rows kept")
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--keep-db", action="store_true", help="do not drop the database")
    parser.add_argument(
        "--hold-snapshot",
        action="store_true",
        help="keep another transaction's snapshot open during the purge (a long report query, "
        "a lagging replica): deleted rows then stay visible to it and cannot be cleaned",
    )
    args = parser.parse_args()

    admin_execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
    admin_execute(f"CREATE DATABASE {BENCH_DB}")
    data_dir = tempfile.mkdtemp(prefix="llmp-purge-bench-")
    production_env(data_dir)
    sys.path.insert(0, str(BASE_DIR))
    try:
        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connection, connections

        from privacy.models import Conversation, PurgeRun
        from privacy.services import purge_expired_conversations

        call_command("migrate", verbosity=0)
        started = time.perf_counter()
        fill(args.rows, args.live)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_size_pretty(pg_total_relation_size('privacy_conversation'))")
            size = cursor.fetchone()[0]
        print(
            f"inserted {args.rows:,} expired + {args.live:,} live rows ({size}) in "
            f"{time.perf_counter() - started:.1f} s"
        )

        holder = None
        if args.hold_snapshot:
            holder = psycopg.connect(ADMIN_URL.rsplit("/", 1)[0] + f"/{BENCH_DB}")
            holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            holder.execute("SELECT count(*) FROM privacy_datasubject")
        batch_seconds: list[float] = []
        started = time.perf_counter()
        run = purge_expired_conversations(
            batch_size=args.batch_size, on_batch=lambda n, s: batch_seconds.append(s)
        )
        elapsed = time.perf_counter() - started
        if holder is not None:
            holder.close()
        remaining_expired = Conversation.objects.filter(expires_at__lt=run.started_at).count()
        remaining = Conversation.objects.count()
        again = purge_expired_conversations(batch_size=args.batch_size)

        print()
        print("| measure | value |")
        print("|---|---|")
        print(f"| PostgreSQL | {connection.pg_version // 10000} |")
        print(f"| expired rows deleted | {run.deleted:,} |")
        print(f"| batch size | {args.batch_size:,} |")
        print(f"| another snapshot held open | {'yes' if args.hold_snapshot else 'no'} |")
        print(f"| batches | {run.batches} |")
        print(f"| total seconds | {elapsed:.2f} |")
        print(f"| rows per second | {run.deleted / elapsed:,.0f} |")
        print(f"| batch seconds: median | {statistics.median(batch_seconds):.3f} |")
        ordered = sorted(batch_seconds)
        p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
        print(f"| batch seconds: p95 | {p95:.3f} |")
        print(f"| longest batch (longest lock hold) | {max(batch_seconds):.3f} s |")
        print(f"| live rows left (expected {args.live:,}) | {remaining:,} |")
        print(f"| expired rows left | {remaining_expired} |")
        print(f"| second run deleted | {again.deleted} |")
        print(f"| PurgeRun rows | {PurgeRun.objects.count()} |")
        ok = (
            run.deleted == args.rows
            and remaining == args.live
            and again.deleted == 0
            and remaining_expired == 0
        )
        connections.close_all()
        return 0 if ok else 1
    finally:
        if not args.keep_db:
            with contextlib.suppress(Exception):
                admin_execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")


if __name__ == "__main__":
    sys.exit(main())
