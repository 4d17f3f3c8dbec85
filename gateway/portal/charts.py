"""Bar charts drawn on the server as SVG geometry: the portal needs no JavaScript library (and
the machines it runs on may have no internet to fetch one)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

Number = int | Decimal

WIDTH = 720
HEIGHT = 180
LEFT, RIGHT, TOP, BOTTOM = 64, 8, 12, 24


@dataclass(frozen=True, slots=True)
class Bar:
    x: str
    y: str
    width: str
    height: str
    day: str
    value: str  # raw, for data attributes
    title: str


@dataclass(frozen=True, slots=True)
class AxisLabel:
    x: str
    y: str
    text: str


@dataclass(frozen=True, slots=True)
class BarChart:
    key: str
    title: str
    width: int
    height: int
    bars: list[Bar]
    y_labels: list[AxisLabel]
    x_labels: list[AxisLabel]
    grid_y: list[str]
    plot_left: int
    plot_right: int
    total: str


def _f(value: float) -> str:
    return f"{value:.1f}"


def bar_chart(
    *,
    key: str,
    title: str,
    points: Sequence[tuple[date, Number]],
    fmt: Callable[[float | Decimal], str],  # values, and axis ticks (half an int is a float)
) -> BarChart:
    """One bar per day, scaled to the largest value; each bar carries its day and value."""
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    peak = max((value for _, value in points), default=0) or 0
    slot = plot_w / max(len(points), 1)
    bars = []
    x_labels = []
    for index, (day, value) in enumerate(points):
        height = float(value) / float(peak) * plot_h if peak else 0.0
        if value and height < 1:
            height = 1.0  # a non-zero day stays visible next to a much larger one
        x = LEFT + index * slot + slot * 0.15
        bars.append(
            Bar(
                x=_f(x),
                y=_f(TOP + plot_h - height),
                width=_f(slot * 0.7),
                height=_f(height),
                day=day.isoformat(),
                value=str(value),
                title=f"{day:%a %d %b}: {fmt(value)}",
            )
        )
        if (len(points) - 1 - index) % 7 == 0:  # weekly, counted back from the last day
            x_labels.append(AxisLabel(x=_f(x + slot * 0.35), y=_f(HEIGHT - 6), text=f"{day:%d %b}"))
    grid = [TOP, TOP + plot_h / 2, TOP + plot_h]
    y_labels = [
        AxisLabel(x=str(LEFT - 6), y=_f(y + 4), text=fmt(value))
        for y, value in zip(grid, (peak, peak / 2, 0), strict=True)
    ]
    total = sum((value for _, value in points), Decimal(0) if isinstance(peak, Decimal) else 0)
    return BarChart(
        key=key,
        title=title,
        width=WIDTH,
        height=HEIGHT,
        bars=bars,
        y_labels=y_labels,
        x_labels=x_labels,
        grid_y=[_f(y) for y in grid],
        plot_left=LEFT,
        plot_right=WIDTH - RIGHT,
        total=fmt(total),
    )
