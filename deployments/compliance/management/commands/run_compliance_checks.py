"""Run every live compliance check now, keep the results (as the hourly task does) and print
them as a table. Audited as the operator's run. Exit status 1 with ``--strict`` when a check
fails (for a deployment pipeline)."""

from __future__ import annotations

import getpass

from django.core.management.base import BaseCommand, CommandError

from deployments.compliance import services
from llmplatform.actors import Actor


class Command(BaseCommand):
    help = "Run the live compliance checks, store the evidence and print a table."

    def add_arguments(self, parser) -> None:
        parser.add_argument("codes", nargs="*", help="Only these checks (default: all).")
        parser.add_argument(
            "--strict", action="store_true", help="Exit with status 1 if any check fails."
        )

    def handle(self, *args, codes: list[str], strict: bool, **options) -> None:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = "unknown"
        rows = services.evidence_checks_run(
            actor=Actor.system(f"command:run_compliance_checks ({user})"),
            trigger=services.Trigger.COMMAND,
            codes=codes or None,
        )
        width = max([len(row.check_code) for row in rows] + [5])
        self.stdout.write(f"{'check'.ljust(width)}  {'state':7}  summary")
        for row in rows:
            state = "ok" if row.ok else "FAILING"
            style = self.style.SUCCESS if row.ok else self.style.ERROR
            self.stdout.write(
                f"{row.check_code.ljust(width)}  {style(state.ljust(7))}  {row.summary}"
            )
        failing = sum(1 for row in rows if not row.ok)
        self.stdout.write(f"{len(rows)} checks, {failing} failing; stored as evidence.")
        if strict and failing:
            raise CommandError(f"{failing} compliance check(s) failing", returncode=1)
