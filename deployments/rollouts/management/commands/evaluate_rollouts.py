"""``manage.py evaluate_rollouts``: run the rollout guard and the canary schedule once (what the
Celery beat task does every 15 s), or every ``--interval`` seconds until interrupted (for the
embedded default, which has no beat)."""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand

from deployments.rollouts import services


class Command(BaseCommand):
    help = "Evaluate live rollouts: roll back failing candidates, advance scheduled stages."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--interval", type=float, default=0, help="Repeat every this many seconds (0: once)."
        )

    def handle(self, *args, interval: float = 0, **options) -> None:
        while True:
            outcomes = services.evaluate_live_rollouts()
            summary = (
                ", ".join(f"{k}: {v}" for k, v in sorted(outcomes.items())) or "no live rollouts"
            )
            self.stdout.write(summary)
            if interval <= 0:
                return
            time.sleep(interval)
