"""``manage.py mailapi_cancel``: cancel queued, scheduled or deferred emails before a
worker claims them."""

from __future__ import annotations

from argparse import ArgumentParser
from dataclasses import dataclass
from typing import Any

from django.core.management.base import CommandError
from django.db.models import QuerySet
from django.utils import timezone

from django_mailapi import outbox
from django_mailapi.management.arguments import (
    EmailSelection,
    MailapiCommand,
    add_selection_arguments,
)
from django_mailapi.management.output import Column, render_table
from django_mailapi.models import OutboundEmail, Status
from django_mailapi.text import plural

#: What this command cancels: emails no worker holds and the API has not accepted.
SELECTABLE = (Status.QUEUED, Status.DEFERRED)

COLUMNS = (
    Column("id", "ID"),
    Column("status", "STATUS"),
    Column("org", "ORG", 20),
    Column("send_at", "SEND AT", 25),
    Column("recipients", "TO", 30),
    Column("subject", "SUBJECT", 40),
)


@dataclass(frozen=True)
class Selection(EmailSelection):
    """Queued or deferred emails, narrowed by every selector given."""

    scheduled: bool = False

    @property
    def is_empty(self) -> bool:
        return not (self.ids or self.org)

    def emails(self) -> QuerySet[OutboundEmail]:
        emails = self.narrow(OutboundEmail.objects.filter(status__in=SELECTABLE))
        if self.scheduled:
            emails = emails.filter(send_at__gt=timezone.now())
        return emails.order_by("pk")

    def skipped(self, selected: set[int]) -> dict[int, str]:
        """Why each requested id that was not cancelled was left alone."""
        reasons = {}
        for pk, status in self.left_out(selected).items():
            if status is None:
                reasons[pk] = "no such email"
            elif status == Status.SENDING:
                reasons[pk] = "a worker is sending it"
            elif status not in SELECTABLE:
                reasons[pk] = f"it is {status}"
            else:
                reasons[pk] = "it does not match --org / --scheduled"
        return reasons


class Command(MailapiCommand):
    help = (
        "Cancel queued, scheduled or deferred emails before a worker claims them. Select "
        "them by ID and/or --org (with --scheduled, only those whose send_at is ahead)."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        add_selection_arguments(parser, "cancelled")
        parser.add_argument(
            "--scheduled", action="store_true", help="only emails whose send_at is still ahead"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        selection = Selection(
            ids=tuple(options["ids"]), org=options["org"], scheduled=options["scheduled"]
        )
        if selection.is_empty:
            raise CommandError("Say which emails to cancel: give email IDs and/or --org ORG.")
        fields = ("id", "status", "org", "send_at", "recipients", "subject")
        rows = [dict(row) for row in selection.emails().values(*fields)]
        selected = {row["id"] for row in rows}
        if options["dry_run"]:
            self.stdout.write(
                f"Would cancel {plural(len(rows), 'email')} (dry run, nothing changed)."
            )
            if rows:
                for row in rows:
                    row["send_at"] = row["send_at"].isoformat() if row["send_at"] else ""
                self.stdout.write(render_table(COLUMNS, rows))
        else:
            done = outbox.cancel(OutboundEmail.objects.filter(pk__in=selected))
            self.stdout.write(f"Cancelled {plural(done, 'email')}.")
            left = OutboundEmail.objects.filter(pk__in=selected).exclude(status=Status.CANCELLED)
            for pk, status in left.order_by("pk").values_list("pk", "status"):
                reason = (
                    "it travelled in a batch the API may already have, and a batch is only "
                    "sent again whole"
                    if status in SELECTABLE
                    else f"it became {status} meanwhile"
                )
                self.stderr.write(f"Skipped email #{pk}: {reason}.")
        for pk, reason in selection.skipped({row["id"] for row in rows}).items():
            self.stderr.write(f"Skipped email #{pk}: {reason}.")
