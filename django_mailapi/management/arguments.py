"""Argument types for the commands, and the base class that reports a refused one.

Each type turns the text of one argument into its value or refuses it with a
``CommandError`` that names the option, so a bad argument reads the same whether the
command runs from ``manage.py`` (``CommandError: …`` on stderr, exit status 1, as for
any other command error) or from ``call_command`` (the exception). A type raising
``ValueError`` instead would get argparse's own wording, a usage line and exit status 2.
"""

from __future__ import annotations

import datetime as dt
import sys
from argparse import ArgumentParser
from collections.abc import Callable, Sequence

from django.core.management.base import BaseCommand, CommandError

FORMATS = ("table", "json")


def choice(label: str, choices: Sequence[str]) -> Callable[[str], str]:
    """One of ``choices``; ``label`` names the argument in the refusal."""

    def parse(text: str) -> str:
        if text not in choices:
            raise CommandError(f"Unknown {label} {text!r}: use one of {', '.join(choices)}.")
        return text

    return parse


def date(option: str) -> Callable[[str], dt.date]:
    """A day written YYYY-MM-DD."""

    def parse(text: str) -> dt.date:
        try:
            return dt.date.fromisoformat(text)
        except ValueError:
            raise CommandError(
                f"{option} must be a date written YYYY-MM-DD, not {text!r}."
            ) from None

    return parse


def _whole_number(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def positive_int(option: str) -> Callable[[str], int]:
    """A whole number of 1 or more."""

    def parse(text: str) -> int:
        number = _whole_number(text)
        if number is None or number < 1:
            raise CommandError(f"{option} must be a whole number of 1 or more, not {text!r}.")
        return number

    return parse


def non_negative_int(option: str, unit: str) -> Callable[[str], int]:
    """A whole number of 0 or more ``unit`` (days, ...)."""

    def parse(text: str) -> int:
        number = _whole_number(text)
        if number is None or number < 0:
            raise CommandError(f"{option} must be a non-negative number of {unit}, not {text!r}.")
        return number

    return parse


def limit(option: str) -> Callable[[str], int | None]:
    """A quota limit: a non-negative integer, or ``none`` for None (the MAILAPI default)."""

    def parse(text: str) -> int | None:
        if text.strip().lower() == "none":
            return None
        number = _whole_number(text)
        if number is None or number < 0:
            raise CommandError(f"{option} must be a non-negative integer or 'none', not {text!r}.")
        return number

    return parse


def positive_number(option: str, unit: str) -> Callable[[str], float]:
    """A number greater than 0 of ``unit`` (seconds, ...)."""

    def parse(text: str) -> float:
        try:
            number = float(text)
        except ValueError:
            number = 0.0
        if not number > 0:
            raise CommandError(f"{option} must be a positive number of {unit}, not {text!r}.")
        return number

    return parse


def text_of_length(name: str, longest: int) -> Callable[[str], str]:
    """A string of 1 to ``longest`` characters (an org name, ...)."""

    def parse(text: str) -> str:
        if not text or len(text) > longest:
            raise CommandError(f"{name} must be 1 to {longest} characters long.")
        return text

    return parse


def add_format_argument(parser: ArgumentParser) -> None:
    """``--format table|json``, table by default."""
    parser.add_argument(
        "--format",
        type=choice("format", FORMATS),
        choices=FORMATS,
        default="table",
        help="table (default) or json",
    )


class MailapiCommand(BaseCommand):
    """A command whose argument types may refuse a value with ``CommandError``.

    Django reports a ``CommandError`` raised by ``handle()``, but arguments are parsed
    before that and a refusal there would end in a traceback; this reports it the
    same way.
    """

    def run_from_argv(self, argv: list[str]) -> None:
        try:
            super().run_from_argv(argv)
        except CommandError as error:
            if "--traceback" in argv:
                raise
            self.stderr.write(f"CommandError: {error}")
            sys.exit(error.returncode)
