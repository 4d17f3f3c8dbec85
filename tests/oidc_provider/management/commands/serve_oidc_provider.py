"""Create the provider's database, users and the portal's OIDC client, then serve."""

from __future__ import annotations

from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from oauth2_provider.models import Application

from tests.oidc_provider.validator import UNVERIFIED_GROUP


class Command(BaseCommand):
    help = "Serve a throwaway OpenID Connect provider on 127.0.0.1."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, required=True)
        parser.add_argument("--client-id", required=True)
        parser.add_argument("--client-secret", required=True)
        parser.add_argument("--redirect-uri", action="append", required=True)
        parser.add_argument(
            "--user",
            action="append",
            default=[],
            help="username:password:email, or username:password:email:unverified",
        )

    def handle(self, *args, **options):
        call_command("migrate", verbosity=0, interactive=False)
        unverified = Group.objects.get_or_create(name=UNVERIFIED_GROUP)[0]
        for spec in options["user"]:
            parts = spec.split(":")
            if len(parts) not in (3, 4):
                raise CommandError(f"bad --user {spec!r}")
            username, password, email = parts[:3]
            user = User.objects.create_user(username, email=email, password=password)
            if len(parts) == 4 and parts[3] == "unverified":
                user.groups.add(unverified)
        Application.objects.create(
            name="llmplatform portal",
            client_id=options["client_id"],
            client_secret=options["client_secret"],  # hashed on save
            client_type=Application.CLIENT_CONFIDENTIAL,
            authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
            redirect_uris=" ".join(options["redirect_uri"]),
            algorithm=Application.RS256_ALGORITHM,
            skip_authorization=True,
        )
        call_command(
            "runserver",
            f"127.0.0.1:{options['port']}",
            use_reloader=False,
            use_threading=True,
            skip_checks=True,
        )
