"""Several processes reserving (and releasing) at once, on PostgreSQL and on
MySQL/MariaDB: the limit is met exactly, and nobody deadlocks."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import pytest
from django.db import connection

from django_mailapi import quota
from django_mailapi.models import OrgQuota, Period, UsageCounter
from tests.helpers import ROOT, database_url

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.services]

NOW = dt.datetime(2024, 5, 17, 12, 0, tzinfo=dt.timezone.utc)


def race(org: str, processes: int, attempts: int, churners: int = 0) -> list[int]:
    """Start ``processes`` reservers (and ``churners`` that release each reservation
    again) against the test database; return the reservers' grants."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": database_url(connection.settings_dict),
        "PYTHONPATH": str(ROOT),
    }
    command = [sys.executable, "tests/quota_race.py", org, str(attempts), NOW.isoformat()]
    procs = [
        subprocess.Popen(
            [*command, "churn" if n >= processes else "keep"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(processes + churners)
    ]
    for proc in procs:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
    for proc in procs:  # all set up: let them go together
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.close()
    grants = []
    for proc in procs:
        assert proc.stdout is not None
        grants.append(int(proc.stdout.read().strip()))
        assert proc.wait(120) == 0  # a deadlock (MySQL's error 1213) would end it with 1
    return grants[:processes]


def sent(org: str, period: str, start: str) -> int:
    return UsageCounter.objects.get(org=org, period=period, period_start=start).units_sent


@pytest.mark.usefixtures("server_db")
def test_four_processes_racing_for_a_daily_limit_of_100_get_exactly_100():
    OrgQuota.objects.create(org="acme", daily_limit=100)

    grants = race("acme", processes=4, attempts=60)

    assert sum(grants) == 100
    assert sent("acme", Period.DAY, "2024-05-17") == 100
    assert sent("acme", Period.MONTH, "2024-05-01") == 100


@pytest.mark.usefixtures("server_db")
def test_when_the_month_is_the_tighter_limit_both_counters_stop_together():
    OrgQuota.objects.create(org="acme", daily_limit=100, monthly_limit=150)
    quota.reserve("acme", 60, NOW - dt.timedelta(days=1))  # yesterday: month at 60

    grants = race("acme", processes=4, attempts=40)

    # Every refusal here is the month's, after the day counter passed: each must be undone.
    assert sum(grants) == 90
    assert sent("acme", Period.DAY, "2024-05-17") == 90
    assert sent("acme", Period.MONTH, "2024-05-01") == 150


@pytest.mark.usefixtures("server_db")
def test_reservations_and_releases_racing_lock_in_one_order_and_stay_exact():
    # Two processes keep what they reserve; two release each reservation at once, as a
    # worker does for an email it could not send. Both lock the day counter before the
    # month's, so none of them waits for another crosswise (a deadlock).
    OrgQuota.objects.create(org="acme", daily_limit=100)

    grants = race("acme", processes=2, attempts=60, churners=2)

    kept = sum(grants)
    assert kept <= 100
    assert sent("acme", Period.DAY, "2024-05-17") == kept
    assert sent("acme", Period.MONTH, "2024-05-01") == kept
