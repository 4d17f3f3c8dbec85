"""A per-account sign-in lockout, whatever the address the guesses come from.

django-axes locks one username *from one address* after ``LLMP_SIGNIN_FAILURE_LIMIT`` failures.
An attacker with many addresses (a botnet, an IPv6 block) is not slowed by that. This counts
every failed password sign-in for an account, from anywhere, in the shared cache (Redis in
production, the file cache of the embedded default), and refuses that account's sign-ins for
``LLMP_SIGNIN_LOCKOUT_MINUTES`` once ``LLMP_SIGNIN_ACCOUNT_FAILURE_LIMIT`` is reached, the
right password included. The window starts at the first failure and is not extended by more.

The limit is higher than the per-address one: a lockout that anyone can trigger is also a way to
keep an owner out, so it only stops guessing at scale. A success does not reset the count (that
would hand a distributed guesser a fresh allowance each time the real user signs in).

Hand-written rather than axes' own ``AXES_LOCKOUT_PARAMETERS = ["username"]``: axes has one
failure limit for every parameter set, and the two lockouts need different limits.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any

import structlog
from django.conf import settings
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.signals import user_login_failed
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.dispatch import receiver

log = structlog.get_logger("llmplatform.signin")

PREFIX = "llmp:signin-account:"  # tests give each test its own


def _key(username: str) -> str:
    # A keyed hash: the cache never holds the usernames people tried.
    digest = hmac.new(
        settings.SECRET_KEY.encode(), username.strip().lower().encode(), hashlib.sha256
    ).hexdigest()[:32]
    return f"{PREFIX}{digest}"


def failures(username: str) -> int:
    try:
        value = cache.get(_key(username), 0)
    except Exception:
        return 0  # the cache is down: axes' per-address lockout (in the database) still holds
    return int(value[0] if isinstance(value, tuple) else value)


def is_locked(username: str) -> bool:
    return bool(username) and failures(username) >= settings.LLMP_SIGNIN_ACCOUNT_FAILURE_LIMIT


def record_failure(username: str) -> int:
    key, window = _key(username), settings.LLMP_SIGNIN_LOCKOUT_MINUTES * 60
    try:
        if hasattr(cache, "ttl"):  # django-redis: INCR is atomic and keeps the key's expiry
            cache.add(key, 0, timeout=window)
            count = cache.incr(key)
        else:
            # Other caches' incr() is a get and a set that would restart the expiry: keep the
            # window's end with the count, as (count, ends at).
            now = time.time()
            entry = cache.get(key)
            count, until = (entry[0] + 1, entry[1]) if entry else (1, now + window)
            cache.set(key, (count, until), timeout=max(1, int(until - now)))
    except ValueError:  # expired between add and incr
        cache.add(key, 1, timeout=window)
        count = 1
    except Exception:
        log.warning("signin_account_counter_unavailable", exc_info=True)
        return 0
    if count == settings.LLMP_SIGNIN_ACCOUNT_FAILURE_LIMIT:
        log.warning("signin_account_locked", minutes=settings.LLMP_SIGNIN_LOCKOUT_MINUTES)
    return count


@receiver(user_login_failed)
def _count_failure(
    sender: Any, credentials: dict[str, Any], request: Any = None, **kwargs: Any
) -> None:
    username = credentials.get("username")
    if isinstance(username, str) and username:
        record_failure(username)


class AccountLockoutBackend(ModelBackend):
    """First in AUTHENTICATION_BACKENDS: a locked account is refused before any password is
    checked (Django stops at ``PermissionDenied``), and the page says it is locked (axes'
    lockout page, through its middleware). It authenticates nobody itself; like axes' backend
    it is a ``ModelBackend`` only so that sessions naming it (Django's default backend is the
    first listed) load their user."""

    def authenticate(
        self, request: Any, username: str | None = None, password: str | None = None, **kwargs: Any
    ) -> None:
        if username and is_locked(username):
            if request is not None:
                request.axes_locked_out = True
            raise PermissionDenied("this account is locked for a while")
        return None
