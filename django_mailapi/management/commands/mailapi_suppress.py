"""``manage.py mailapi_suppress add|remove|list|import``: the suppression list by hand.

- ``add ADDR... [--org ORG] [--reason manual|unsubscribe] [--note TEXT]``
- ``remove ADDR... [--org ORG]``
- ``list [--org ORG] [--reason R] [--format table|json]``
- ``import FILE.csv [--org ORG] [--reason manual|unsubscribe] [--note TEXT]``

Without ``--org`` a row is for every org. ``list --org ORG`` shows the rows that stop
ORG's emails: its own and those for every org. Bad input (a malformed address, an
option the action does not take, a CSV that cannot be read) is a ``CommandError``,
exit status 1, and changes nothing.
"""

from __future__ import annotations

import csv
import datetime as dt
from argparse import ArgumentParser
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.core.management.base import CommandError
from django.db import router, transaction
from django.db.models import F, QuerySet

from django_mailapi import suppression
from django_mailapi.management.arguments import (
    MailapiCommand,
    add_format_argument,
    choice,
    text_of_length,
)
from django_mailapi.management.output import Column, progress_bar, render_json, render_table
from django_mailapi.models import Suppression, SuppressionReason
from django_mailapi.text import plural

ACTIONS = ("add", "remove", "list", "import")
#: The column of a CSV file that holds the addresses, when it has a header row.
EMAIL_COLUMN = "email"
EVERY_ORG = "(every org)"

COLUMNS = (
    Column("address", "ADDRESS", 50),
    Column("org", "ORG", 20),
    Column("reason", "REASON"),
    Column("created_at", "CREATED (UTC)"),
    Column("note", "NOTE", 50),
)


def scope(org: str | None) -> str:
    return f"org {org}" if org else "every org"


def addresses_from(values: list[str], where: Callable[[int], str]) -> list[str]:
    """``values`` normalized; a value that is not an address refuses them all."""
    found = []
    for index, value in enumerate(values):
        address = suppression.normalize(value)
        if not suppression.is_address(address):
            raise CommandError(f"{where(index)}{value!r} is not an email address.")
        found.append(address)
    return found


@dataclass
class CsvAddresses:
    """The addresses of a CSV file: its ``email`` column, or else its first column.

    A first row with an ``email`` cell is the header; so is a first row whose first
    cell is not an address (``address``, ``Email Address``...). Empty cells are skipped.
    """

    path: Path
    lines: list[int] = field(default_factory=list)

    def read(self) -> list[str]:
        values = []
        self.lines = []
        for line, value in self._cells():
            values.append(value)
            self.lines.append(line)
        return addresses_from(values, lambda index: f"{self.path} line {self.lines[index]}: ")

    def _cells(self) -> Iterator[tuple[int, str]]:
        try:
            with self.path.open(newline="", encoding="utf-8-sig") as handle:
                rows = csv.reader(handle)
                column = 0
                for number, row in enumerate(rows, start=1):
                    if number == 1:
                        header = [cell.strip().lower() for cell in row]
                        if EMAIL_COLUMN in header:
                            column = header.index(EMAIL_COLUMN)
                            continue
                        if header and "@" not in header[0]:
                            continue
                    value = row[column].strip() if column < len(row) else ""
                    if value:
                        yield rows.line_num, value
        except (OSError, UnicodeDecodeError, csv.Error) as error:
            reason = error.strerror if isinstance(error, OSError) and error.strerror else error
            raise CommandError(f"Cannot read {self.path}: {reason}.") from None


@dataclass(frozen=True)
class Listing:
    """The rows ``list`` shows, by address then scope (every org first)."""

    org: str | None = None
    reason: str | None = None

    def rows(self) -> QuerySet[Suppression]:
        rows = Suppression.objects.all()
        if self.org:
            rows = rows.applying_to(self.org)
        if self.reason:
            rows = rows.filter(reason=self.reason)
        return rows.order_by("address", F("org").asc(nulls_first=True), "pk")

    def as_json(self) -> list[dict[str, Any]]:
        return [
            {
                "org": row.org,
                "address": row.address,
                "reason": row.reason,
                "created_at": row.created_at.astimezone(dt.timezone.utc).isoformat(),
                "note": row.note,
            }
            for row in self.rows().iterator(chunk_size=2000)
        ]

    def as_table(self) -> str:
        rows = [
            {
                "address": row.address,
                "org": row.org or EVERY_ORG,
                "reason": row.reason,
                "created_at": row.created_at,
                "note": row.note,
            }
            for row in self.rows().iterator(chunk_size=2000)
        ]
        return render_table(COLUMNS, rows) if rows else "No suppressions match."


class Command(MailapiCommand):
    help = (
        "Manage the suppression list: add or remove addresses, list them, or import a "
        "CSV file (its 'email' column, or its first column). Without --org, for every org."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "action", type=choice("action", ACTIONS), choices=ACTIONS, help=", ".join(ACTIONS)
        )
        parser.add_argument(
            "values", nargs="*", metavar="ADDR|FILE", help="addresses (add, remove) or a CSV file"
        )
        parser.add_argument(
            "--org", type=text_of_length("--org", 100), help="this org only (default: every org)"
        )
        parser.add_argument(
            "--reason",
            type=choice("reason", SuppressionReason.values),
            help="add and import: manual (default) or unsubscribe; list: any reason",
        )
        parser.add_argument("--note", help="add and import: a note kept on each row")
        add_format_argument(parser)
        parser.set_defaults(format=None)

    def handle(self, *args: Any, **options: Any) -> None:
        action: str = options["action"]
        self._refuse_what_does_not_fit(action, options)
        org: str | None = options["org"]
        if action == "add":
            self.add(options["values"], org, options["reason"], options["note"] or "")
        elif action == "remove":
            self.remove(options["values"], org)
        elif action == "list":
            listing = Listing(org, options["reason"])
            if options["format"] == "json":
                self.stdout.write(render_json(listing.as_json()))
            else:
                self.stdout.write(listing.as_table())
        else:
            self.import_file(Path(options["values"][0]), org, options["reason"], options["note"])

    # --- the actions ------------------------------------------------------------------
    def add(self, values: list[str], org: str | None, reason: str | None, note: str) -> None:
        addresses = addresses_from(values, lambda index: "")
        reason = reason or SuppressionReason.MANUAL
        there = suppression.existing(list(dict.fromkeys(addresses)), org)
        added = suppression.add(addresses, org=org, reason=reason, note=note)
        self.stdout.write(f"Added {plural(added, 'suppression')} for {scope(org)} ({reason}).")
        for address in dict.fromkeys(addresses):
            if address in there:
                self.stderr.write(f"Skipped {address}: already suppressed for {scope(org)}.")

    def remove(self, values: list[str], org: str | None) -> None:
        addresses = list(dict.fromkeys(addresses_from(values, lambda index: "")))
        removed = set(suppression.remove(addresses, org=org))
        self.stdout.write(f"Removed {plural(len(removed), 'suppression')} for {scope(org)}.")
        missed = [address for address in addresses if address not in removed]
        # Where the address is suppressed instead, so the next command can be right.
        elsewhere: dict[str, list[str | None]] = {}
        for address, other in (
            Suppression.objects.filter(address__in=missed)
            .order_by(F("org").asc(nulls_first=True))
            .values_list("address", "org")
        ):
            elsewhere.setdefault(address, []).append(other)
        for address in missed:
            hint = ""
            if address in elsewhere:
                other = elsewhere[address][0]
                where = f"--org {other}" if other else "no --org"
                hint = f" (it is suppressed for {scope(other)}: use {where})"
            self.stderr.write(f"Skipped {address}: not suppressed for {scope(org)}{hint}.")

    def import_file(
        self, path: Path, org: str | None, reason: str | None, note: str | None
    ) -> None:
        addresses = list(dict.fromkeys(CsvAddresses(path).read()))
        reason = reason or SuppressionReason.MANUAL
        total = len(addresses)
        done = 0

        def progress(count: int) -> None:
            nonlocal done
            done += count
            self._progress(done, total)

        if total and self.stdout.isatty():
            self._progress(0, total)
        with transaction.atomic(using=router.db_for_write(Suppression)):
            added = suppression.add(
                addresses,
                org=org,
                reason=reason,
                note=note if note is not None else f"imported from {path.name}",
                progress=progress if self.stdout.isatty() else None,
            )
        self.stdout.write(
            f"Added {plural(added, 'suppression')} for {scope(org)} ({reason}) from "
            f"{path.name}: {total} address{'' if total == 1 else 'es'} read, "
            f"{total - added} already there."
        )

    # --- argument checks --------------------------------------------------------------
    def _refuse_what_does_not_fit(self, action: str, options: dict[str, Any]) -> None:
        values, reason = options["values"], options["reason"]
        if action in ("add", "remove") and not values:
            raise CommandError(f"{action} needs at least one address.")
        if action == "list" and values:
            raise CommandError("list takes no addresses; narrow it with --org or --reason.")
        if action == "import" and len(values) != 1:
            raise CommandError("import takes exactly one CSV file.")
        if action in ("add", "import") and reason not in (None, *suppression.BY_HAND):
            raise CommandError(
                f"--reason for {action} is manual or unsubscribe; {reason} rows come from "
                "delivery events."
            )
        if action == "remove" and reason is not None:
            raise CommandError("remove takes no --reason: it removes the address's row.")
        if action in ("list", "remove") and options["note"] is not None:
            raise CommandError("--note is for add and import.")
        if action != "list" and options["format"] is not None:
            raise CommandError("--format is for list.")

    def _progress(self, done: int, total: int) -> None:
        self.stderr.write(progress_bar(done, total), ending="\n" if done == total else "")
        self.stderr.flush()
