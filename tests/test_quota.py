"""quota.reserve / release / usage / remaining and the period maths, against the database."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from django_mailapi import quota
from django_mailapi.exceptions import QuotaExceeded
from django_mailapi.models import OrgQuota, UsageCounter

pytestmark = pytest.mark.django_db

UTC = dt.timezone.utc
NOON = dt.datetime(2024, 5, 17, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["native", "portable"])
def path(request, monkeypatch):
    """Run a test through the PostgreSQL statement and through the portable fallback."""
    if request.param == "native":
        if connection.vendor != "postgresql":
            pytest.skip("the single-statement reservation is PostgreSQL's")
    else:
        monkeypatch.setattr(quota, "_native", lambda using: False)
    return request.param


def counters(org: str) -> dict[tuple[str, str], tuple[int, int]]:
    return {
        (c.period, c.period_start.isoformat()): (c.units_sent, c.units_failed)
        for c in UsageCounter.objects.filter(org=org)
    }


def test_reserve_books_units_on_the_day_and_the_month_counter(path):
    assert quota.reserve("acme", 3, NOON) == dt.date(2024, 5, 17)
    quota.reserve("acme", 2, NOON)

    assert counters("acme") == {("day", "2024-05-17"): (5, 0), ("month", "2024-05-01"): (5, 0)}


def test_reserve_up_to_the_daily_limit_then_refuses_without_moving_either_counter(path):
    OrgQuota.objects.create(org="acme", daily_limit=5)
    quota.reserve("acme", 4, NOON)
    quota.reserve("acme", 1, NOON)

    with pytest.raises(QuotaExceeded) as info:
        quota.reserve("acme", 1, NOON)

    assert info.value.code == "daily_quota_exceeded"
    assert info.value.period == "day"
    assert counters("acme") == {("day", "2024-05-17"): (5, 0), ("month", "2024-05-01"): (5, 0)}


def test_month_refusal_moves_the_day_counter_back(path, settings):
    settings.MAILAPI = {**settings.MAILAPI, "MONTHLY_LIMIT": 10, "DAILY_LIMIT": 100}
    quota.reserve("acme", 8, NOON - dt.timedelta(days=3))

    with pytest.raises(QuotaExceeded) as info:
        quota.reserve("acme", 3, NOON)

    assert info.value.code == "monthly_quota_exceeded"
    assert counters("acme") == {
        ("day", "2024-05-14"): (8, 0),
        ("day", "2024-05-17"): (0, 0),
        ("month", "2024-05-01"): (8, 0),
    }
    quota.reserve("acme", 2, NOON)
    assert quota.usage("acme", NOON) == {"day": 2, "month": 10}


def test_a_full_month_is_reported_before_a_full_day(path):
    OrgQuota.objects.create(org="acme", daily_limit=2, monthly_limit=2)
    quota.reserve("acme", 2, NOON)

    with pytest.raises(QuotaExceeded) as info:
        quota.reserve("acme", 1, NOON)

    assert info.value.code == "monthly_quota_exceeded"


def test_an_email_bigger_than_a_limit_is_refused_outright(path):
    OrgQuota.objects.create(org="acme", daily_limit=3, monthly_limit=100)

    with pytest.raises(QuotaExceeded) as info:
        quota.reserve("acme", 4, NOON)

    assert info.value.code == "daily_quota_exceeded"
    assert sum(units for units, _ in counters("acme").values()) == 0


def test_a_paused_org_reserves_nothing(path):
    OrgQuota.objects.create(org="acme", paused=True)

    with pytest.raises(QuotaExceeded) as info:
        quota.reserve("acme", 1, NOON)

    assert info.value.code == "org_paused"
    assert counters("acme") == {}


def test_a_null_limit_on_the_org_row_falls_back_to_the_settings_default(path, settings):
    settings.MAILAPI = {**settings.MAILAPI, "DAILY_LIMIT": 2}
    OrgQuota.objects.create(org="acme", daily_limit=None, monthly_limit=50)
    quota.reserve("acme", 2, NOON)

    with pytest.raises(QuotaExceeded):
        quota.reserve("acme", 1, NOON)
    assert quota.limits_for("acme") == quota.Limits(daily=2, monthly=50, paused=False)


def test_a_zero_limit_refuses_everything(path):
    OrgQuota.objects.create(org="acme", monthly_limit=0)

    with pytest.raises(QuotaExceeded) as info:
        quota.reserve("acme", 1, NOON)

    assert info.value.code == "monthly_quota_exceeded"


def test_release_gives_units_back_and_counts_failures(path):
    day = quota.reserve("acme", 3, NOON)

    quota.release("acme", 2, day, failed=False)
    assert counters("acme") == {("day", "2024-05-17"): (1, 0), ("month", "2024-05-01"): (1, 0)}

    quota.release("acme", 1, day, failed=True)
    assert counters("acme") == {("day", "2024-05-17"): (0, 1), ("month", "2024-05-01"): (0, 1)}


def test_release_never_takes_a_counter_below_zero(path):
    day = quota.reserve("acme", 1, NOON)

    quota.release("acme", 5, day, failed=False)

    assert quota.usage("acme", NOON) == {"day": 0, "month": 0}


def test_release_of_a_reservation_made_yesterday_leaves_today_alone(path):
    yesterday = quota.reserve("acme", 2, NOON - dt.timedelta(days=1))
    quota.reserve("acme", 1, NOON)

    quota.release("acme", 2, yesterday, failed=False)

    assert counters("acme") == {
        ("day", "2024-05-16"): (0, 0),
        ("day", "2024-05-17"): (1, 0),
        ("month", "2024-05-01"): (1, 0),
    }


def test_a_refusal_inside_a_transaction_leaves_that_transaction_usable(path):
    OrgQuota.objects.create(org="acme", daily_limit=0)
    with transaction.atomic():
        with pytest.raises(QuotaExceeded):
            quota.reserve("acme", 1, NOON)
        OrgQuota.objects.create(org="beta")  # would fail if the transaction were broken

    assert OrgQuota.objects.filter(org="beta").exists()


def test_negative_units_are_a_programming_error():
    with pytest.raises(ValueError):
        quota.reserve("acme", -1, NOON)


def test_the_daily_limit_resets_at_utc_midnight_while_the_month_carries_on(path):
    OrgQuota.objects.create(org="acme", daily_limit=2)
    with time_machine.travel(dt.datetime(2024, 5, 17, 23, 59, 59, tzinfo=UTC), tick=False):
        quota.reserve("acme", 2, quota_now())
        with pytest.raises(QuotaExceeded):
            quota.reserve("acme", 1, quota_now())
    with time_machine.travel(dt.datetime(2024, 5, 18, 0, 0, 0, tzinfo=UTC), tick=False):
        assert quota.reserve("acme", 2, quota_now()) == dt.date(2024, 5, 18)
        assert quota.usage("acme") == {"day": 2, "month": 4}


def test_new_year_starts_a_new_day_and_a_new_month(path):
    OrgQuota.objects.create(org="acme", daily_limit=10, monthly_limit=3)
    with time_machine.travel(dt.datetime(2024, 12, 31, 23, 59, 59, tzinfo=UTC), tick=False):
        quota.reserve("acme", 3, quota_now())
        with pytest.raises(QuotaExceeded) as info:
            quota.reserve("acme", 1, quota_now())
        assert info.value.code == "monthly_quota_exceeded"
    with time_machine.travel(dt.datetime(2025, 1, 1, tzinfo=UTC), tick=False):
        quota.reserve("acme", 3, quota_now())
        assert quota.remaining("acme") == {"day": 7, "month": 0}

    assert counters("acme") == {
        ("day", "2024-12-31"): (3, 0),
        ("month", "2024-12-01"): (3, 0),
        ("day", "2025-01-01"): (3, 0),
        ("month", "2025-01-01"): (3, 0),
    }


def quota_now() -> dt.datetime:
    from django.utils import timezone

    return timezone.now()


@pytest.mark.parametrize(
    ("now", "day", "month"),
    [
        (dt.datetime(2024, 12, 31, 23, 59, 59, tzinfo=UTC), "2025-01-01", "2025-01-01"),
        (dt.datetime(2024, 2, 29, 8, 0, tzinfo=UTC), "2024-03-01", "2024-03-01"),
        (dt.datetime(2024, 5, 17, 12, 0, tzinfo=UTC), "2024-05-18", "2024-06-01"),
        # 23:30 in UTC-5 is already the next UTC day.
        (
            dt.datetime(2024, 1, 31, 23, 30, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
            "2024-02-02",
            "2024-03-01",
        ),
    ],
)
def test_periods_end_at_the_next_utc_midnight_and_month_start(now, day, month):
    assert quota.next_day(now).isoformat() == f"{day}T00:00:00+00:00"
    assert quota.next_month(now).isoformat() == f"{month}T00:00:00+00:00"


def test_usage_and_remaining_of_an_org_that_never_sent(settings):
    settings.MAILAPI = {**settings.MAILAPI, "DAILY_LIMIT": 10, "MONTHLY_LIMIT": None}

    assert quota.usage("nobody", NOON) == {"day": 0, "month": 0}
    assert quota.remaining("nobody", NOON) == {"day": 10, "month": None}


def test_remaining_counts_down_to_zero_and_is_zero_for_a_paused_org(path):
    OrgQuota.objects.create(org="acme", daily_limit=3, monthly_limit=100)
    quota.reserve("acme", 3, NOON)

    assert quota.remaining("acme", NOON) == {"day": 0, "month": 97}
    quota.set_limits("acme", daily=1)  # lowered below what was used: still 0, never negative
    assert quota.remaining("acme", NOON) == {"day": 0, "month": 97}
    quota.set_limits("acme", paused=True)
    assert quota.remaining("acme", NOON) == {"day": 0, "month": 0}


def test_set_limits_creates_then_updates_only_what_it_is_given():
    quota.set_limits("acme", daily=5)
    quota.set_limits("acme", monthly=100, paused=True)
    quota.set_limits("acme", daily=None)

    row = OrgQuota.objects.get(org="acme")
    assert (row.daily_limit, row.monthly_limit, row.paused) == (None, 100, True)
    with pytest.raises(ValueError):
        quota.set_limits("acme", daily=-1)


def statements(captured: CaptureQueriesContext) -> int:
    """Queries sent, leaving out the test's own savepoints."""
    return sum("SAVEPOINT" not in q["sql"] for q in captured.captured_queries)


@pytest.mark.usefixtures("postgres")
def test_a_reservation_is_one_sql_statement_on_postgresql():
    OrgQuota.objects.create(org="acme", daily_limit=100, monthly_limit=1000)
    with CaptureQueriesContext(connection) as granted, transaction.atomic():
        day = quota.reserve("acme", 1, NOON)
    with CaptureQueriesContext(connection) as released:
        quota.release("acme", 1, day, failed=True)
    quota.reserve("acme", 1, NOON)
    OrgQuota.objects.filter(org="acme").update(monthly_limit=1)
    with (
        CaptureQueriesContext(connection) as half_refused,
        transaction.atomic(),
        pytest.raises(QuotaExceeded),
    ):
        quota.reserve("acme", 1, NOON)

    assert statements(granted) == 1
    assert statements(released) == 1
    # The day counter passed and the month's did not: one more statement moves it back.
    assert statements(half_refused) == 2
    assert quota.usage("acme", NOON) == {"day": 1, "month": 1}
