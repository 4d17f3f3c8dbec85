"""``manage.py reset_authenticator USERNAME``: for a staff member who lost their authenticator
(and an admin nobody else can reach). Audited; they may enrol a new one at their next sign-in."""

from __future__ import annotations

from typing import Any

from llmplatform import staff_signin
from llmplatform.actors import Actor
from llmplatform.management.staff_command import StaffUserCommand


class Command(StaffUserCommand):
    help = "Remove a user's TOTP authenticators; they enrol a new one at their next admin sign-in."

    def act(self, user: Any, actor: Actor) -> str:
        removed = staff_signin.totp_devices_reset(actor=actor, user=user)
        staff_signin.enrolment_allow(actor=actor, user=user)
        return (
            f"Removed {removed} authenticator(s) of {user.get_username()}. They set up a new "
            "one at their next sign-in to /admin/."
        )
