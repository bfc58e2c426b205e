"""The usage chart's geometry: units sent per UTC day per org, laid out for plain SVG.

No JavaScript and no chart library: this module works out where every line, tick and
label goes, and ``admin/django_mailapi/orgquota/usage_chart.svg`` draws them (the
template escapes every piece of text).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

#: Colours that stay apart from each other on white and for common colour blindness.
PALETTE = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#9467bd",
    "#ff7f0e",
    "#17becf",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#393b79",
    "#637939",
)

WIDTH, HEIGHT = 760, 320
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 16, 52


@dataclass(frozen=True)
class Series:
    org: str
    values: list[int]  # one per day, oldest first
    limit: int | None
    colour: str

    @property
    def total(self) -> int:
        return sum(self.values)


@dataclass(frozen=True)
class Line:
    """One org on the chart: its polyline and, if it has a daily limit, where that is."""

    series: Series
    path: str
    limit_y: str | None


@dataclass(frozen=True)
class Tick:
    """A y tick: its grid line's y, its label's baseline and the value it marks."""

    y: str
    text_y: str
    label: str


@dataclass(frozen=True)
class Chart:
    """Every coordinate the SVG template needs, already formatted."""

    width: int
    height: int
    left: int
    top: int
    right: int  # x of the plot's right edge
    bottom: int  # y of the x axis
    tick_x: int  # where the y tick labels end
    date_y: int  # baseline of the date labels
    title_y: int  # baseline of the x axis title
    middle_x: str
    middle_y: str
    y_ticks: list[Tick]
    x_labels: list[tuple[str, str]]  # (x, MM-DD)
    days: int
    lines: list[Line]


def build_series(
    days: Sequence[dt.date],
    sent: Mapping[str, Mapping[dt.date, int]],
    limits: Mapping[str, int | None],
) -> list[Series]:
    orgs = sorted(set(sent) | set(limits))
    return [
        Series(
            org,
            [sent.get(org, {}).get(day, 0) for day in days],
            limits.get(org),
            PALETTE[i % len(PALETTE)],
        )
        for i, org in enumerate(orgs)
    ]


def nice_ceiling(value: float) -> int:
    """The smallest 1, 2 or 5 times a power of ten that is >= value (at least 1)."""
    if value <= 1:
        return 1
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return int(step * power)
    return int(10 * power)  # pragma: no cover  (the loop always returns)


def layout(days: Sequence[dt.date], series: Sequence[Series]) -> Chart:
    """Axes with five y ticks, a date label every five days, one line per org."""
    peak = max(
        [v for s in series for v in s.values] + [s.limit for s in series if s.limit is not None],
        default=0,
    )
    top = nice_ceiling(peak * 1.05)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    step = plot_w / max(1, len(days) - 1)

    def x(i: int) -> float:
        return LEFT + i * step

    def y(value: float) -> float:
        return TOP + plot_h - (value / top) * plot_h

    lines = [
        Line(
            s,
            " L ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(s.values)),
            None if s.limit is None else f"{y(s.limit):.1f}",
        )
        for s in series
    ]
    return Chart(
        width=WIDTH,
        height=HEIGHT,
        left=LEFT,
        top=TOP,
        right=LEFT + plot_w,
        bottom=TOP + plot_h,
        tick_x=LEFT - 6,
        date_y=TOP + plot_h + 16,
        title_y=HEIGHT - 8,
        middle_x=f"{LEFT + plot_w / 2:.1f}",
        middle_y=f"{TOP + plot_h / 2:.1f}",
        y_ticks=[
            Tick(f"{y(value):.1f}", f"{y(value) + 4:.1f}", f"{value:g}")
            for value in (top * k / 4 for k in range(5))
        ],
        x_labels=[
            (f"{x(i):.1f}", f"{day:%m-%d}")
            for i, day in enumerate(days)
            if i % 5 == 0 or i == len(days) - 1
        ],
        days=len(days),
        lines=lines,
    )
