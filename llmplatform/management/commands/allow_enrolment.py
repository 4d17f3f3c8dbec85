"""``manage.py allow_enrolment USERNAME``: let a staff member set up their authenticator at their
next admin sign-in (the first superuser's way in; afterwards superusers use the Users action).
Audited; the grant lasts LLMP_ENROLMENT_GRANT_HOURS."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from llmplatform import staff_signin


class Command(BaseCommand):
    help = "Allow a staff member to set up a TOTP authenticator at their next admin sign-in."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--actor", default="system:manage.py",
                            help="who asked, for the audit log (default: system:manage.py)")

    def handle(self, *args: Any, **options: Any) -> None:
        user = staff_signin.user_by_username(options["username"])
        if user is None:
            raise CommandError(f"No user {options['username']!r}")
        staff_signin.enrolment_allow(actor=options["actor"], user=user)
        self.stdout.write(f"{user.get_username()} may set up an authenticator at their next "
                          f"sign-in to /admin/ (within {settings.LLMP_ENROLMENT_GRANT_HOURS} "
                          "hours).")
