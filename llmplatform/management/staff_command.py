"""A management command that acts on one staff member named on the command line, for the audit
log as ``--actor`` (``allow_enrolment``, ``reset_authenticator``)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from llmplatform import staff_signin
from llmplatform.actors import Actor


class StaffUserCommand(BaseCommand):
    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument(
            "--actor",
            default="system:manage.py",
            help="who asked, for the audit log (default: system:manage.py)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        user = staff_signin.user_by_username(options["username"])
        if user is None:
            raise CommandError(f"No user {options['username']!r}")
        self.stdout.write(self.act(user, Actor.system(options["actor"])))

    def act(self, user: Any, actor: Actor) -> str:
        """Do it; return what to print."""
        raise NotImplementedError
