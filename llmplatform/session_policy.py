"""Session lifetimes: an idle timeout for everyone and a shorter absolute age for staff.

- A session unused for ``LLMP_SESSION_IDLE_MINUTES`` is signed out (the next page asks to sign
  in again). Activity is written to the session at most once a minute, not on every page.
- A staff member's session ends ``LLMP_STAFF_SESSION_HOURS`` after sign-in, however active;
  everyone else's after ``SESSION_COOKIE_AGE`` (12 hours).

Sessions the API never uses: its routes take the lean path without cookies.
"""

from __future__ import annotations

import time
from typing import Any

import structlog
from django.conf import settings
from django.contrib.auth import logout
from django.contrib.auth.signals import user_logged_in
from django.dispatch import receiver

log = structlog.get_logger("llmplatform.sessions")

SEEN, STARTED = "_llmp_seen", "_llmp_started"
WRITE_EVERY = 60  # seconds between writes of the last-activity time


@receiver(user_logged_in)
def _start(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    if request is None or not hasattr(request, "session"):
        return
    now = int(time.time())
    request.session[STARTED] = request.session[SEEN] = now
    if user.is_staff:
        request.session.set_expiry(settings.LLMP_STAFF_SESSION_HOURS * 3600)


class SessionPolicyMiddleware:
    """After AuthenticationMiddleware: ends idle and over-age sessions before the view runs."""

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        session = getattr(request, "session", None)
        if session is not None and session.session_key and request.user.is_authenticated:
            self._apply(request, session)
        return self.get_response(request)

    def _apply(self, request: Any, session: Any) -> None:
        now = int(time.time())
        seen = session.get(SEEN)
        started = session.get(STARTED)
        if started is None:  # a session from before this policy: its clock starts now
            session[STARTED] = session[SEEN] = now
            return
        reason = ""
        if seen is not None and now - seen > settings.LLMP_SESSION_IDLE_MINUTES * 60:
            reason = "idle"
        elif request.user.is_staff and now - started > settings.LLMP_STAFF_SESSION_HOURS * 3600:
            reason = "staff_max_age"
        if reason:
            log.info("session_ended", reason=reason)
            logout(request)
            return
        if seen is None or now - seen >= WRITE_EVERY:
            session[SEEN] = now
