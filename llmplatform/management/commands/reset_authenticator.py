"""``manage.py reset_authenticator USERNAME``: for a staff member who lost their authenticator
(and an admin nobody else can reach). Audited; they may enrol a new one at their next sign-in."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from llmplatform import staff_signin


class Command(BaseCommand):
    help = "Remove a user's TOTP authenticators; they enrol a new one at their next admin sign-in."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--actor", default="system:manage.py",
                            help="who asked, for the audit log (default: system:manage.py)")

    def handle(self, *args: Any, **options: Any) -> None:
        user = staff_signin.user_by_username(options["username"])
        if user is None:
            raise CommandError(f"No user {options['username']!r}")
        removed = staff_signin.totp_devices_reset(actor=options["actor"], user=user)
        staff_signin.enrolment_allow(actor=options["actor"], user=user)
        self.stdout.write(f"Removed {removed} authenticator(s) of {user.get_username()}. "
                          "They set up a new one at their next sign-in to /admin/.")
