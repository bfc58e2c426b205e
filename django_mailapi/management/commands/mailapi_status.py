"""``manage.py mailapi_status``: is mail flowing? One look for a person, or for a monitor.

The figures, and the indexes that keep them cheap, are ``django_mailapi.status``'s.
"""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import CommandError
from django.utils import timezone

from django_mailapi.management.arguments import (
    MailapiCommand,
    add_format_argument,
    non_negative_int,
)
from django_mailapi.management.output import Column, cell, render_json_object, render_table
from django_mailapi.status import StatusReport

STATUS_COLUMNS = (Column("status", "status"), Column("emails", "emails", right=True))
FAILURE_COLUMNS = (Column("code", "code"), Column("failures", "failures", right=True))


def as_table(report: StatusReport) -> str:
    """The report as a person reads it: tables and sentences."""
    statuses = render_table(
        STATUS_COLUMNS, [{"status": s, "emails": n} for s, n in report.statuses.items()]
    )
    if report.oldest_due_seconds is None:
        due = "Oldest due email: none waiting"
    else:
        due = f"Oldest due email: waiting {report.oldest_due_seconds} s"
    if report.failures_last_hour:
        rows = [{"code": c, "failures": n} for c, n in report.failures_last_hour.items()]
        failures = "Failures in the last hour:\n" + render_table(FAILURE_COLUMNS, rows)
    else:
        failures = "Failures in the last hour: none"
    if report.last_event_at is None:
        event = "Last delivery event received: never"
    else:
        event = f"Last delivery event received: {cell(report.last_event_at)} UTC"
    return "\n\n".join([statuses, due, failures, event])


class Command(MailapiCommand):
    help = (
        "Show emails per status, how long the oldest due email has waited, the last "
        "hour's failures by code and when the last delivery event arrived. With "
        "--max-age, exit with status 1 when the oldest due email has waited longer."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        add_format_argument(parser)
        parser.add_argument(
            "--max-age",
            type=non_negative_int("--max-age", "seconds"),
            metavar="SECONDS",
            help="exit with status 1 if the oldest due email has waited longer than this",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        report = StatusReport.read(timezone.now())
        if options["format"] == "json":
            self.stdout.write(render_json_object(report.as_json()))
        else:
            self.stdout.write(as_table(report))
        max_age = options["max_age"]
        waited = report.oldest_due_seconds
        if max_age is not None and waited is not None and waited > max_age:
            raise CommandError(
                f"The oldest due email has waited {waited} s, longer than --max-age {max_age}.",
                returncode=1,
            )
