"""Tables and JSON for the management commands.

Output is exact and stable so that scripts and tests can rely on it: tables are
plain text with two spaces between columns and a dashed rule under the headers;
JSON is a list of objects, indented, with keys in the order each command documents.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

ELLIPSIS = "…"


@dataclass(frozen=True)
class Column:
    """One table column: the row key it shows, its header, a maximum width, alignment."""

    key: str
    header: str
    max_width: int | None = None
    #: Right-align the values (numbers).
    right: bool = False


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
        padded = (
            value.rjust(width) if column.right else value.ljust(width)
            for value, width, column in zip(values, widths, columns, strict=True)
        )
        return "  ".join(padded).rstrip()

    lines = [join([c.header for c in columns]), join(["-" * w for w in widths])]
    lines.extend(join(line) for line in body)
    return "\n".join(lines)


def progress_bar(done: int, total: int, width: int = 30) -> str:
    """One frame of a progress bar drawn over itself on a terminal (starts with "\\r")."""
    filled = width * done // total if total else width
    return f"\r[{'#' * filled}{' ' * (width - filled)}] {done}/{total}"


def render_json(rows: Iterable[Mapping[str, Any]]) -> str:
    return json.dumps(list(rows), indent=2, ensure_ascii=False, default=_json_default)


def render_json_object(obj: Mapping[str, Any]) -> str:
    """One JSON object (a report rather than a list of rows), keys in their given order."""
    return json.dumps(dict(obj), indent=2, ensure_ascii=False, default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.timezone.utc).isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
