"""``manage.py mailapi_usage``: usage against limits per org, for a UTC day and its month."""

from __future__ import annotations

import datetime as dt
from argparse import ArgumentParser
from typing import Any

from django.utils import timezone

from django_mailapi import quota
from django_mailapi.management.arguments import MailapiCommand, add_format_argument, date
from django_mailapi.management.output import Column, render_json, render_table

COLUMNS = (
    Column("org", "org"),
    Column("day", "day"),
    Column("sent_today", "sent today", right=True),
    Column("daily_limit", "daily limit", right=True),
    Column("month", "month"),
    Column("sent_this_month", "sent this month", right=True),
    Column("monthly_limit", "monthly limit", right=True),
)


def _limit(value: int | None) -> str:
    return "unlimited" if value is None else str(value)


def usage_table(report: list[quota.OrgUsage], day: dt.date) -> str:
    if not report:
        return f"No org has a quota or any usage in {day:%Y-%m}."
    rows = [
        {
            **usage.as_json(),
            "org": f"{usage.org} (paused)" if usage.paused else usage.org,
            "daily_limit": _limit(usage.daily_limit),
            "monthly_limit": _limit(usage.monthly_limit),
        }
        for usage in report
    ]
    return render_table(COLUMNS, rows)


class Command(MailapiCommand):
    help = (
        "Show each org's usage against its limits for a UTC day (default: today) and that "
        "day's month. Lists orgs with an OrgQuota row or any usage in the month."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--org", help="only this org")
        parser.add_argument(
            "--date",
            type=date("--date"),
            metavar="YYYY-MM-DD",
            help="the UTC day (default: today)",
        )
        add_format_argument(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        day = options["date"] or quota.day_start(timezone.now())
        report = quota.usage_report(day, options["org"])
        if options["format"] == "json":
            self.stdout.write(render_json([u.as_json() for u in report]))
        else:
            self.stdout.write(usage_table(report, day))
