"""``manage.py mailapi_usage``: usage against limits per org, for a UTC day and its month."""

from __future__ import annotations

import datetime as dt
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from django_mailapi import quota
from django_mailapi.management.quota_output import dump_json, render_table

HEADERS = ("org", "day", "sent today", "daily limit", "month", "sent this month", "monthly limit")


def _limit(value: int | None) -> str:
    return "unlimited" if value is None else str(value)


def usage_table(report: list[quota.OrgUsage], day: dt.date) -> str:
    if not report:
        return f"No org has a quota or any usage in {day:%Y-%m}."
    rows = [
        (
            f"{u.org} (paused)" if u.paused else u.org,
            u.day.isoformat(),
            str(u.sent_today),
            _limit(u.daily_limit),
            u.month.strftime("%Y-%m"),
            str(u.sent_this_month),
            _limit(u.monthly_limit),
        )
        for u in report
    ]
    return render_table(HEADERS, rows, numeric=(2, 3, 5, 6))


class Command(BaseCommand):
    help = (
        "Show each org's usage against its limits for a UTC day (default: today) and that "
        "day's month. Lists orgs with an OrgQuota row or any usage in the month."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--org", help="only this org")
        parser.add_argument("--date", help="the UTC day, YYYY-MM-DD (default: today)")
        parser.add_argument("--format", choices=("table", "json"), default="table")

    def handle(self, *args: Any, **options: Any) -> None:
        day = self._day(options["date"])
        report = quota.usage_report(day, options["org"])
        if options["format"] == "json":
            self.stdout.write(dump_json([u.as_json() for u in report]))
        else:
            self.stdout.write(usage_table(report, day))

    @staticmethod
    def _day(text: str | None) -> dt.date:
        if text is None:
            return quota.day_start(timezone.now())
        try:
            return dt.date.fromisoformat(text)
        except ValueError:
            raise CommandError(f"--date must be a day written YYYY-MM-DD, not {text!r}.") from None
