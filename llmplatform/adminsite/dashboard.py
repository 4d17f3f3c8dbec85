"""The admin index as the compliance officer's dashboard: panels of figures, each linking to the
admin list behind it.

The kernel knows nothing of what the figures are (imports point down): an app above it
registers a panel builder, a function of the request returning ``Panel`` objects, in its
``AppConfig.ready``; the admin site's index shows every registered panel above the app list,
in registration order. The kernel owns the markup (``llmplatform/admin/index.html``), the apps
only the data, so a panel cannot bring its own scripts or inline styles.

A builder that fails is logged and shown as one unavailable panel: one broken figure must not
take the admin's front page down with it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Literal

import structlog
from django.http import HttpRequest

log = structlog.get_logger("llmplatform.admin_dashboard")

#: How a figure is coloured: ``ok`` (nothing to do), ``warn`` (look soon), ``alert`` (act now),
#: ``none`` (informative, or not available).
Level = Literal["ok", "warn", "alert", "none"]


@dataclasses.dataclass(frozen=True, slots=True)
class Figure:
    """One number on the dashboard. ``key`` is stable (the page's ``data-figure``)."""

    key: str
    label: str
    value: str
    url: str | None = None
    level: Level = "none"
    note: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Row:
    """A row of a panel's table: a label (the row's own link, if any) and one figure a column."""

    label: str
    cells: tuple[Figure, ...]
    url: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Panel:
    key: str
    title: str
    figures: tuple[Figure, ...] = ()
    columns: tuple[str, ...] = ()
    rows: tuple[Row, ...] = ()
    note: str = ""


PanelBuilder = Callable[[HttpRequest], Iterable[Panel]]
_builders: dict[str, PanelBuilder] = {}


def register_panels(name: str, builder: PanelBuilder) -> None:
    """Add (or replace, by ``name``) a builder of dashboard panels."""
    _builders[name] = builder


def panels(request: HttpRequest) -> list[Panel]:
    out: list[Panel] = []
    for name, builder in list(_builders.items()):
        try:
            out.extend(builder(request))
        except Exception as exc:  # shown as unavailable; the rest of the page still works
            log.exception("dashboard_panel_failed", panel=name, error=type(exc).__name__)
            out.append(
                Panel(
                    key=name,
                    title=name,
                    note="This panel could not be computed "
                    f"({type(exc).__name__}); the error is in the log.",
                )
            )
    return out
