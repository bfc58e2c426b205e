"""``manage.py mailapi_quota ORG``: set an org's daily and monthly limits, pause or resume it."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import CommandError

from django_mailapi import quota
from django_mailapi.conf import get_settings
from django_mailapi.management.arguments import MailapiCommand, limit, text_of_length
from django_mailapi.models import OrgQuota


def describe(row: OrgQuota) -> str:
    conf = get_settings()
    daily = quota.limit_label(row.daily_limit, conf.DAILY_LIMIT)
    monthly = quota.limit_label(row.monthly_limit, conf.MONTHLY_LIMIT)
    state = "paused" if row.paused else "sending"
    return f"{row.org}: daily limit {daily}, monthly limit {monthly}, {state}"


class Command(MailapiCommand):
    help = (
        "Create or update an org's quota. A limit of 'none' means the MAILAPI default "
        "(DAILY_LIMIT / MONTHLY_LIMIT). --pause holds the org's emails; --resume lets them go."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("org", type=text_of_length("ORG", 100))
        # Left out, a limit stays as it is; "none" sets it back to the MAILAPI default.
        for name, period in (("daily", "day"), ("monthly", "month")):
            parser.add_argument(
                f"--{name}",
                type=limit(f"--{name}"),
                default=quota.UNCHANGED,
                metavar="N|none",
                help=f"units per UTC {period}",
            )
        parser.add_argument("--pause", action="store_true", help="stop sending for the org")
        parser.add_argument("--resume", action="store_true", help="let the org send again")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["pause"] and options["resume"]:
            raise CommandError("--pause and --resume cannot be used together.")
        changes: dict[str, Any] = {
            name: options[name]
            for name in ("daily", "monthly")
            if options[name] is not quota.UNCHANGED
        }
        if options["pause"] or options["resume"]:
            changes["paused"] = bool(options["pause"])
        if not changes:
            raise CommandError("Nothing to do: give --daily, --monthly, --pause or --resume.")
        row = quota.set_limits(options["org"], **changes)
        self.stdout.write(describe(row))
