"""Live evidence checks: a small registry the compliance checklists read.

Each deployments sub-app registers the checks it can answer (``register``) when Django starts
(its ``AppConfig.ready``); a compliance item names a check by its code. A check is a plain
function returning ``Evidence``; an exception or an unknown code is a failing check, never a
crash of the report.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.utils import timezone


@dataclasses.dataclass(frozen=True)
class Evidence:
    ok: bool
    summary: str
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    checked_at: datetime = dataclasses.field(default_factory=timezone.now)


@dataclasses.dataclass(frozen=True)
class Check:
    code: str
    title: str
    run: Callable[[], Evidence]


_checks: dict[str, Check] = {}


def register(code: str, title: str) -> Callable[[Callable[[], Evidence]], Callable[[], Evidence]]:
    """Decorator: ``@register("backups.within_rpo", "Backups succeeded within the RPO")``."""

    def decorate(fn: Callable[[], Evidence]) -> Callable[[], Evidence]:
        _checks[code] = Check(code, title, fn)
        return fn

    return decorate


def registered() -> dict[str, Check]:
    return dict(_checks)


def run(code: str) -> Evidence:
    check = _checks.get(code)
    if check is None:
        return Evidence(False, f"No live check named {code!r} is installed.")
    try:
        return check.run()
    except Exception as exc:  # a broken check fails its item; the report still renders
        return Evidence(False, f"The check failed to run: {type(exc).__name__}: {exc}")
