"""How counts read to people, shared by the admin's messages and the commands' output."""

from __future__ import annotations


def plural(count: int, noun: str) -> str:
    """``"1 email"``, ``"2 emails"``: English nouns that take an "s"."""
    return f"{count} {noun}{'' if count == 1 else 's'}"
