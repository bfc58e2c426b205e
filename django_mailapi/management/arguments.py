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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from django.core.management.base import BaseCommand, CommandError
from django.db.models import QuerySet

from django_mailapi.models import OutboundEmail

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


def _whole_number(option: str, minimum: int, wanted: str) -> Callable[[str], int]:
    """A whole number of ``minimum`` or more; ``wanted`` says so in the refusal."""

    def parse(text: str) -> int:
        try:
            number = int(text)
        except ValueError:
            number = minimum - 1
        if number < minimum:
            raise CommandError(f"{option} must be {wanted}, not {text!r}.")
        return number

    return parse


def positive_int(option: str) -> Callable[[str], int]:
    """A whole number of 1 or more."""
    return _whole_number(option, 1, "a whole number of 1 or more")


def non_negative_int(option: str, unit: str) -> Callable[[str], int]:
    """A whole number of 0 or more ``unit`` (days, ...)."""
    return _whole_number(option, 0, f"a non-negative number of {unit}")


def limit(option: str) -> Callable[[str], int | None]:
    """A quota limit: a non-negative integer, or ``none`` for None (the MAILAPI default)."""
    number = _whole_number(option, 0, "a non-negative integer or 'none'")

    def parse(text: str) -> int | None:
        return None if text.strip().lower() == "none" else number(text)

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


@dataclass(frozen=True)
class EmailSelection:
    """The emails named by ``add_selection_arguments``: these IDs, of this org."""

    ids: tuple[int, ...] = ()
    org: str | None = None

    def narrow(self, emails: QuerySet[OutboundEmail]) -> QuerySet[OutboundEmail]:
        if self.ids:
            emails = emails.filter(pk__in=self.ids)
        if self.org:
            emails = emails.filter(org=self.org)
        return emails

    def left_out(self, selected: Iterable[int]) -> dict[int, str | None]:
        """Each requested ID not among ``selected``, with its email's status (None: there
        is no such email), in ID order: for the command to say why it was left alone."""
        missing = sorted(set(self.ids) - set(selected))
        found = dict(OutboundEmail.objects.filter(pk__in=missing).values_list("pk", "status"))
        return {pk: found.get(pk) for pk in missing}


def add_selection_arguments(parser: ArgumentParser, done: str) -> None:
    """Email IDs, ``--org`` and ``--dry-run``: how commands that change emails pick them.

    ``done`` is what the command does to them, for the help: "re-queued", "cancelled".
    """
    parser.add_argument(
        "ids", nargs="*", type=positive_int("An email ID"), metavar="ID", help="email IDs"
    )
    parser.add_argument("--org", help="emails of this org")
    parser.add_argument(
        "--dry-run", action="store_true", help=f"list what would be {done}; change nothing"
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
