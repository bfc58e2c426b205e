"""Orgs and their quotas: which org a message belongs to, and the period maths.

Counting is in "units": one per recipient (to + cc + bcc) or one per message,
per ``QUOTA_UNIT``. Periods are the UTC day and the UTC calendar month.
"""

from __future__ import annotations

import contextvars
import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models import F

from .conf import MailapiSettings, mailapi_settings
from .exceptions import QuotaExceeded

_current_org: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "mailapi_org", default=None
)


@contextmanager
def for_org(org: str) -> Iterator[str]:
    """Send every message in the block on behalf of ``org`` (innermost block wins)."""
    if not isinstance(org, str) or not org:
        raise ValueError("for_org() needs a non-empty org name.")
    token = _current_org.set(org)
    try:
        yield org
    finally:
        _current_org.reset(token)


def resolve_org(message: Any, conf: MailapiSettings = mailapi_settings) -> str:
    """``message.org``, then ORG_RESOLVER(message), then for_org(), then DEFAULT_ORG."""
    org = getattr(message, "org", None)
    if not org:
        resolver = conf.ORG_RESOLVER
        org = resolver(message) if resolver is not None else None
    if not org:
        org = _current_org.get()
    return str(org or conf.DEFAULT_ORG)


def units_for(recipient_count: int, conf: MailapiSettings = mailapi_settings) -> int:
    return recipient_count if conf.QUOTA_UNIT == "recipient" else 1


def day_start(now: dt.datetime) -> dt.date:
    return now.astimezone(dt.timezone.utc).date()


def month_start(now: dt.datetime) -> dt.date:
    return day_start(now).replace(day=1)


def next_day(now: dt.datetime) -> dt.datetime:
    start = day_start(now) + dt.timedelta(days=1)
    return dt.datetime.combine(start, dt.time(), tzinfo=dt.timezone.utc)


def next_month(now: dt.datetime) -> dt.datetime:
    first = month_start(now)
    year, month = (first.year + 1, 1) if first.month == 12 else (first.year, first.month + 1)
    return dt.datetime(year, month, 1, tzinfo=dt.timezone.utc)


@dataclass(frozen=True)
class Limits:
    daily: int | None
    monthly: int | None
    paused: bool


def limits_for(org: str, conf: MailapiSettings = mailapi_settings) -> Limits:
    from .models import OrgQuota

    row = OrgQuota.objects.filter(org=org).values("daily_limit", "monthly_limit", "paused").first()
    if row is None:
        return Limits(conf.DAILY_LIMIT, conf.MONTHLY_LIMIT, False)
    return Limits(
        row["daily_limit"] if row["daily_limit"] is not None else conf.DAILY_LIMIT,
        row["monthly_limit"] if row["monthly_limit"] is not None else conf.MONTHLY_LIMIT,
        row["paused"],
    )


def _ensure_counters(org: str, day: dt.date, month: dt.date) -> None:
    from .models import Period, UsageCounter

    UsageCounter.objects.bulk_create(
        [
            UsageCounter(org=org, period=Period.DAY, period_start=day),
            UsageCounter(org=org, period=Period.MONTH, period_start=month),
        ],
        ignore_conflicts=True,
    )


def reserve(
    org: str, units: int, now: dt.datetime, conf: MailapiSettings = mailapi_settings
) -> dt.date:
    """Take ``units`` from today's and this month's allowance, or raise QuotaExceeded.

    Both counters move in one transaction, each by a conditional UPDATE, so concurrent
    workers can neither lose an increment nor overshoot a limit. Returns the UTC day the
    reservation is booked on (needed to release it).
    """
    from .models import Period, UsageCounter

    limits = limits_for(org, conf)
    if limits.paused:
        raise QuotaExceeded(f"Org {org!r} is paused.", code="org_paused", org=org)
    day, month = day_start(now), month_start(now)
    _ensure_counters(org, day, month)
    with transaction.atomic():
        for period, start, limit, code in (
            (Period.DAY, day, limits.daily, "daily_quota_exceeded"),
            (Period.MONTH, month, limits.monthly, "monthly_quota_exceeded"),
        ):
            qs = UsageCounter.objects.filter(org=org, period=period, period_start=start)
            if limit is not None:
                qs = qs.filter(units_sent__lte=limit - units)
            if qs.update(units_sent=F("units_sent") + units) != 1:
                raise QuotaExceeded(
                    f"Org {org!r} has used its {period} limit of {limit}.",
                    code=code,
                    org=org,
                    period=str(period),
                )
    return day


def release(org: str, units: int, day: dt.date, *, failed: bool) -> None:
    """Give back a reservation made on ``day`` (the email was not sent)."""
    from .models import Period, UsageCounter

    if units <= 0:
        return
    month = day.replace(day=1)
    with transaction.atomic():
        for period, start in ((Period.DAY, day), (Period.MONTH, month)):
            changes: dict[str, Any] = {"units_sent": F("units_sent") - units}
            if failed:
                changes["units_failed"] = F("units_failed") + units
            UsageCounter.objects.filter(
                org=org, period=period, period_start=start, units_sent__gte=units
            ).update(**changes)


def usage(org: str, now: dt.datetime | None = None) -> dict[str, int]:
    """Units ``org`` has used today and this month (UTC)."""
    from django.utils import timezone

    from .models import Period, UsageCounter

    now = now or timezone.now()
    found = dict(
        UsageCounter.objects.filter(
            org=org,
            period__in=[Period.DAY, Period.MONTH],
            period_start__in=[day_start(now), month_start(now)],
        ).values_list("period", "units_sent")
    )
    return {"day": found.get(Period.DAY, 0), "month": found.get(Period.MONTH, 0)}


def check_enqueue(rows: Any, conf: MailapiSettings, now: dt.datetime) -> None:
    """Raise QuotaExceeded if any org in ``rows`` is already over (CHECK_QUOTA_ON_ENQUEUE)."""
    wanted: dict[str, int] = {}
    for row in rows:
        wanted[row.org] = wanted.get(row.org, 0) + units_for(row.recipient_count, conf)
    for org, units in wanted.items():
        limits = limits_for(org, conf)
        if limits.paused:
            raise QuotaExceeded(f"Org {org!r} is paused.", code="org_paused", org=org)
        used = usage(org, now)
        for period, limit, code in (
            ("day", limits.daily, "daily_quota_exceeded"),
            ("month", limits.monthly, "monthly_quota_exceeded"),
        ):
            if limit is not None and used[period] + units > limit:
                raise QuotaExceeded(
                    f"Org {org!r} would exceed its {period} limit of {limit} "
                    f"({used[period]} used, {units} more asked).",
                    code=code,
                    org=org,
                    period=period,
                )
