"""Batch sending: many emails per API request, each still tracked on its own."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine
from django.core.mail import EmailMessage
from django.db import connection
from django.test.utils import CaptureQueriesContext

from django_mailapi import outbox
from django_mailapi.backend import EmailBackend
from django_mailapi.models import FailedSend, OutboundEmail, Status, UsageCounter
from tests.helpers import other_session, process, send_each, wait_for

pytestmark = pytest.mark.django_db


def test_emails_of_one_org_go_out_in_one_batch_request(sandbox):
    rows = process(*send_each(*(f"u{i}@example.com" for i in range(30))))

    assert {row.status for row in rows} == {Status.SENT}
    assert sandbox.stats["requests"] == 1
    received = sandbox.emails
    assert len(received) == 30
    assert all(email["batch"] for email in received)
    assert [row.provider_message_id for row in rows] == [email["id"] for email in received]
    (key,) = {email["idempotency_key"] for email in received}
    assert key.startswith("mailapi-batch/")
    assert {row.batch_key for row in rows} == {key}


def test_batch_is_permissive_so_a_bad_email_fails_alone(sandbox):
    rows = process(
        *send_each("a@example.com", "invalid_from_address@fail.sandbox.test", "c@example.com")
    )

    assert [row.status for row in rows] == [Status.SENT, Status.FAILED, Status.SENT]
    failure = FailedSend.objects.get()
    assert failure.email_id == rows[1].pk
    assert (failure.error_code, failure.http_status, failure.will_retry) == (
        "validation_error",
        422,
        False,
    )
    assert failure.details == {"index": 1}
    assert len(sandbox.emails) == 2


def test_emails_with_attachments_and_batch_size_one_go_one_by_one(sandbox, settings):
    process(*send_each("a@example.com", "b@example.com", attach=True))
    assert sandbox.stats["requests"] == 2
    assert not any(email["batch"] for email in sandbox.emails)

    sandbox.reset()
    OutboundEmail.objects.all().delete()
    settings.MAILAPI = {**settings.MAILAPI, "BATCH_SIZE": 1}
    process(*send_each("c@example.com", "d@example.com"))
    assert sandbox.stats["requests"] == 2


def test_batches_are_cut_at_batch_size(sandbox, settings):
    settings.MAILAPI = {**settings.MAILAPI, "BATCH_SIZE": 10}
    rows = process(*send_each(*(f"u{i}@example.com" for i in range(25))))
    assert {row.status for row in rows} == {Status.SENT}
    assert sandbox.stats["requests"] == 3  # 10 + 10 + 5
    assert len({row.batch_key for row in rows}) == 3


def test_a_failed_batch_is_retried_whole_under_the_same_key(sandbox, settings):
    settings.MAILAPI = {**settings.MAILAPI, "RETRY_BASE_DELAY": 30.0, "RETRY_MAX_DELAY": 60.0}
    rows = process(*send_each("a@example.com", "flaky+1@example.com", "c@example.com"))

    assert {row.status for row in rows} == {Status.QUEUED}
    assert len({row.next_attempt_at for row in rows}) == 1
    (key,) = {row.batch_key for row in rows}
    assert FailedSend.objects.filter(http_status=500).count() == 3

    with time_machine.travel(rows[0].next_attempt_at + dt.timedelta(seconds=1), tick=True):
        rows = process(*rows[:1])  # a task naming one member brings in the others
    assert {row.status for row in rows} == {Status.SENT}
    assert {email["idempotency_key"] for email in sandbox.emails} == {key}
    assert len(sandbox.emails) == 3


def test_a_batch_the_api_took_before_we_gave_up_is_not_sent_twice(sandbox, settings):
    settings.MAILAPI = {**settings.MAILAPI, "TIMEOUT": 0.3, "RETRY_BASE_DELAY": 30.0}
    rows = process(*send_each("a@example.com", "slow+800@example.com"))
    assert {row.last_error_code for row in rows} == {"timeout"}
    wait_for(lambda: len(sandbox.emails) == 2, timeout=10)  # the API did take it

    settings.MAILAPI = {**settings.MAILAPI, "TIMEOUT": 5.0}
    with time_machine.travel(rows[0].next_attempt_at + dt.timedelta(seconds=1), tick=True):
        rows = process(*rows)
    assert {row.status for row in rows} == {Status.SENT}
    assert len(sandbox.emails) == 2
    assert sandbox.stats["replays"] == 1


def test_quota_is_reserved_for_the_batch_and_what_does_not_fit_is_deferred(sandbox, settings):
    settings.MAILAPI = {**settings.MAILAPI, "DAILY_LIMIT": 3}
    rows = process(*send_each(*(f"u{i}@example.com" for i in range(5))))

    assert [row.status for row in rows] == [Status.SENT] * 3 + [Status.DEFERRED] * 2
    assert UsageCounter.objects.get(period="day").units_sent == 3
    assert len(sandbox.emails) == 3


def test_a_batch_of_100_takes_six_statements(sandbox):
    rows = send_each(*(f"u{i}@example.com" for i in range(100)))
    with CaptureQueriesContext(connection) as captured:
        outbox.process([row.pk for row in rows])
    assert OutboundEmail.objects.filter(status=Status.SENT).count() == 100

    # The test's own transaction turns the worker's into savepoints; leave those out.
    statements = [q["sql"] for q in captured if "SAVEPOINT" not in q["sql"]]

    quote = connection.ops.quote_name

    def kind(sql: str) -> str:
        if "usagecounter" in sql or "orgquota" in sql:
            return "reserve"
        if "FOR UPDATE SKIP LOCKED" in sql or "WHERE 0 = 1" in sql:
            return "claim"
        if sql.startswith("SELECT") and "outboundemail" in sql:
            return "claim"  # SQLite's read of the rows, after its write lock
        if "suppression" in sql:
            return "suppressed"
        if "deliveryevent" in sql:
            return "events"
        if quote("provider_message_id") in sql:
            return "sent"
        if quote("batch_key") in sql and quote("quota_units") in sql:
            return "plan"
        return sql[:60]

    # Rows read FOR UPDATE (SQLite: after taking its write lock), one look at the
    # suppression list for all 100 recipients, quota booked, then one UPDATE writes the
    # lease with each row's units and batch key; one fenced UPDATE records the sends, and
    # one query looks for delivery events that arrived before it.
    kinds = [kind(sql) for sql in statements]
    if connection.vendor == "postgresql":
        assert kinds == ["claim", "suppressed", "reserve", "plan", "sent", "events"]
        assert "FOR UPDATE SKIP LOCKED" in statements[0]
        assert '"lease_token"' in statements[3]
        assert '."lease_token" = ' in statements[4]  # the sent record is fenced
    elif connection.vendor == "mysql":
        # No UPDATE … RETURNING: each write locks its rows by key, sets the shared values,
        # reads the rows and writes each one's own (sql.update_each), still a fixed number
        # of statements for the 100 rows.
        assert "FOR UPDATE SKIP LOCKED" in statements[0]
        assert kinds[:2] == ["claim", "suppressed"]
        assert kinds[-1] == "events"
        assert {"reserve", "plan", "sent"} <= set(kinds)
        assert len(statements) <= 20
    else:  # the portable reservation takes a few statements of its own
        assert [k for i, k in enumerate(kinds) if k != kinds[i - 1] or i == 0] == [
            "claim",
            "suppressed",
            "reserve",
            "plan",
            "sent",
            "events",
        ]


def test_an_email_bigger_than_the_limit_fails_instead_of_waiting_forever(sandbox, settings):
    settings.MAILAPI = {**settings.MAILAPI, "DAILY_LIMIT": 2}
    msg = EmailMessage(
        "Hi", "Body", "a@example.com", ["a@example.com", "b@example.com", "c@example.com"]
    )
    EmailBackend().send_messages([msg])
    (row,) = process(*list(OutboundEmail.objects.all()))

    assert row.status == Status.FAILED
    assert row.last_error_code == "quota_too_small"
    assert "never" in FailedSend.objects.get().message
    assert sandbox.emails == []


@pytest.mark.django_db(transaction=True)
def test_a_row_another_worker_is_claiming_is_skipped_not_waited_for(
    sandbox, server_db, unpublished
):
    # SKIP LOCKED: PostgreSQL, MariaDB 10.6 and later, MySQL 8. Committed for real
    # here, so no task goes to the broker (``unpublished``): this test is the only worker.
    rows = send_each("a@example.com", "b@example.com", "c@example.com")
    with other_session() as other:
        # Another worker is between its read and its UPDATE of row b.
        other.execute(
            "SELECT id FROM django_mailapi_outboundemail WHERE id = %s FOR UPDATE", [rows[1].pk]
        )
        assert outbox.process([row.pk for row in rows]) == {"sent": 2}
        assert OutboundEmail.objects.get(pk=rows[1].pk).status == Status.QUEUED
    # The other session's transaction has ended, and its lock with it.
    assert outbox.process([rows[1].pk]) == {"sent": 1}
    assert [r.status for r in OutboundEmail.objects.order_by("pk")] == [Status.SENT] * 3
    assert UsageCounter.objects.get(period="day").units_sent == 3
    assert len(sandbox.emails) == 3
