"""``manage.py mailapi_failed``: list failed sends with their code and suggested action."""

from __future__ import annotations

import datetime as dt
from argparse import ArgumentParser
from dataclasses import dataclass
from typing import Any

from django_mailapi.management.arguments import (
    MailapiCommand,
    add_format_argument,
    choice,
    date,
    positive_int,
)
from django_mailapi.management.output import Column, render_json, render_table
from django_mailapi.models import FailedSend, Status

DEFAULT_LIMIT = 50

#: Keys of ``--format json``, in this order (a stable contract for scripts).
JSON_KEYS = (
    "id",
    "email_id",
    "org",
    "provider",
    "error_code",
    "http_status",
    "message",
    "suggested_action",
    "will_retry",
    "recipients",
    "subject",
    "created_at",
)

COLUMNS = (
    Column("id", "ID"),
    Column("created_at", "CREATED (UTC)"),
    Column("org", "ORG", 20),
    Column("error_code", "CODE", 32),
    Column("http", "HTTP"),
    Column("will_retry", "RETRY"),
    Column("email", "EMAIL"),
    Column("recipients", "TO", 30),
    Column("suggested_action", "SUGGESTED ACTION", 70),
)


@dataclass(frozen=True)
class FailedQuery:
    """Which failed sends to list, newest first."""

    org: str | None = None
    code: str | None = None
    status: str | None = None
    since: dt.date | None = None
    limit: int = DEFAULT_LIMIT

    def rows(self) -> list[dict[str, Any]]:
        # The email's payload can be large and is not shown.
        failures = FailedSend.objects.select_related("email").defer("email__payload")
        if self.org:
            failures = failures.filter(org=self.org)
        if self.code:
            failures = failures.filter(error_code=self.code)
        if self.status:
            failures = failures.filter(email__status=self.status)
        if self.since:
            start = dt.datetime.combine(self.since, dt.time.min, tzinfo=dt.timezone.utc)
            failures = failures.filter(created_at__gte=start)
        return [as_row(f) for f in failures.order_by("-created_at", "-id")[: self.limit]]


def as_row(failure: FailedSend) -> dict[str, Any]:
    return {
        "id": failure.pk,
        "email_id": failure.email_id,
        "org": failure.org,
        "provider": failure.provider,
        "error_code": failure.error_code,
        "http_status": failure.http_status,
        "message": failure.message,
        "suggested_action": failure.suggested_action,
        "will_retry": failure.will_retry,
        "recipients": failure.email.recipients,
        "subject": failure.email.subject,
        "created_at": failure.created_at.astimezone(dt.timezone.utc).isoformat(),
    }


def render(rows: list[dict[str, Any]], fmt: str) -> str:
    if fmt == "json":
        return render_json(rows)
    if not rows:
        return "No failed sends match."
    table_rows = [
        {
            **row,
            "created_at": dt.datetime.fromisoformat(row["created_at"]),
            "http": "local" if row["http_status"] is None else row["http_status"],
            "email": f"#{row['email_id']}",
        }
        for row in rows
    ]
    return render_table(COLUMNS, table_rows)


class Command(MailapiCommand):
    help = "List failed sends, newest first, with their error code and suggested action."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--org", help="only this org")
        parser.add_argument("--code", help="only this error code")
        parser.add_argument(
            "--status",
            type=choice("--status", Status.values),
            choices=Status.values,
            help="only failures of emails now in this status",
        )
        parser.add_argument(
            "--since", type=date("--since"), metavar="YYYY-MM-DD", help="only from this UTC day on"
        )
        parser.add_argument(
            "--limit",
            type=positive_int("--limit"),
            default=DEFAULT_LIMIT,
            metavar="N",
            help=f"at most N rows (default {DEFAULT_LIMIT})",
        )
        add_format_argument(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        query = FailedQuery(
            org=options["org"],
            code=options["code"],
            status=options["status"],
            since=options["since"],
            limit=options["limit"],
        )
        self.stdout.write(render(query.rows(), options["format"]))
