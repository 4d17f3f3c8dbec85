"""``manage.py allow_enrolment USERNAME``: let a staff member set up their authenticator at their
next admin sign-in (the first superuser's way in; afterwards superusers use the Users action).
Audited; the grant lasts LLMP_ENROLMENT_GRANT_HOURS."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from llmplatform import staff_signin
from llmplatform.actors import Actor
from llmplatform.management.staff_command import StaffUserCommand


class Command(StaffUserCommand):
    help = "Allow a staff member to set up a TOTP authenticator at their next admin sign-in."

    def act(self, user: Any, actor: Actor) -> str:
        staff_signin.enrolment_allow(actor=actor, user=user)
        return (
            f"{user.get_username()} may set up an authenticator at their next sign-in to "
            f"/admin/ (within {settings.LLMP_ENROLMENT_GRANT_HOURS} hours)."
        )
