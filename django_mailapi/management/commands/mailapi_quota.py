"""``manage.py mailapi_quota ORG``: set an org's daily and monthly limits, pause or resume it."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from django_mailapi import quota
from django_mailapi.conf import get_settings
from django_mailapi.models import OrgQuota


def parse_limit(option: str, text: str) -> int | None:
    """``"none"`` -> None (use the MAILAPI default); a non-negative integer; else an error."""
    if text.strip().lower() == "none":
        return None
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise CommandError(f"{option} must be a non-negative integer or 'none', not {text!r}.")
    return value


def describe(row: OrgQuota) -> str:
    conf = get_settings()
    daily = quota.limit_label(row.daily_limit, conf.DAILY_LIMIT)
    monthly = quota.limit_label(row.monthly_limit, conf.MONTHLY_LIMIT)
    state = "paused" if row.paused else "sending"
    return f"{row.org}: daily limit {daily}, monthly limit {monthly}, {state}"


class Command(BaseCommand):
    help = (
        "Create or update an org's quota. A limit of 'none' means the MAILAPI default "
        "(DAILY_LIMIT / MONTHLY_LIMIT). --pause holds the org's emails; --resume lets them go."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("org")
        parser.add_argument("--daily", metavar="N|none", help="units per UTC day")
        parser.add_argument("--monthly", metavar="N|none", help="units per UTC month")
        parser.add_argument("--pause", action="store_true", help="stop sending for the org")
        parser.add_argument("--resume", action="store_true", help="let the org send again")

    def handle(self, *args: Any, **options: Any) -> None:
        org: str = options["org"]
        if not org or len(org) > 100:
            raise CommandError("ORG must be 1 to 100 characters long.")
        if options["pause"] and options["resume"]:
            raise CommandError("--pause and --resume cannot be used together.")
        changes: dict[str, Any] = {}
        if options["daily"] is not None:
            changes["daily"] = parse_limit("--daily", options["daily"])
        if options["monthly"] is not None:
            changes["monthly"] = parse_limit("--monthly", options["monthly"])
        if options["pause"] or options["resume"]:
            changes["paused"] = bool(options["pause"])
        if not changes:
            raise CommandError("Nothing to do: give --daily, --monthly, --pause or --resume.")
        row = quota.set_limits(org, **changes)
        self.stdout.write(describe(row))
