"""What the management commands share: argument checks and table / JSON rendering.

Output is exact and stable so that scripts and tests can rely on it: tables are
plain text with two spaces between columns; JSON is a list of objects, indented,
with keys in the order each command documents.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.core.management.base import CommandError

FORMATS = ("table", "json")
ELLIPSIS = "…"


@dataclass(frozen=True)
class Column:
    """One table column: the row key it shows, its header, and a maximum width."""

    key: str
    header: str
    max_width: int | None = None


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    return " ".join(str(value).split())  # one line per row, whatever the text holds


def clip(text: str, width: int | None) -> str:
    if width is None or len(text) <= width:
        return text
    return text[: width - 1] + ELLIPSIS


def render_table(columns: Sequence[Column], rows: Iterable[Mapping[str, Any]]) -> str:
    """A plain-text table; long values are cut to their column's width with an ellipsis."""
    body = [[clip(cell(row[c.key]), c.max_width) for c in columns] for row in rows]
    widths = [len(c.header) for c in columns]
    for line in body:
        widths = [max(w, len(value)) for w, value in zip(widths, line, strict=True)]

    def join(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()

    lines = [join([c.header for c in columns]), join(["-" * w for w in widths])]
    lines.extend(join(line) for line in body)
    return "\n".join(lines)


def render_json(rows: Iterable[Mapping[str, Any]]) -> str:
    return json.dumps(list(rows), indent=2, ensure_ascii=False, default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.timezone.utc).isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def check_format(value: str) -> str:
    if value not in FORMATS:
        raise CommandError(f"Unknown format {value!r}: use one of {', '.join(FORMATS)}.")
    return value


def check_choice(value: str | None, choices: Sequence[str], option: str) -> str | None:
    if value is not None and value not in choices:
        raise CommandError(f"Unknown {option} {value!r}: use one of {', '.join(choices)}.")
    return value


def parse_date(value: str | None, option: str) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise CommandError(f"{option} must be a date written YYYY-MM-DD, not {value!r}.") from None


def parse_positive_int(value: str, option: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise CommandError(f"{option} must be a whole number of 1 or more, not {value!r}.")
    return number
