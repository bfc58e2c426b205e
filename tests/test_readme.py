"""The README's settings and system checks tables say what the declarations say."""

from __future__ import annotations

import pytest

from tests import readme


@pytest.mark.parametrize("name", list(readme.TABLES))
def test_readme_table_matches_the_declarations(name):
    written = readme.current(name, readme.README.read_text())

    assert written == readme.TABLES[name](), (
        f"README.md's {name} table is out of date: run `python -m tests.readme`"
    )
