"""The admin's usage chart: units sent per UTC day per org, as plain inline SVG.

No JavaScript and no chart library: the server draws one polyline per org and one dashed
line per org at its daily limit, with labelled axes. Every piece of text is escaped.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

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


def render(days: Sequence[dt.date], series: Sequence[Series]) -> SafeString:
    """An ``<svg>`` element: axes, one ``path.series`` and one dashed ``line.limit`` per org."""
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

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="mailapi-usage-chart" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" role="img" '
        f'aria-label="Units sent per UTC day per org, with each org&#x27;s daily limit">',
        f'<g class="axes" stroke="#666" stroke-width="1">'
        f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{LEFT + plot_w}" y2="{TOP + plot_h}"/>'
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + plot_h}"/></g>',
    ]
    for k in range(5):  # y ticks and grid
        value = top * k / 4
        ty = y(value)
        label = f"{value:g}"
        parts.append(
            f'<line class="grid" x1="{LEFT}" y1="{ty:.1f}" x2="{LEFT + plot_w}" y2="{ty:.1f}" '
            f'stroke="#eee"/><text x="{LEFT - 6}" y="{ty + 4:.1f}" text-anchor="end" '
            f'font-size="11" fill="#444">{label}</text>'
        )
    for i, day in enumerate(days):  # a date label every 5 days and on the last one
        if i % 5 == 0 or i == len(days) - 1:
            parts.append(
                f'<text x="{x(i):.1f}" y="{TOP + plot_h + 16}" text-anchor="middle" '
                f'font-size="11" fill="#444">{day:%m-%d}</text>'
            )
    parts.append(
        f'<text class="axis-label" x="{LEFT + plot_w / 2:.1f}" y="{HEIGHT - 8}" '
        f'text-anchor="middle" font-size="12" fill="#222">UTC day</text>'
        f'<text class="axis-label" x="14" y="{TOP + plot_h / 2:.1f}" text-anchor="middle" '
        f'font-size="12" fill="#222" transform="rotate(-90 14 {TOP + plot_h / 2:.1f})">'
        f"units sent</text>"
    )
    for s in series:
        org = escape(s.org)
        if s.limit is not None:
            ly = y(s.limit)
            parts.append(
                f'<line class="limit" data-org="{org}" x1="{LEFT}" y1="{ly:.1f}" '
                f'x2="{LEFT + plot_w}" y2="{ly:.1f}" stroke="{s.colour}" stroke-width="1.5" '
                f'stroke-dasharray="6 4"><title>{org}: daily limit {s.limit}</title></line>'
            )
        points = " L ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(s.values))
        parts.append(
            f'<path class="series" data-org="{org}" d="M {points}" fill="none" '
            f'stroke="{s.colour}" stroke-width="2"><title>{org}: '
            f"{s.total} units in {len(days)} days</title></path>"
        )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308  (every interpolated text is escaped)
