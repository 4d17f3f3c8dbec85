"""Database access from the async hot path.

The API's fast path runs its (rare) ORM calls through ``sync_to_async`` outside Django's
request cycle, so nothing closes a connection that a database restart broke. ``fresh_db``
drops such a connection before each call, the way Django does at the start of a request.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from django.db import close_old_connections, connection

P = ParamSpec("P")
R = TypeVar("R")


def fresh_db(func: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        # Inside a transaction (a caller's atomic block, or a test's) the connection is in use.
        if not connection.in_atomic_block:
            close_old_connections()
        return func(*args, **kwargs)

    return wrapper
