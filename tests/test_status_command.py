"""mailapi_status (SPEC §13): exact output, exit status for monitors, indexed queries."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import subprocess
import sys

import pytest
import time_machine
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from django_mailapi.models import DeliveryEvent, Status
from tests.factories import fail, make_email
from tests.helpers import ROOT, database_url

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.timezone.utc)


def ago(seconds: float) -> dt.datetime:
    return NOW - dt.timedelta(seconds=seconds)


def run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    with time_machine.travel(NOW, tick=False):
        call_command("mailapi_status", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.fixture
def outbox():
    """Emails in every state but cancelled; the deferred one has waited longest."""
    make_email(status=Status.QUEUED, next_attempt_at=ago(90), created_at=ago(95))
    make_email(status=Status.QUEUED, next_attempt_at=ago(-60), created_at=ago(5))  # not due
    make_email(status=Status.DEFERRED, next_attempt_at=ago(300), created_at=ago(900))
    make_email(status=Status.SENDING, leased_until=ago(30), created_at=ago(100), provider="sendr")
    for _ in range(3):
        make_email(status=Status.SENT, created_at=ago(600))
    failed = make_email(status=Status.FAILED, created_at=ago(1200))
    fail(failed, "application_error", 500, created_at=ago(120), will_retry=True)
    fail(failed, "application_error", 500, created_at=ago(60), will_retry=True)
    fail(failed, "invalid_from_address", 422, created_at=ago(30))
    fail(failed, "rate_limit_exceeded", 429, created_at=ago(3601))  # over an hour ago
    for minutes, event_id in ((50, "evt_1"), (5, "evt_2")):
        DeliveryEvent.objects.create(
            provider="resend",
            provider_event_id=event_id,
            provider_message_id="msg_1",
            type="delivered",
            occurred_at=ago(minutes * 60 + 2),
            received_at=ago(minutes * 60),
        )


STATUS_TABLE = """\
status     emails
---------  ------
queued          2
sending         1
sent            3
deferred        1
failed          1
cancelled       0"""


def test_status_table_shows_every_part_of_the_report(outbox):
    out, err = run()

    assert out == (
        f"{STATUS_TABLE}\n"
        "\n"
        "Oldest due email: waiting 300 s\n"
        "\n"
        "Failures in the last hour:\n"
        "code                  failures\n"
        "--------------------  --------\n"
        "application_error            2\n"
        "invalid_from_address         1\n"
        "\n"
        "Last delivery event received: 2025-03-01 11:55:00 UTC\n"
    )
    assert err == ""


def test_status_json_has_exactly_the_documented_keys(outbox):
    out, _ = run("--format", "json")

    assert json.loads(out) == {
        "statuses": {
            "queued": 2,
            "sending": 1,
            "sent": 3,
            "deferred": 1,
            "failed": 1,
            "cancelled": 0,
        },
        "oldest_due_seconds": 300,
        "failures_last_hour": {"application_error": 2, "invalid_from_address": 1},
        "last_event_at": "2025-03-01T11:55:00+00:00",
    }
    assert list(json.loads(out)) == [
        "statuses",
        "oldest_due_seconds",
        "failures_last_hour",
        "last_event_at",
    ]


def test_status_of_an_empty_outbox_says_nothing_is_waiting():
    out, _ = run()
    assert out == (
        f"{STATUS_TABLE.replace('  2', '  0').replace('  1', '  0').replace('  3', '  0')}\n"
        "\n"
        "Oldest due email: none waiting\n"
        "\n"
        "Failures in the last hour: none\n"
        "\n"
        "Last delivery event received: never\n"
    )
    report = json.loads(run("--format", "json")[0])
    assert report["oldest_due_seconds"] is None
    assert report["failures_last_hour"] == {}
    assert report["last_event_at"] is None
    # --max-age has nothing to complain about when nothing is due.
    assert run("--max-age", "0")[0] == out


def test_a_lost_lease_counts_as_due_since_its_lease_ran_out():
    make_email(status=Status.SENDING, leased_until=ago(45))
    make_email(status=Status.SENDING, leased_until=ago(-20))  # its worker still has it
    make_email(status=Status.DEFERRED, next_attempt_at=ago(-3600))  # due in an hour

    report = json.loads(run("--format", "json")[0])

    assert report["oldest_due_seconds"] == 45


def test_max_age_passes_while_the_oldest_due_email_is_younger(outbox):
    out, err = run("--max-age", "300")
    assert out.startswith(STATUS_TABLE)
    assert err == ""


def test_max_age_fails_once_the_oldest_due_email_has_waited_longer(outbox):
    with pytest.raises(CommandError) as raised:
        run("--max-age", "299")
    assert str(raised.value) == "The oldest due email has waited 300 s, longer than --max-age 299."
    assert raised.value.returncode == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-age", "-1"], "--max-age must be a non-negative number of seconds, not '-1'."),
        (["--max-age", "soon"], "--max-age must be a non-negative number of seconds, not 'soon'."),
        (["--format", "yaml"], "Unknown format 'yaml': use one of table, json."),
    ],
)
def test_bad_arguments_are_refused_with_a_clear_error(args, message):
    with pytest.raises(CommandError, match=message):
        run(*args)


@pytest.mark.django_db(transaction=True)
def test_a_monitor_gets_the_report_on_stdout_and_exit_status_1(server_db):
    make_email(status=Status.QUEUED, next_attempt_at=dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": database_url(connection.settings_dict),
        "PYTHONPATH": str(ROOT),
    }
    result = subprocess.run(
        [sys.executable, "-m", "django", "mailapi_status", "--format", "json", "--max-age", "60"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["statuses"]["queued"] == 1
    assert report["oldest_due_seconds"] > 60
    assert result.stderr.startswith("CommandError: The oldest due email has waited ")
    assert result.stderr.endswith(" s, longer than --max-age 60.\n")


def test_each_query_is_served_by_an_index(outbox, postgres):
    # PostgreSQL's planner is asked about every statement the command sends, with
    # sequential scans priced out of reach: a query no index can serve still plans a
    # Seq Scan then, and fails here. (On a table this small the planner would choose a
    # sequential scan anyway, because it is cheaper than any index at this size.)
    with CaptureQueriesContext(connection) as captured:
        run("--format", "json")
    statements = [q["sql"] for q in captured if "SAVEPOINT" not in q["sql"]]
    assert len(statements) == 1 + 6 + 2 + 1 + 1  # providers, statuses, due, failures, event
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        for sql in statements:
            cursor.execute(f"EXPLAIN {sql}")
            plan = "\n".join(row[0] for row in cursor.fetchall())
            assert "Seq Scan" not in plan, f"{sql}\n{plan}"
