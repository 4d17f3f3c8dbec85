"""Create an API key for a tenant and print it once (only its HMAC is stored)."""

from __future__ import annotations

import getpass
import json
from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from gateway import services
from llmplatform.actors import Actor
from llmplatform.errors import DomainError
from llmplatform.models import Tenant


def _cli_actor() -> Actor:
    try:
        return Actor.system(f"cli:{getpass.getuser()}")
    except (KeyError, OSError):  # no passwd entry, as in some containers
        return Actor.system("cli")


class Command(BaseCommand):
    help = "Create an API key for a tenant; the key is printed once and cannot be shown again."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--tenant", required=True, help="Tenant slug.")
        parser.add_argument("--name", required=True, help="What the key is for.")
        parser.add_argument(
            "--scopes",
            default=",".join(services.DEFAULT_SCOPES),
            help="Comma-separated scopes (default: %(default)s).",
        )
        parser.add_argument(
            "--expires-days",
            type=int,
            default=None,
            help="Days until the key expires (default: never).",
        )
        parser.add_argument("--json", action="store_true", help="Write the result as JSON.")

    def handle(self, *args, **options) -> None:
        tenant = Tenant.objects.filter(slug=options["tenant"]).first()
        if tenant is None:
            raise CommandError(f"No tenant with the slug {options['tenant']!r}.")
        scopes = [scope.strip() for scope in options["scopes"].split(",") if scope.strip()]
        expires_days = options["expires_days"]
        if expires_days is not None and expires_days < 1:
            raise CommandError("--expires-days must be at least 1.")
        expires_at = timezone.now() + timedelta(days=expires_days) if expires_days else None
        try:
            key, plaintext = services.api_key_create(
                actor=_cli_actor(),
                tenant=tenant,
                name=options["name"],
                scopes=scopes,
                expires_at=expires_at,
            )
        except DomainError as exc:
            raise CommandError(exc.message) from exc
        if options["json"]:
            self.stdout.write(
                json.dumps(
                    {
                        "tenant": tenant.slug,
                        "name": key.name,
                        "key": plaintext,
                        "display": key.display,
                        "scopes": key.scopes,
                        "expires_at": key.expires_at.isoformat() if key.expires_at else None,
                    }
                )
            )
            return
        expiry = f", expires {key.expires_at:%Y-%m-%d %H:%M} UTC" if key.expires_at else ""
        self.stdout.write(
            f"API key '{key.name}' for tenant '{tenant.slug}' (scopes {', '.join(key.scopes)}"
            f"{expiry}). Shown once: save it now.\n  {plaintext}"
        )
