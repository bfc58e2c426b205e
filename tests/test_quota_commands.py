"""mailapi_usage, mailapi_quota and mailapi_purge: exact output, errors and exit codes."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from io import StringIO

import pytest
import time_machine
from django.core.management import CommandError, call_command

from django_mailapi import quota
from django_mailapi.models import (
    DeliveryEvent,
    FailedSend,
    OrgQuota,
    OutboundEmail,
    Status,
    Suppression,
    UsageCounter,
)
from tests.helpers import ROOT, database_url

pytestmark = pytest.mark.django_db

UTC = dt.timezone.utc
NOW = dt.datetime(2024, 5, 17, 12, 0, tzinfo=UTC)


def run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


# --- mailapi_usage -------------------------------------------------------------------------
@pytest.fixture
def usage_data(settings):
    settings.MAILAPI = {**settings.MAILAPI, "MONTHLY_LIMIT": 1000}
    OrgQuota.objects.create(org="acme", daily_limit=5)
    OrgQuota.objects.create(org="idle", daily_limit=10, monthly_limit=20, paused=True)
    quota.reserve("acme", 3, NOW)
    quota.reserve("acme", 4, NOW - dt.timedelta(days=2))
    quota.reserve("beta", 12, NOW)
    quota.reserve("old", 1, NOW - dt.timedelta(days=40))  # April only: not listed for May


USAGE_TABLE = """\
org            day         sent today  daily limit  month    sent this month  monthly limit
-------------  ----------  ----------  -----------  -------  ---------------  -------------
acme           2024-05-17           3            5  2024-05                7           1000
beta           2024-05-17          12    unlimited  2024-05               12           1000
idle (paused)  2024-05-17           0           10  2024-05                0             20
"""


def test_usage_table_lists_orgs_with_a_quota_row_or_usage_this_month(usage_data):
    with time_machine.travel(NOW, tick=False):
        out, err = run("mailapi_usage")

    assert out == USAGE_TABLE
    assert err == ""


def test_usage_json_has_exactly_the_documented_keys(usage_data):
    out, _ = run("mailapi_usage", "--date", "2024-05-15", "--format", "json")

    assert json.loads(out) == [
        {
            "org": "acme",
            "daily_limit": 5,
            "day": "2024-05-15",
            "sent_today": 4,
            "monthly_limit": 1000,
            "month": "2024-05",
            "sent_this_month": 7,
        },
        {
            "org": "beta",
            "daily_limit": None,
            "day": "2024-05-15",
            "sent_today": 0,
            "monthly_limit": 1000,
            "month": "2024-05",
            "sent_this_month": 12,
        },
        {
            "org": "idle",
            "daily_limit": 10,
            "day": "2024-05-15",
            "sent_today": 0,
            "monthly_limit": 20,
            "month": "2024-05",
            "sent_this_month": 0,
        },
    ]


def test_usage_for_one_org_and_an_earlier_month(usage_data):
    out, _ = run("mailapi_usage", "--org", "old", "--date", "2024-04-07", "--format", "json")

    assert json.loads(out) == [
        {
            "org": "old",
            "daily_limit": None,
            "day": "2024-04-07",
            "sent_today": 1,
            "monthly_limit": 1000,
            "month": "2024-04",
            "sent_this_month": 1,
        }
    ]


def test_usage_with_nothing_to_show():
    out, _ = run("mailapi_usage", "--date", "2030-01-01")
    assert out == "No org has a quota or any usage in 2030-01.\n"
    out, _ = run("mailapi_usage", "--date", "2030-01-01", "--format", "json")
    assert out == "[]\n"


def test_usage_refuses_a_malformed_date():
    with pytest.raises(
        CommandError, match=r"^--date must be a date written YYYY-MM-DD, not '17/05'"
    ):
        run("mailapi_usage", "--date", "17/05")


# --- mailapi_quota -------------------------------------------------------------------------
def test_quota_creates_the_org_row_and_prints_the_resulting_limits(settings):
    settings.MAILAPI = {**settings.MAILAPI, "MONTHLY_LIMIT": 1000}

    out, err = run("mailapi_quota", "acme", "--daily", "5")

    assert out == "acme: daily limit 5, monthly limit 1000 (default), sending\n"
    assert err == ""
    row = OrgQuota.objects.get(org="acme")
    assert (row.daily_limit, row.monthly_limit, row.paused) == (5, None, False)


def test_quota_updates_pauses_resumes_and_resets_to_the_default():
    run("mailapi_quota", "acme", "--daily", "5", "--monthly", "100")

    assert run("mailapi_quota", "acme", "--pause")[0] == (
        "acme: daily limit 5, monthly limit 100, paused\n"
    )
    assert run("mailapi_quota", "acme", "--resume", "--daily", "none")[0] == (
        "acme: daily limit unlimited, monthly limit 100, sending\n"
    )
    assert run("mailapi_quota", "acme", "--monthly", "0")[0] == (
        "acme: daily limit unlimited, monthly limit 0, sending\n"
    )
    assert OrgQuota.objects.count() == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--daily", "-3"], "--daily must be a non-negative integer or 'none', not '-3'."),
        (["--monthly", "lots"], "--monthly must be a non-negative integer or 'none', not 'lots'."),
        (["--pause", "--resume"], "--pause and --resume cannot be used together."),
        ([], "Nothing to do: give --daily, --monthly, --pause or --resume."),
    ],
)
def test_quota_refuses_bad_arguments_and_changes_nothing(args, message):
    with pytest.raises(CommandError) as info:
        run("mailapi_quota", "acme", *args)

    assert str(info.value) == message
    assert not OrgQuota.objects.exists()


@pytest.mark.usefixtures("server_db")
@pytest.mark.django_db(transaction=True)
def test_quota_errors_exit_with_status_1_from_the_command_line():
    from django.db import connection

    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": database_url(connection.settings_dict),
        "PYTHONPATH": str(ROOT),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "django", "mailapi_quota", "acme", "--daily", "-1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert proc.returncode == 1
    assert proc.stdout == ""
    assert (
        proc.stderr == "CommandError: --daily must be a non-negative integer or 'none', not '-1'.\n"
    )


# --- mailapi_purge -------------------------------------------------------------------------
def email(status: str, age_days: int, failures: int = 0) -> OutboundEmail:
    when = NOW - dt.timedelta(days=age_days)
    row = OutboundEmail.objects.create(
        org="acme",
        provider="resend",
        status=status,
        idempotency_key=f"k-{OutboundEmail.objects.count()}-{status}-{age_days}",
        created_at=when,
        updated_at=when,
    )
    for _ in range(failures):
        FailedSend.objects.create(
            email=row,
            org="acme",
            provider="resend",
            source="resend",
            error_code="x",
            created_at=when,
        )
    return row


@pytest.fixture
def purge_data():
    kept = [
        email(Status.SENT, 10, failures=1),  # too recent
        email(Status.CANCELLED, 29),
        email(Status.QUEUED, 100, failures=1),  # never purged, however old
        email(Status.SENDING, 100),
        email(Status.DEFERRED, 100, failures=2),
        email(Status.FAILED, 100),  # the email stays; its old failure goes
    ]
    FailedSend.objects.create(
        email=kept[-1], org="acme", provider="resend", source="resend", error_code="x",
        created_at=NOW - dt.timedelta(days=100),
    )  # fmt: skip
    gone = [
        email(Status.SENT, 31, failures=2),
        email(Status.SENT, 400),
        email(Status.CANCELLED, 45, failures=1),
    ]
    for org, start in [("acme", "2024-04-16"), ("acme", "2024-04-17"), ("acme", "2024-05-17")]:
        UsageCounter.objects.create(org=org, period="day", period_start=start)
    for start in ["2024-03-01", "2024-04-01", "2024-05-01"]:
        UsageCounter.objects.create(org="acme", period="month", period_start=start)
    # Delivery events: of a purged email (goes with it, while the suppression it caused
    # stays), of a kept one, and two that found no email, 40 days and 1 day old.
    bounce = event("e-gone", gone[0], days=31)
    Suppression.objects.create(address="gone@example.org", reason="hard_bounce", event=bounce)
    event("e-kept", kept[0], days=10)
    event("e-orphan-old", None, days=40)
    event("e-orphan-new", None, days=1)
    return kept, gone


def event(event_id: str, email: OutboundEmail | None, days: int) -> DeliveryEvent:
    when = NOW - dt.timedelta(days=days)
    return DeliveryEvent.objects.create(
        email=email,
        provider="resend",
        provider_event_id=event_id,
        provider_message_id=f"m-{event_id}",
        type="bounced",
        occurred_at=when,
        received_at=when,
    )


def test_purge_dry_run_prints_the_counts_and_deletes_nothing(purge_data):
    with time_machine.travel(NOW, tick=False):
        out, err = run("mailapi_purge", "--older-than", "30", "--dry-run")

    assert out == (
        "emails: 3 would be deleted\n"
        "failed sends: 4 would be deleted\n"
        "usage counters: 2 would be deleted\n"
        "delivery events: 2 would be deleted\n"
        "Dry run: nothing was deleted.\n"
    )
    assert err == ""
    assert OutboundEmail.objects.count() == 9
    assert FailedSend.objects.count() == 8
    assert UsageCounter.objects.count() == 6
    assert DeliveryEvent.objects.count() == 4


def test_purge_deletes_old_finished_emails_failures_and_counters_in_batches(purge_data):
    kept, _gone = purge_data
    from django_mailapi.purge import purge

    with time_machine.travel(NOW, tick=False):
        counts = purge(30, batch_size=1)  # one id per DELETE: the batching loop is exercised

    assert (counts.emails, counts.failed_sends, counts.usage_counters) == (3, 4, 2)
    assert counts.delivery_events == 2
    assert sorted(DeliveryEvent.objects.values_list("provider_event_id", flat=True)) == [
        "e-kept",
        "e-orphan-new",
    ]
    # The suppression outlives the event that caused it.
    assert Suppression.objects.get().event is None
    assert set(OutboundEmail.objects.values_list("pk", flat=True)) == {e.pk for e in kept}
    assert FailedSend.objects.filter(email__status=Status.FAILED).count() == 0
    assert FailedSend.objects.count() == 4  # sent 10 days ago: 1, queued: 1, deferred: 2
    # Day counters before 2024-04-17 and the March month counter ended 30+ days ago.
    assert sorted(UsageCounter.objects.values_list("period", "period_start")) == [
        ("day", dt.date(2024, 4, 17)),
        ("day", dt.date(2024, 5, 17)),
        ("month", dt.date(2024, 4, 1)),
        ("month", dt.date(2024, 5, 1)),
    ]


def test_purge_command_prints_what_it_deleted(purge_data):
    with time_machine.travel(NOW, tick=False):
        out, _ = run("mailapi_purge", "--older-than", "30")
        again, _ = run("mailapi_purge", "--older-than", "30")

    assert out == (
        "emails: 3 deleted\nfailed sends: 4 deleted\nusage counters: 2 deleted\n"
        "delivery events: 2 deleted\n"
    )
    assert again == (
        "emails: 0 deleted\nfailed sends: 0 deleted\nusage counters: 0 deleted\n"
        "delivery events: 0 deleted\n"
    )


@pytest.mark.parametrize("value", ["-1", "soon"])
def test_purge_refuses_a_bad_age(value):
    with pytest.raises(CommandError) as info:
        run("mailapi_purge", "--older-than", value)

    assert str(info.value) == f"--older-than must be a non-negative number of days, not {value!r}."
