"""``manage.py mailapi_purge --older-than DAYS``: delete old sent emails, failures, counters.

What is deleted and what is kept is described in :mod:`django_mailapi.purge`.
"""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django_mailapi.management.arguments import MailapiCommand, non_negative_int
from django_mailapi.purge import purge


class Command(MailapiCommand):
    help = (
        "Delete sent and cancelled emails (with their failed sends), failed sends of "
        "settled emails, usage counters of periods that ended, and delivery events that "
        "found no email, all older than DAYS. "
        "Queued, sending and deferred emails are never deleted."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--older-than",
            type=non_negative_int("--older-than", "days"),
            required=True,
            metavar="DAYS",
            dest="older_than",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="print the counts, delete nothing"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        counts = purge(options["older_than"], dry_run=options["dry_run"])
        verb = "would be deleted" if options["dry_run"] else "deleted"
        self.stdout.write(f"emails: {counts.emails} {verb}")
        self.stdout.write(f"failed sends: {counts.failed_sends} {verb}")
        self.stdout.write(f"usage counters: {counts.usage_counters} {verb}")
        self.stdout.write(f"delivery events: {counts.delivery_events} {verb}")
        if options["dry_run"]:
            self.stdout.write("Dry run: nothing was deleted.")
