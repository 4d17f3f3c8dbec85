"""``manage.py apply_config FILE``: apply a gateway configuration file (see
``gateway.config_file`` for its shape) to the database, idempotently."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from gateway.config_file import ConfigError, load_config
from gateway.config_services import KINDS, UNCHANGED, ConfigApplyResult, config_apply
from llmplatform.actors import Actor

KIND_LABELS = {
    "provider": "providers",
    "deployment": "deployments",
    "alias": "model aliases",
    "version": "model versions",
    "tier": "tiers",
    "scanner": "scanners",
}


class Command(BaseCommand):
    help = (
        "Create or update tiers, providers, deployments, model aliases and external scanners "
        "from a YAML file. "
        "Running it again with the same file changes nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="the YAML configuration file")
        parser.add_argument(
            "--dry-run", action="store_true", help="show what would change, and write nothing"
        )
        parser.add_argument(
            "--prune",
            action="store_true",
            help="disable aliases the file does not name, and set the weight of versions it "
            "does not list to 0",
        )
        parser.add_argument(
            "--actor",
            default="apply_config",
            help="who is applying, for the audit log (default: apply_config)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        path = options["file"]
        try:
            config = load_config(path)
        except ConfigError as exc:
            raise CommandError(f"{path} is not valid, nothing was applied:\n{exc}") from None
        try:
            result = config_apply(
                actor=Actor.system(options["actor"]),
                config=config,
                prune=options["prune"],
                dry_run=options["dry_run"],
            )
        except ConfigError as exc:  # what only the database can tell (an unknown tenant)
            raise CommandError(f"{path} cannot be applied, nothing was applied:\n{exc}") from None
        self.report(path, result, verbosity=options["verbosity"])

    def report(self, path: str, result: ConfigApplyResult, *, verbosity: int) -> None:
        if result.dry_run:
            self.stdout.write(f"Dry run of {path}: nothing was written.")
        else:
            self.stdout.write(f"Applied {path}.")
        counts = result.counts()
        for kind in KINDS:
            count = counts[kind]
            parts = [
                f"{count['created']} created",
                f"{count['updated']} updated",
                f"{count['unchanged']} unchanged",
            ]
            if count["disabled"]:
                parts.append(f"{count['disabled']} disabled")
            self.stdout.write(f"  {KIND_LABELS[kind] + ':':<16}{', '.join(parts)}")
        if verbosity >= 1:
            for change in result.changes:
                if change.outcome == UNCHANGED and verbosity < 2:
                    continue
                fields = f" ({', '.join(change.fields)})" if change.fields else ""
                self.stdout.write(f"  {change.outcome} {change.kind} {change.name}{fields}")
        total = len(result.changed)
        verb = "would change" if result.dry_run else "changed"
        style = self.style.SUCCESS if not result.dry_run else self.style.WARNING
        self.stdout.write(style(f"{total} object(s) {verb}."))
