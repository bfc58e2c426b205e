"""Orgs and their quotas: which org a message belongs to, and the period maths.

Counting is in "units": one per recipient (to + cc + bcc) or one per message,
per ``QUOTA_UNIT``. Periods are the UTC day and the UTC calendar month.
"""

from __future__ import annotations

import contextvars
import datetime as dt
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.db import connections, router, transaction
from django.db.models import Case, F, PositiveBigIntegerField, Q, Value, When

from .conf import MailapiSettings, mailapi_settings
from .exceptions import QuotaExceeded
from .models import OrgQuota, Period, UsageCounter

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
    """An org's effective limits: its OrgQuota row's, else the MAILAPI defaults."""

    daily: int | None
    monthly: int | None
    paused: bool


def limits_of(row: OrgQuota | None, conf: MailapiSettings = mailapi_settings) -> Limits:
    """The limits an org's OrgQuota row gives it (None: the org has no row)."""
    if row is None:
        return Limits(conf.DAILY_LIMIT, conf.MONTHLY_LIMIT, False)
    return Limits(
        conf.DAILY_LIMIT if row.daily_limit is None else row.daily_limit,
        conf.MONTHLY_LIMIT if row.monthly_limit is None else row.monthly_limit,
        row.paused,
    )


def limits_for(
    org: str, conf: MailapiSettings = mailapi_settings, using: str | None = None
) -> Limits:
    """``using`` reads from that database (a reservation reads where it writes)."""
    rows = OrgQuota.objects.using(using) if using else OrgQuota.objects.all()
    return limits_of(
        rows.filter(org=org).only("daily_limit", "monthly_limit", "paused").first(), conf
    )


def limits_for_orgs(
    orgs: Iterable[str], conf: MailapiSettings = mailapi_settings
) -> dict[str, Limits]:
    """``limits_for`` of many orgs in one query."""
    wanted = set(orgs)
    rows = {q.org: q for q in OrgQuota.objects.filter(org__in=wanted)}
    return {org: limits_of(rows.get(org), conf) for org in wanted}


# --- reserve and release -------------------------------------------------------------------
#
# A reservation takes ``units`` from both the day and the month counter of an org, or from
# neither. On PostgreSQL that is one statement (below): it reads the org's limits, creates
# the two counter rows if they are missing and increments each one only if it stays within
# its limit. ON CONFLICT DO UPDATE locks the counter row and evaluates its WHERE against the
# row's latest committed version, whatever the statement's snapshot, so concurrent workers
# can neither lose an increment nor overshoot a limit. Rows are proposed day first, then
# month, so every reservation (and release) locks an org's counters in the same order and
# two of them cannot deadlock.
#
# If one counter passes and the other does not, the one that moved is moved back by a
# second statement in the same transaction, while its row is still locked by us: no other
# transaction ever sees the half-booked state. That second round trip happens only when a
# reservation is refused by exactly one of the two limits.

_UNLIMITED = 2**63 - 1  # bigint max: "no limit" without NULL handling in SQL

_RESERVE_SQL = """
WITH lim AS (
    SELECT COALESCE(q.paused, FALSE) AS paused,
           COALESCE(q.daily_limit, %(default_daily)s, {unlimited}) AS daily,
           COALESCE(q.monthly_limit, %(default_monthly)s, {unlimited}) AS monthly
    FROM (SELECT 1) AS one
    LEFT JOIN {quota} AS q ON q.org = %(org)s
),
booked AS (
    INSERT INTO {counter} AS c (org, period, period_start, units_sent, units_failed)
    SELECT %(org)s, v.period, v.period_start, %(units)s, 0
    FROM (VALUES (1, 'day', %(day)s::date), (2, 'month', %(month)s::date))
         AS v(rank, period, period_start)
    CROSS JOIN lim
    WHERE NOT lim.paused AND %(units)s <= lim.daily AND %(units)s <= lim.monthly
    ORDER BY v.rank
    ON CONFLICT (org, period, period_start) DO UPDATE
        SET units_sent = c.units_sent + EXCLUDED.units_sent
        WHERE c.units_sent + EXCLUDED.units_sent <= CASE
            WHEN c.period = 'day' THEN (SELECT daily FROM lim)
            ELSE (SELECT monthly FROM lim)
        END
    RETURNING c.id, c.period
)
SELECT lim.paused, lim.daily, lim.monthly, booked.id, booked.period
FROM lim LEFT JOIN booked ON TRUE
"""

_UNBOOK_SQL = "UPDATE {counter} SET units_sent = units_sent - %s WHERE id = %s"

_RELEASE_SQL = """
INSERT INTO {counter} AS c (org, period, period_start, units_sent, units_failed)
VALUES (%(org)s, 'day', %(day)s::date, 0, %(failed)s),
       (%(org)s, 'month', %(month)s::date, 0, %(failed)s)
ON CONFLICT (org, period, period_start) DO UPDATE
    SET units_sent = GREATEST(c.units_sent - %(units)s, 0),
        units_failed = c.units_failed + EXCLUDED.units_failed
"""


def _sql(template: str, using: str) -> str:
    quote = connections[using].ops.quote_name
    return template.format(
        counter=quote(UsageCounter._meta.db_table),
        quota=quote(OrgQuota._meta.db_table),
        unlimited=_UNLIMITED,
    )


def _refusal(org: str, limits: Limits, failed: set[str]) -> QuotaExceeded:
    if limits.paused:
        return QuotaExceeded(f"Org {org!r} is paused.", code="org_paused", org=org)
    # A full month wins: deferring to tomorrow would only be refused again.
    if "month" in failed:
        return QuotaExceeded(
            f"Org {org!r} has used its monthly limit of {limits.monthly}.",
            code="monthly_quota_exceeded",
            org=org,
            period="month",
        )
    return QuotaExceeded(
        f"Org {org!r} has used its daily limit of {limits.daily}.",
        code="daily_quota_exceeded",
        org=org,
        period="day",
    )


def _reserve_postgresql(
    org: str, units: int, day: dt.date, month: dt.date, conf: MailapiSettings, using: str
) -> QuotaExceeded | None:
    params: dict[str, Any] = {
        "org": org,
        "units": units,
        "day": day,
        "month": month,
        "default_daily": conf.DAILY_LIMIT,
        "default_monthly": conf.MONTHLY_LIMIT,
    }
    with connections[using].cursor() as cursor:
        cursor.execute(_sql(_RESERVE_SQL, using), params)
        rows = cursor.fetchall()
        paused, daily, monthly = rows[0][:3]
        booked = {period: pk for *_, pk, period in rows if pk is not None}
        if len(booked) == 2:
            return None
        for pk in booked.values():  # exactly one limit refused: move the other back
            cursor.execute(_sql(_UNBOOK_SQL, using), [units, pk])
    limits = Limits(
        None if daily == _UNLIMITED else daily, None if monthly == _UNLIMITED else monthly, paused
    )
    if paused or booked:
        failed = {"day", "month"} - set(booked)
    else:  # nothing was proposed (the units exceed a limit outright), or both refused
        failed = {p for p in ("day", "month") if not _fits(p, units, limits)} or {"day", "month"}
    return _refusal(org, limits, failed)


def _fits(period: str, units: int, limits: Limits) -> bool:
    limit = limits.daily if period == "day" else limits.monthly
    return limit is None or units <= limit


#: MySQL/MariaDB: create a counter row, or lock the one there is, in one statement. The
#: no-op ON DUPLICATE KEY UPDATE takes an exclusive lock where a plain INSERT IGNORE
#: would take a shared one: two reservations both holding shared locks and both
#: wanting to write would deadlock (error 1213).
_HOLD_MYSQL = """
INSERT INTO {counter} (org, period, period_start, units_sent, units_failed)
VALUES (%s, %s, %s, 0, 0)
ON DUPLICATE KEY UPDATE units_sent = units_sent
"""


def _hold_counters(org: str, day: dt.date, month: dt.date, using: str) -> dict[str, Any]:
    """Create the org's day and month counters if missing and lock them, day first (the
    order every reservation and release locks them in, on every database, so two of
    them never wait for each other crosswise). Returns {period: (pk, units_sent)}."""
    counters = UsageCounter.objects.using(using)
    periods = ((Period.DAY, day), (Period.MONTH, month))
    if connections[using].vendor == "mysql":
        with connections[using].cursor() as cursor:
            for period, start in periods:
                cursor.execute(_sql(_HOLD_MYSQL, using), [org, str(period), start])
    else:
        # SQLite: this INSERT takes the database's single write lock, so nobody else
        # reserves until the transaction ends.
        counters.bulk_create(
            [UsageCounter(org=org, period=p, period_start=start) for p, start in periods],
            ignore_conflicts=True,
        )
    held: dict[str, Any] = {}
    for period, start in periods:
        held[str(period)] = (
            counters.select_for_update()
            .filter(org=org, period=period, period_start=start)
            .values_list("pk", "units_sent")
            .get()
        )
    return held


def _reserve_portable(
    org: str, units: int, day: dt.date, month: dt.date, conf: MailapiSettings, using: str
) -> QuotaExceeded | None:
    """Any other database (MySQL/MariaDB, SQLite), inside the caller's transaction: lock
    both counters (day first), compare them with the limits, then book both or neither."""
    limits = limits_for(org, conf, using)
    if limits.paused:
        return _refusal(org, limits, set())
    held = _hold_counters(org, day, month, using)
    failed = {
        period
        for period, limit in (("day", limits.daily), ("month", limits.monthly))
        if limit is not None and held[period][1] + units > limit
    }
    if failed:
        return _refusal(org, limits, failed)
    UsageCounter.objects.using(using).filter(pk__in=[pk for pk, _ in held.values()]).update(
        units_sent=F("units_sent") + units
    )
    return None


def _native(using: str) -> bool:
    return connections[using].vendor == "postgresql"


def reserve(
    org: str, units: int, now: dt.datetime, conf: MailapiSettings = mailapi_settings
) -> dt.date:
    """Take ``units`` from today's and this month's allowance, or raise QuotaExceeded.

    Both counters move, or neither. Returns the UTC day the reservation is booked on
    (``release`` needs it). The statement runs in the caller's transaction if there is
    one (the outbox stores the reservation on the email in the same transaction), and
    in its own otherwise. QuotaExceeded is raised after that transaction block, so a
    refusal never marks the caller's transaction for rollback.

    Everything runs on the database the router picks for writing UsageCounter (which
    must also hold OrgQuota: the statement reads both).
    """
    if units < 0:
        raise ValueError("units must not be negative")
    day, month = day_start(now), month_start(now)
    using = router.db_for_write(UsageCounter)
    book = _reserve_postgresql if _native(using) else _reserve_portable
    with transaction.atomic(using=using, savepoint=False):
        refusal = book(org, units, day, month, conf, using)
    if refusal is not None:
        raise refusal
    return day


def release(org: str, units: int, day: dt.date, *, failed: bool) -> None:
    """Give back a reservation made on ``day`` (the email was not sent).

    ``failed=True`` (the email will not be retried) also adds the units to the
    counters' ``units_failed``. One statement on PostgreSQL.
    """
    if units <= 0:
        return
    month = day.replace(day=1)
    using = router.db_for_write(UsageCounter)
    if _native(using):
        params: dict[str, Any] = {
            "org": org,
            "units": units,
            "day": day,
            "month": month,
            "failed": units if failed else 0,
        }
        with connections[using].cursor() as cursor:
            cursor.execute(_sql(_RELEASE_SQL, using), params)
        return
    # Never below zero, and never a negative intermediate either: MySQL computes
    # ``units_sent - units`` in the column's unsigned type and fails (error 1690) before
    # any GREATEST(…, 0) could apply.
    lowered = Case(
        When(units_sent__gt=units, then=F("units_sent") - units),
        default=Value(0),
        output_field=PositiveBigIntegerField(),
    )
    with transaction.atomic(using=using, savepoint=False):
        for period, start in ((Period.DAY, day), (Period.MONTH, month)):  # day first
            changes: dict[str, Any] = {"units_sent": lowered}
            if failed:
                changes["units_failed"] = F("units_failed") + units
            UsageCounter.objects.using(using).filter(
                org=org, period=period, period_start=start
            ).update(**changes)


# --- reading usage -------------------------------------------------------------------------
def usage_for_orgs(orgs: Iterable[str], now: dt.datetime) -> dict[str, dict[str, int]]:
    """Units each of ``orgs`` used on ``now``'s UTC day and month, in one query."""
    wanted = set(orgs)
    day, month = day_start(now), month_start(now)
    found: dict[str, dict[str, int]] = {org: {"day": 0, "month": 0} for org in wanted}
    rows = UsageCounter.objects.filter(org__in=wanted).filter(
        Q(period=Period.DAY, period_start=day) | Q(period=Period.MONTH, period_start=month)
    )
    for org, period, sent in rows.values_list("org", "period", "units_sent"):
        found[org][str(period)] = sent
    return found


def usage(org: str, now: dt.datetime | None = None) -> dict[str, int]:
    """Units ``org`` has used today and this month (UTC): ``{"day": n, "month": n}``."""
    from django.utils import timezone

    return usage_for_orgs([org], now or timezone.now())[org]


def remaining(
    org: str, now: dt.datetime | None = None, conf: MailapiSettings = mailapi_settings
) -> dict[str, int | None]:
    """Units ``org`` may still send today and this month: ``{"day": n, "month": n}``.

    None means unlimited; a paused org has 0 left in both periods.
    """
    limits = limits_for(org, conf)
    used = usage(org, now)
    left: dict[str, int | None] = {}
    for period, limit in (("day", limits.daily), ("month", limits.monthly)):
        if limits.paused:
            left[period] = 0
        else:
            left[period] = None if limit is None else max(0, limit - used[period])
    return left


def check_enqueue(rows: Any, conf: MailapiSettings, now: dt.datetime) -> None:
    """Raise QuotaExceeded if any org in ``rows`` is already over (CHECK_QUOTA_ON_ENQUEUE).

    A courtesy check against committed counters, not a reservation: workers still
    reserve before sending, so a race here can only let an email reach the outbox,
    where it is deferred as usual.
    """
    wanted: dict[str, int] = {}
    for row in rows:
        wanted[row.org] = wanted.get(row.org, 0) + units_for(row.recipient_count, conf)
    all_limits = limits_for_orgs(wanted, conf)
    all_used = usage_for_orgs(wanted, now)
    for org, units in sorted(wanted.items()):
        limits, used = all_limits[org], all_used[org]
        if limits.paused:
            raise QuotaExceeded(f"Org {org!r} is paused.", code="org_paused", org=org)
        for period, limit, code in (
            ("month", limits.monthly, "monthly_quota_exceeded"),
            ("day", limits.daily, "daily_quota_exceeded"),
        ):
            if limit is not None and used[period] + units > limit:
                raise QuotaExceeded(
                    f"Org {org!r} would exceed its {period} limit of {limit} "
                    f"({used[period]} used, {units} more asked).",
                    code=code,
                    org=org,
                    period=period,
                )


# --- managing limits -----------------------------------------------------------------------
#: ``set_limits`` argument meaning "leave as it is".
UNCHANGED: Any = object()


def set_limits(
    org: str,
    *,
    daily: int | None = UNCHANGED,
    monthly: int | None = UNCHANGED,
    paused: bool | None = None,
) -> Any:
    """Create or update ``org``'s OrgQuota row; None as a limit means "the default"."""
    from django.utils import timezone

    for name, value in (("daily", daily), ("monthly", monthly)):
        if value is not UNCHANGED and value is not None and value < 0:
            raise ValueError(f"The {name} limit must be a non-negative integer or None.")
    using = router.db_for_write(OrgQuota)
    with transaction.atomic(using=using):
        rows = OrgQuota.objects.using(using).select_for_update()
        row, _created = rows.get_or_create(org=org)
        if daily is not UNCHANGED:
            row.daily_limit = daily
        if monthly is not UNCHANGED:
            row.monthly_limit = monthly
        if paused is not None:
            row.paused = paused
        row.updated_at = timezone.now()
        row.save(
            using=using, update_fields=["daily_limit", "monthly_limit", "paused", "updated_at"]
        )
    return row


def limit_label(own: int | None, default: int | None) -> str:
    """How a limit reads to people: ``"5"``, ``"100 (default)"``, ``"unlimited"``."""
    if own is not None:
        return str(own)
    return "unlimited" if default is None else f"{default} (default)"


# --- reports -------------------------------------------------------------------------------
@dataclass(frozen=True)
class OrgUsage:
    """One org's usage against its limits on one UTC day and in that day's month."""

    org: str
    daily_limit: int | None
    day: dt.date
    sent_today: int
    monthly_limit: int | None
    month: dt.date
    sent_this_month: int
    paused: bool

    def as_json(self) -> dict[str, Any]:
        """The stable JSON shape of ``mailapi_usage --format json``."""
        return {
            "org": self.org,
            "daily_limit": self.daily_limit,
            "day": self.day.isoformat(),
            "sent_today": self.sent_today,
            "monthly_limit": self.monthly_limit,
            "month": self.month.strftime("%Y-%m"),
            "sent_this_month": self.sent_this_month,
        }


def usage_report(
    day: dt.date, org: str | None = None, conf: MailapiSettings = mailapi_settings
) -> list[OrgUsage]:
    """Usage of every org with an OrgQuota row or a counter in ``day``'s month (or of ``org``)."""
    month = day.replace(day=1)
    if org is not None:
        orgs = {org}
    else:
        orgs = set(OrgQuota.objects.values_list("org", flat=True))
        orgs.update(
            UsageCounter.objects.filter(period_start__gte=month, period_start__lt=_next(month))
            .values_list("org", flat=True)
            .distinct()
        )
    limits = limits_for_orgs(orgs, conf)
    used = usage_for_orgs(orgs, dt.datetime.combine(day, dt.time(), tzinfo=dt.timezone.utc))
    return [
        OrgUsage(
            org=name,
            daily_limit=limits[name].daily,
            day=day,
            sent_today=used[name]["day"],
            monthly_limit=limits[name].monthly,
            month=month,
            sent_this_month=used[name]["month"],
            paused=limits[name].paused,
        )
        for name in sorted(orgs)
    ]


def _next(month: dt.date) -> dt.date:
    return next_month(dt.datetime.combine(month, dt.time(), tzinfo=dt.timezone.utc)).date()


def daily_series(
    orgs: Iterable[str] | None, first: dt.date, last: dt.date
) -> dict[str, dict[dt.date, int]]:
    """Units sent per org per UTC day from ``first`` to ``last`` (inclusive), one query."""
    rows = UsageCounter.objects.filter(
        period=Period.DAY, period_start__gte=first, period_start__lte=last
    )
    if orgs is not None:
        rows = rows.filter(org__in=list(orgs))
    series: dict[str, dict[dt.date, int]] = {}
    for org, start, sent in rows.values_list("org", "period_start", "units_sent"):
        series.setdefault(org, {})[start] = sent
    return series
