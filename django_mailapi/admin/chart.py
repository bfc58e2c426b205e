"""The usage chart's geometry: a bar per UTC day, stacked sent / failed / deferred.

No JavaScript and no chart library: this module works out where every bar, tick, limit
line and label goes, and ``admin/django_mailapi/orgquota/usage_chart.svg`` draws them
(the template escapes every piece of text). The y axis is scaled to the bars; a daily
limit far above them is named at the top instead of flattening them into the floor.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass

WIDTH, HEIGHT = 900, 340
LEFT, RIGHT, TOP, BOTTOM = 64, 150, 20, 52
#: The parts of a bar, bottom up, with their colours (apart for common colour blindness).
PARTS = (("sent", "#2e7d32"), ("failed", "#c62828"), ("deferred", "#f9a825"))
#: A limit up to this many times the highest bar stretches the scale to show its line.
LIMIT_STRETCH = 2.0


@dataclass(frozen=True)
class Day:
    """What one UTC day adds up to."""

    day: dt.date
    sent: int = 0
    failed: int = 0
    deferred: int = 0

    @property
    def total(self) -> int:
        return self.sent + self.failed + self.deferred


@dataclass(frozen=True)
class Segment:
    part: str
    colour: str
    x: str
    y: str
    width: str
    height: str
    title: str


@dataclass(frozen=True)
class Tick:
    """A y tick: its grid line's y, its label's baseline and the value it marks."""

    y: str
    text_y: str
    label: str


@dataclass(frozen=True)
class LimitLine:
    """A daily limit: a dashed line with its label, or (off the scale) a note on top."""

    label: str
    y: str | None
    text_y: str


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
    label_x: int  # where limit labels start
    legend_x: int  # where the legend's words start
    date_y: int  # baseline of the date labels
    title_y: int  # baseline of the x axis title
    middle_x: str
    middle_y: str
    y_ticks: list[Tick]
    x_labels: list[tuple[str, str]]  # (x, MM-DD)
    segments: list[Segment]
    limits: list[LimitLine]
    legend: list[tuple[str, str, str, str]]  # (part, colour, swatch y, text baseline)


def nice_ceiling(value: float) -> int:
    """The smallest 1, 2 or 5 times a power of ten that is >= value (at least 1)."""
    if value <= 1:
        return 1
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return int(step * power)
    return int(10 * power)  # pragma: no cover  (the loop always returns)


def layout(days: Sequence[Day], limits: Sequence[tuple[str, int]] = ()) -> Chart:
    """Bars for ``days`` (oldest first) and a line per (label, value) in ``limits``."""
    peak = max((d.total for d in days), default=0)
    shown = [value for _, value in limits if value <= max(peak, 1) * LIMIT_STRETCH]
    top = nice_ceiling(max([peak, *shown], default=0) * 1.05)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(1, len(days))
    bar = max(1.0, slot * 0.7)

    def y(value: float) -> float:
        return TOP + plot_h - (value / top) * plot_h

    segments = []
    for i, day in enumerate(days):
        x = LEFT + i * slot + (slot - bar) / 2
        base = 0
        for part, colour in PARTS:
            value: int = getattr(day, part)
            if value:
                segments.append(
                    Segment(
                        part,
                        colour,
                        f"{x:.1f}",
                        f"{y(base + value):.1f}",
                        f"{bar:.1f}",
                        f"{y(base) - y(base + value):.1f}",
                        f"{day.day:%Y-%m-%d}: {value} {part}",
                    )
                )
            base += value
    lines = []
    for label, value in limits:
        if value <= top:
            lines.append(LimitLine(f"{label} {value}", f"{y(value):.1f}", f"{y(value) + 4:.1f}"))
        else:
            lines.append(LimitLine(f"{label} {value} (above)", None, f"{TOP + 4:.1f}"))
    return Chart(
        width=WIDTH,
        height=HEIGHT,
        left=LEFT,
        top=TOP,
        right=LEFT + plot_w,
        bottom=TOP + plot_h,
        tick_x=LEFT - 6,
        label_x=LEFT + plot_w + 6,
        date_y=TOP + plot_h + 16,
        title_y=HEIGHT - 8,
        middle_x=f"{LEFT + plot_w / 2:.1f}",
        middle_y=f"{TOP + plot_h / 2:.1f}",
        y_ticks=[
            Tick(f"{y(value):.1f}", f"{y(value) + 4:.1f}", f"{value:g}")
            for value in (top * k / 4 for k in range(5))
        ],
        x_labels=[
            (f"{LEFT + (i + 0.5) * slot:.1f}", f"{d.day:%m-%d}")
            for i, d in enumerate(days)
            if i % 5 == 0 or i == len(days) - 1
        ],
        segments=segments,
        limits=lines,
        legend=[
            (part, colour, f"{TOP + plot_h - 14 - 18 * k:.1f}", f"{TOP + plot_h - 4 - 18 * k:.1f}")
            for k, (part, colour) in enumerate(PARTS)
        ],
        legend_x=LEFT + plot_w + 24,
    )
