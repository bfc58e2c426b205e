"""``manage.py mailapi_retry``: re-queue failed or deferred emails and dispatch them now."""

from __future__ import annotations

from argparse import ArgumentParser
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.core.management.base import CommandError
from django.db.models import QuerySet

from django_mailapi import outbox
from django_mailapi.management.arguments import (
    EmailSelection,
    MailapiCommand,
    add_selection_arguments,
)
from django_mailapi.management.output import Column, progress_bar, render_table
from django_mailapi.models import OutboundEmail, Status
from django_mailapi.text import plural

#: Statuses this command re-queues.
SELECTABLE = (Status.FAILED, Status.DEFERRED)
#: Emails re-queued per database round trip (and per step of the progress bar).
CHUNK = 500

COLUMNS = (
    Column("id", "ID"),
    Column("status", "STATUS"),
    Column("org", "ORG", 20),
    Column("last_error_code", "LAST ERROR", 32),
    Column("recipients", "TO", 30),
    Column("subject", "SUBJECT", 40),
)


@dataclass(frozen=True)
class Selection(EmailSelection):
    """Which emails to re-queue: failed or deferred ones, narrowed by every selector given.

    ``all_failed`` selects every failed and deferred email; it exists so that a bare
    ``mailapi_retry`` (perhaps a typo) never re-queues the whole outbox.
    """

    code: str | None = None
    all_failed: bool = False

    @property
    def is_empty(self) -> bool:
        return not (self.ids or self.org or self.code or self.all_failed)

    def emails(self) -> QuerySet[OutboundEmail]:
        emails = self.narrow(
            OutboundEmail.objects.filter(status__in=SELECTABLE, payload__isnull=False)
        )
        if self.code:
            emails = emails.filter(last_error_code=self.code)
        return emails.order_by("pk")

    def unretryable_ids(self, selected: Sequence[int]) -> dict[int, str]:
        """Why each of the requested ``ids`` that is not selected cannot be retried."""
        left_out = self.left_out(selected)
        without_payload = set(
            OutboundEmail.objects.filter(pk__in=left_out, payload__isnull=True).values_list(
                "pk", flat=True
            )
        )
        reasons = {}
        for pk, status in left_out.items():
            if status is None:
                reasons[pk] = "no such email"
            elif status not in SELECTABLE:
                reasons[pk] = f"it is {status}, not failed or deferred"
            elif pk in without_payload:
                reasons[pk] = "its message is no longer stored"
            else:
                reasons[pk] = "it does not match --org / --code"
        return reasons


@dataclass
class Retrier:
    """Re-queues the selected emails in chunks, reporting progress after each."""

    selection: Selection
    progress: Callable[[int, int], None] = field(default=lambda done, total: None)

    def preview(self) -> list[dict[str, Any]]:
        fields = ("id", "status", "org", "last_error_code", "recipients", "subject")
        return [dict(row) for row in self.selection.emails().values(*fields)]

    def run(self) -> tuple[list[int], int]:
        """Returns the selected ids and how many were re-queued."""
        ids = list(self.selection.emails().values_list("pk", flat=True))
        done = 0
        if ids:
            self.progress(0, len(ids))
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start : start + CHUNK]
            done += outbox.retry_now(
                OutboundEmail.objects.filter(pk__in=chunk, payload__isnull=False)
            )
            self.progress(min(start + CHUNK, len(ids)), len(ids))
        return ids, done


class Command(MailapiCommand):
    help = (
        "Re-queue failed or deferred emails and dispatch them now. Select them by ID, "
        "--org and/or --code, or all of them with --all-failed."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        add_selection_arguments(parser, "re-queued")
        parser.add_argument("--code", help="emails whose last error has this code")
        parser.add_argument(
            "--all-failed", action="store_true", help="every failed and deferred email"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        selection = Selection(
            ids=tuple(options["ids"]),
            org=options["org"],
            code=options["code"],
            all_failed=options["all_failed"],
        )
        if selection.is_empty:
            raise CommandError(
                "Say which emails to retry: give email IDs, --org ORG, --code CODE, "
                "or --all-failed for every failed and deferred email."
            )
        retrier = Retrier(selection, self._progress if self.stdout.isatty() else _no_progress)
        if options["dry_run"]:
            rows = retrier.preview()
            self.stdout.write(
                f"Would re-queue {plural(len(rows), 'email')} (dry run, nothing changed)."
            )
            if rows:
                self.stdout.write(render_table(COLUMNS, rows))
            selected = [row["id"] for row in rows]
        else:
            selected, done = retrier.run()
            self.stdout.write(f"Re-queued {plural(done, 'email')}.")
        for pk, reason in selection.unretryable_ids(selected).items():
            self.stderr.write(f"Skipped email #{pk}: {reason}.")

    def _progress(self, done: int, total: int) -> None:
        self.stderr.write(progress_bar(done, total), ending="\n" if done == total else "")
        self.stderr.flush()


def _no_progress(done: int, total: int) -> None:
    return None
