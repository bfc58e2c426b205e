"""The README's settings and system checks tables, written from the declarations.

``python -m tests.readme`` rewrites the tables between their markers in README.md;
``tests/test_readme.py`` fails when the README and the declarations disagree.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from django_mailapi.checks import summaries
from django_mailapi.conf import SETTINGS

README = Path(__file__).resolve().parents[1] / "README.md"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _default(value: Any) -> str:
    return f'`"{value}"`' if isinstance(value, str) else f"`{value!r}`"


def settings_table() -> str:
    lines = ["| key | type | default | what it does |", "|---|---|---|---|"]
    for name, setting in SETTINGS.items():
        default = "— (required)" if setting.required else _default(setting.default)
        lines.append(f"| `{name}` | {_cell(setting.type)} | {default} | {_cell(setting.doc)} |")
    return "\n".join(lines)


def checks_table() -> str:
    lines = ["| id | what is wrong |", "|---|---|"]
    lines += [f"| `{check_id}` | {_cell(summary)} |" for check_id, summary in summaries()]
    return "\n".join(lines)


TABLES = {"settings": settings_table, "system checks": checks_table}


def _block(name: str) -> re.Pattern[str]:
    return re.compile(
        rf"(<!-- {name} table: begin [^\n]*-->\n)(.*?)(\n<!-- {name} table: end -->)", re.S
    )


def current(name: str, text: str) -> str:
    """The table called ``name`` as the README has it now."""
    match = _block(name).search(text)
    if match is None:
        raise LookupError(f"README.md has no {name!r} table markers")
    return match.group(2)


def rewrite(text: str) -> str:
    for name, table in TABLES.items():
        current(name, text)  # fail loudly on missing markers
        text = _block(name).sub(lambda m, t=table: m.group(1) + t() + m.group(3), text)
    return text


def main() -> int:
    text = README.read_text()
    new = rewrite(text)
    if new != text:
        README.write_text(new)
        print("README.md: tables rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
