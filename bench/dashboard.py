"""How long the officer's dashboard (the admin index) takes with a lot behind it.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python bench/dashboard.py [--tenants 200] [--usage 200000] [--events 20000] \\
                                            [--requests 5000] [--runs 20]

Creates a throwaway test database (``test_<name>``, as the test runner does, dropped at the
end), fills it with tenants on budgeted tiers, usage records of today, security events,
data-subject requests, deployments and backups, then renders ``/admin/`` ``--runs`` times as a
signed-in officer with a verified second factor. Prints the number of SQL queries per render
and the render time (median and slowest). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "llmplatform.settings")


def populate(args: argparse.Namespace) -> None:
    from django.utils import timezone

    from deployments.backups.models import Backup, RestoreDrill
    from gateway import services
    from gateway.models import Provider, ProviderDeployment, SecurityEvent, Tier, UsageRecord
    from llmplatform.actors import Actor
    from privacy.models import SubjectRequest

    now = timezone.now()
    rng = random.Random(7)
    tier = Tier.objects.create(
        name="bench", daily_budget=Decimal("50"), monthly_budget=Decimal("1000")
    )
    tenants = [
        services.tenant_create(
            actor=Actor.system("bench"), name=f"Tenant {i}", slug=f"tenant-{i}", tier=tier
        )
        for i in range(args.tenants)
    ]
    # Every row is created now (auto_now_add): the worst case, where all of them are today's
    # and this month's and every figure has to add them all up.
    batch = []
    for i in range(args.usage):
        batch.append(
            UsageRecord(
                tenant=rng.choice(tenants),
                request_id=f"r{i}",
                route="chat",
                status_code=200,
                cost=Decimal(rng.randint(1, 5000)) / 10000,
                pii_redactions=rng.choice([0, 0, 0, 1, 2]),
            )
        )
        if len(batch) == 5000:
            UsageRecord.objects.bulk_create(batch)
            batch = []
    UsageRecord.objects.bulk_create(batch)
    SecurityEvent.objects.bulk_create(
        [
            SecurityEvent(
                tenant=rng.choice(tenants),
                kind="prompt_injection",
                action=rng.choice(["blocked", "flagged"]),
                score=0.9,
            )
            for _ in range(args.events)
        ],
        batch_size=5000,
    )
    SubjectRequest.objects.bulk_create(
        [
            SubjectRequest(
                tenant=rng.choice(tenants),
                kind="erasure",
                source="api",
                state=rng.choice(["verified", "completed"]),
                due_at=now + timedelta(days=rng.randint(-10, 40)),
            )
            for _ in range(args.requests)
        ],
        batch_size=5000,
    )
    provider = Provider.objects.create(name="bench", kind="openai", base_url="http://127.0.0.1:9")
    ProviderDeployment.objects.bulk_create(
        [
            ProviderDeployment(name=f"deployment-{i}", provider=provider, model="m")
            for i in range(50)
        ]
    )
    for hours in range(48):
        Backup.objects.create(
            state="succeeded",
            trigger="scheduled",
            requested_by="beat",
            started_at=now - timedelta(hours=hours),
            finished_at=now - timedelta(hours=hours) + timedelta(minutes=2),
        )
    RestoreDrill.objects.create(
        backup_uuid="00000000-0000-0000-0000-000000000000",
        kind="drill",
        actor=Actor.system("bench"),
        started_at=now - timedelta(days=2),
        finished_at=now - timedelta(days=2) + timedelta(minutes=5),
        duration_seconds=300,
        rto_seconds=900,
        target_database="x",
        result="succeeded",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=200)
    parser.add_argument("--usage", type=int, default=200_000)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--requests", type=int, default=5_000)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()

    import django

    django.setup()
    from django.conf import settings
    from django.db import connection
    from django.test import Client
    from django.test.utils import (
        CaptureQueriesContext,
        setup_test_environment,
        teardown_test_environment,
    )

    settings.ALLOWED_HOSTS = ["testserver"]
    setup_test_environment()
    old_name = connection.settings_dict["NAME"]
    connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        started = time.perf_counter()
        populate(args)
        filled = time.perf_counter() - started
        from django.contrib.auth import get_user_model
        from django_otp import DEVICE_ID_SESSION_KEY
        from django_otp.plugins.otp_totp.models import TOTPDevice

        officer = get_user_model().objects.create_superuser("officer", password="x-Bench-4821")
        device = TOTPDevice.objects.create(user=officer, name="bench", confirmed=True)
        client = Client()
        client.force_login(officer)
        session = client.session
        session[DEVICE_ID_SESSION_KEY] = device.persistent_id
        session.save()
        assert client.get("/admin/").status_code == 200  # warm
        timings = []
        for _ in range(args.runs):
            with CaptureQueriesContext(connection) as queries:
                begin = time.perf_counter()
                response = client.get("/admin/")
                timings.append((time.perf_counter() - begin) * 1000)
            assert response.status_code == 200
        engine = connection.vendor
        print(
            f"database: {engine}; {args.tenants} tenants, {args.usage:,} usage records of "
            f"today, {args.events:,} security events, {args.requests:,} subject requests, "
            f"50 deployments, 48 backups (filled in {filled:.0f} s)"
        )
        print(
            f"/admin/ ({args.runs} renders): {len(queries)} SQL queries per render, "
            f"median {statistics.median(timings):.0f} ms, slowest {max(timings):.0f} ms"
        )
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)
        teardown_test_environment()


if __name__ == "__main__":
    main()
