"""Every custom admin view declares the permissions it needs (``requires``), so they are checked
before the view runs, whatever the method, and a test can walk every admin URL and ask each
view what it needs (tests/test_admin_permission_matrix.py). Admin actions declare theirs with
Django's ``@admin.action(permissions=[...])``; the same test fails for one that does not."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest

REQUIRED_PERMISSIONS_ATTR = "required_permissions"


def requires(*permissions: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Refuse (403) a user who lacks any of ``permissions`` ("app_label.codename") before the
    view runs. Works on functions (``request, ...``) and on methods (``self, request, ...``)."""
    if not permissions:
        raise ValueError("a custom admin view names at least one permission")

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            request = args[0] if isinstance(args[0], HttpRequest) else args[1]
            if not request.user.has_perms(permissions):
                raise PermissionDenied
            return view(*args, **kwargs)

        setattr(wrapper, REQUIRED_PERMISSIONS_ATTR, tuple(permissions))
        return wrapper

    return decorate


def required_permissions(view: Callable[..., Any]) -> tuple[str, ...] | None:
    """What a view (through Django's wrappers: admin_view, csrf, never_cache) declared."""
    seen = set()
    current: Callable[..., Any] | None = view
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        # What ``requires`` set, or None.
        declared: tuple[str, ...] | None = getattr(current, REQUIRED_PERMISSIONS_ATTR, None)
        if declared is not None:
            return declared
        current = getattr(current, "__wrapped__", None) or getattr(current, "__func__", None)
    return None
