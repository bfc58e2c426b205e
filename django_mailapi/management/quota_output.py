"""Plain-text tables and JSON for the quota commands (mailapi_usage, mailapi_quota, ...)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any


def render_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[int] = ()
) -> str:
    """Columns two spaces apart, a dashed rule under the headers; ``numeric`` right-aligned."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(width) if i in numeric else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


def dump_json(items: Sequence[dict[str, Any]]) -> str:
    """A JSON list, one key order, indented for people and stable for scripts."""
    return json.dumps(list(items), indent=2, ensure_ascii=False)
