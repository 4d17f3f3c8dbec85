"""How long one evaluation of the rollout guard (the 15-second Celery task's work for one
rollout) and one computation of a deployment checklist take on PostgreSQL, with a busy alias.

    .venv/bin/python bench/rollout_guard.py                  # 2,000,000 usage rows in total
    .venv/bin/python bench/rollout_guard.py --rows 500000 --window-rows 50000

It creates the scratch database ``llmp_rollout_bench`` on 127.0.0.1:5432 (user postgres, trust
auth), migrates it with the production settings, inserts ``--rows`` usage records spread over the
last 8 days across four aliases, of which ``--window-rows`` fall in the guard's 5-minute window
for each of the rolled-out alias's two versions (with 1 % and 5 % errors), starts a canary
rollout, then times ``services.rollout_evaluate`` (the guard: both versions' error rates and
P95 latency) and ``checks.checklist_status`` (the default checklist's automatic items), each the
median of 5 runs after one warm-up. The database is dropped afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from purge import BASE_DIR, admin_execute, production_env

BENCH_DB = "llmp_rollout_bench"


def fill(rows: int, window_rows: int) -> None:
    from django.db import connection

    background = rows - 2 * window_rows
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO llmplatform_tenant (name, slug, is_active, created_at) "
            "VALUES ('bench', 'bench', true, now()) RETURNING id"
        )
        tenant_id = cursor.fetchone()[0]
        columns = (
            "tenant_id, request_id, route, alias, version, deployment, status_code, "
            "error_code, prompt_tokens, completion_tokens, cost, latency_ms, "
            "upstream_latency_ms, streamed, cache_hit, upstream_attempts, "
            "fallback_reason, degraded, pii_redactions, created_at"
        )
        # Everything else: four aliases over the last 8 days.
        cursor.execute(
            f"""
            INSERT INTO gateway_usagerecord ({columns})
            SELECT %s, 'bg-' || i, 'chat.completions',
                   (ARRAY['default', 'fast', 'long', 'code'])[1 + i %% 4], 'v1', 'dep',
                   CASE WHEN i %% 100 = 0 THEN 502 ELSE 200 END, '', 50, 100, 0.0002,
                   200 + (i %% 900), 150, false, i %% 10 = 0, 1, '', false, 0,
                   now() - interval '8 days' * random()
            FROM generate_series(1, %s) i""",
            [tenant_id, background],
        )
        # The rolled-out alias in the guard's window: stable 1 % errors, candidate 5 %.
        for version, every in (("v1", 100), ("v2", 20)):
            cursor.execute(
                f"""
                INSERT INTO gateway_usagerecord ({columns})
                SELECT %s, '{version}-' || i, 'chat.completions', 'default', %s, 'dep',
                       CASE WHEN i %% {every} = 0 THEN 502 ELSE 200 END, '', 50, 100, 0.0002,
                       200 + (i %% 900), 150, false, false, 1, '', false, 0,
                       now() - interval '4 minutes' * random()
                FROM generate_series(1, %s) i""",
                [tenant_id, version, window_rows],
            )
        cursor.execute("ANALYZE gateway_usagerecord")
        cursor.execute("CHECKPOINT")


def timed(fn, runs: int = 5) -> float:
    fn()  # warm-up
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument(
        "--window-rows",
        type=int,
        default=100_000,
        help="rows per version of the rolled-out alias in the 5-minute window",
    )
    parser.add_argument("--keep-db", action="store_true")
    args = parser.parse_args()

    admin_execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
    admin_execute(f"CREATE DATABASE {BENCH_DB}")
    production_env(tempfile.mkdtemp(prefix="llmp-rollout-bench-"))
    os.environ["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{BENCH_DB}"
    sys.path.insert(0, str(BASE_DIR))
    try:
        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connection, connections
        from django.utils import timezone

        from deployments.rollouts import checks, services
        from deployments.rollouts.models import Rollout
        from gateway.models import ModelAlias, ModelVersion, Provider, ProviderDeployment
        from llmplatform.actors import Actor

        call_command("migrate", verbosity=0)
        started = time.perf_counter()
        fill(args.rows, args.window_rows)
        print(f"inserted {args.rows:,} usage rows in {time.perf_counter() - started:.1f} s")

        provider = Provider.objects.create(
            name="bench", kind="openai", base_url="http://127.0.0.1:9/v1"
        )
        deployment = ProviderDeployment.objects.create(name="dep", provider=provider, model="m")
        alias = ModelAlias.objects.create(name="default")
        v1 = ModelVersion.objects.create(alias=alias, version="v1", deployment=deployment)
        v2 = ModelVersion.objects.create(alias=alias, version="v2", deployment=deployment, weight=0)
        rollout = services.rollout_create(
            actor=Actor.system("bench"),
            alias=alias,
            stable_version=v1,
            candidate_version=v2,
            max_error_rate_increase=10.0,
        )
        services.rollout_start(actor=Actor.system("bench"), rollout=rollout)
        Rollout.objects.filter(pk=rollout.pk).update(started_at=timezone.now() - timedelta(hours=2))
        rollout.refresh_from_db()

        outcome = services.rollout_evaluate(rollout_id=rollout.pk)
        evaluate = timed(lambda: services.rollout_evaluate(rollout_id=rollout.pk))
        figures = Rollout.objects.get(pk=rollout.pk).last_figures
        checklist = rollout.checklist
        checklist_seconds = timed(lambda: checks.checklist_status(checklist))

        print()
        print("| measure | value |")
        print("|---|---|")
        print(f"| PostgreSQL | {connection.pg_version // 10000} |")
        print(f"| usage rows in the table | {args.rows:,} |")
        print(f"| rows per version in the 5-min window | {args.window_rows:,} |")
        print(f"| guard outcome | {outcome} |")
        print(f"| measured: candidate | {figures['candidate']} |")
        print(f"| measured: stable | {figures['stable']} |")
        print(f"| one guard evaluation (median of 5) | {evaluate * 1000:.0f} ms |")
        print(f"| one checklist computation (median of 5) | {checklist_seconds * 1000:.0f} ms |")
        connections.close_all()
        return 0 if outcome == "healthy" else 1
    finally:
        if not args.keep_db:
            with contextlib.suppress(Exception):
                admin_execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")


if __name__ == "__main__":
    sys.exit(main())
