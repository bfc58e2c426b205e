"""Quota through the outbox, in this process: units, pausing, deferral, provider quotas.

The worker's code (``outbox.process``) runs here so signals and settings can be seen;
tests/test_quota_worker.py runs the same paths through a real Celery worker.
"""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine
from django.core import mail
from django.utils import timezone

import django_mailapi
from django_mailapi import outbox, quota, signals
from django_mailapi.exceptions import QuotaExceeded
from django_mailapi.models import FailedSend, OrgQuota, OutboundEmail, Status
from tests.helpers import process_one, send

pytestmark = pytest.mark.django_db

UTC = dt.timezone.utc


@pytest.fixture(autouse=True)
def _our_backend(settings):
    settings.EMAIL_BACKEND = "django_mailapi.backend.EmailBackend"


def test_an_email_costs_one_unit_per_recipient_in_to_cc_and_bcc(sandbox):
    row = send("a@example.com", "b@example.com", cc=["c@example.com"], bcc=["d@x.com"], org="acme")

    row = process_one(row)

    assert row.status == Status.SENT
    assert (row.quota_units, row.quota_day) == (4, timezone.now().date())
    assert quota.usage("acme") == {"day": 4, "month": 4}


def test_quota_unit_message_counts_one_per_email_whatever_its_recipients(sandbox, settings):
    settings.MAILAPI = {**settings.MAILAPI, "QUOTA_UNIT": "message"}
    row = send("a@example.com", "b@example.com", cc=["c@example.com"], org="acme")

    process_one(row)

    assert quota.usage("acme") == {"day": 1, "month": 1}


def test_an_email_with_more_recipients_than_are_left_is_deferred_whole(sandbox):
    OrgQuota.objects.create(org="acme", daily_limit=3)
    process_one(send("a@example.com", "b@example.com", org="acme"))

    row = process_one(send("c@example.com", "d@example.com", org="acme"))

    assert row.status == Status.DEFERRED
    assert row.last_error_code == "daily_quota_exceeded"
    assert quota.usage("acme") == {"day": 2, "month": 2}
    assert len(sandbox.emails) == 1


def test_a_paused_org_sends_nothing_and_its_emails_wait(sandbox):
    quota.set_limits("acme", paused=True)
    row = send("a@example.com", org="acme")

    row = process_one(row)

    assert row.status == Status.DEFERRED
    assert row.last_error_code == "org_paused"
    (failure,) = FailedSend.objects.filter(email=row)
    assert (failure.error_code, failure.http_status) == ("org_paused", None)
    assert failure.will_retry is True
    assert "--resume" in failure.suggested_action
    assert sandbox.emails == []
    assert quota.usage("acme") == {"day": 0, "month": 0}


def test_resuming_a_paused_org_lets_its_held_email_go(sandbox):
    quota.set_limits("acme", paused=True)
    row = process_one(send("a@example.com", org="acme"))
    quota.set_limits("acme", paused=False)

    outbox.retry_now(OutboundEmail.objects.filter(pk=row.pk))
    row = process_one(row)

    assert row.status == Status.SENT
    assert len(sandbox.emails) == 1


def test_over_quota_emails_are_deferred_to_the_next_utc_midnight_and_sent_then(sandbox):
    OrgQuota.objects.create(org="acme", daily_limit=1)
    with time_machine.travel(dt.datetime(2024, 3, 31, 22, 0, tzinfo=UTC), tick=False):
        first = process_one(send("a@example.com", org="acme"))
        second = process_one(send("b@example.com", org="acme"))
    assert first.status == Status.SENT
    assert second.status == Status.DEFERRED
    assert second.attempts == 0  # a deferral is not a failed try
    midnight = dt.datetime(2024, 4, 1, tzinfo=UTC)
    assert midnight <= second.next_attempt_at <= midnight + dt.timedelta(seconds=60)

    with time_machine.travel(second.next_attempt_at, tick=False):
        second = process_one(second)

    assert second.status == Status.SENT
    assert second.quota_day == dt.date(2024, 4, 1)
    assert quota.usage("acme", midnight) == {"day": 1, "month": 1}


def test_over_the_monthly_limit_emails_wait_for_the_first_of_next_month(sandbox):
    OrgQuota.objects.create(org="acme", monthly_limit=1)
    with time_machine.travel(dt.datetime(2024, 12, 15, 9, 0, tzinfo=UTC), tick=False):
        process_one(send("a@example.com", org="acme"))
        row = process_one(send("b@example.com", org="acme"))

    assert row.status == Status.DEFERRED
    assert row.last_error_code == "monthly_quota_exceeded"
    new_year = dt.datetime(2025, 1, 1, tzinfo=UTC)
    assert new_year <= row.next_attempt_at <= new_year + dt.timedelta(seconds=60)


def test_on_quota_exceeded_fail_fails_the_email_instead(sandbox, settings):
    settings.MAILAPI = {**settings.MAILAPI, "ON_QUOTA_EXCEEDED": "fail"}
    OrgQuota.objects.create(org="acme", daily_limit=0)

    row = process_one(send("a@example.com", org="acme"))

    assert row.status == Status.FAILED
    assert row.next_attempt_at is None
    (failure,) = row.failures.all()
    assert (failure.error_code, failure.will_retry) == ("daily_quota_exceeded", False)


def test_a_permanent_api_error_gives_the_units_back_as_failed(sandbox):
    row = process_one(send("invalid_from_address@fail.sandbox.test", "b@example.com", org="acme"))

    assert row.status == Status.FAILED
    assert (row.quota_units, row.quota_day) == (0, None)
    counter = quota.usage("acme")
    assert counter == {"day": 0, "month": 0}
    from django_mailapi.models import UsageCounter

    assert set(UsageCounter.objects.values_list("period", "units_failed")) == {
        ("day", 2),
        ("month", 2),
    }


@pytest.mark.parametrize(
    ("code", "wake_up"),
    [
        ("daily_quota_exceeded", dt.datetime(2024, 6, 11, tzinfo=UTC)),
        ("monthly_quota_exceeded", dt.datetime(2024, 7, 1, tzinfo=UTC)),
    ],
)
def test_the_providers_own_quota_429_defers_releases_and_signals(sandbox, code, wake_up):
    heard = []

    def receiver(sender, email, org, code, **kwargs):
        heard.append((email.pk, org, code))

    signals.quota_exceeded.connect(receiver)
    try:
        with time_machine.travel(dt.datetime(2024, 6, 10, 15, 0, tzinfo=UTC), tick=False):
            row = process_one(send(f"{code}@fail.sandbox.test", org="acme"))
    finally:
        signals.quota_exceeded.disconnect(receiver)

    assert row.status == Status.DEFERRED
    assert wake_up <= row.next_attempt_at <= wake_up + dt.timedelta(seconds=60)
    (failure,) = row.failures.all()
    assert (failure.source, failure.error_code, failure.http_status) == ("resend", code, 429)
    assert failure.will_retry is True
    assert heard == [(row.pk, "acme", code)]
    # The units reserved for the attempt are given back, not counted as failed.
    assert quota.usage("acme", dt.datetime(2024, 6, 10, tzinfo=UTC)) == {"day": 0, "month": 0}


def test_our_own_quota_refusal_fires_the_quota_exceeded_signal_too(sandbox):
    OrgQuota.objects.create(org="acme", daily_limit=0)
    heard = []

    def receiver(sender, email, org, code, **kwargs):
        heard.append((org, code))

    signals.quota_exceeded.connect(receiver)
    try:
        process_one(send("a@example.com", org="acme"))
    finally:
        signals.quota_exceeded.disconnect(receiver)

    assert heard == [("acme", "daily_quota_exceeded")]


def test_a_row_reclaimed_after_its_worker_died_is_not_reserved_twice(sandbox, settings):
    """The dying worker claimed the row and reserved; it never reached the API."""
    OrgQuota.objects.create(org="acme", daily_limit=10)
    start = dt.datetime(2024, 8, 1, 10, 0, tzinfo=UTC)
    with time_machine.travel(start, tick=False):
        row = send("a@example.com", "b@example.com", org="acme")
        # The claim books the quota with the lease, in one transaction.
        outbox.claim([row.pk], timezone.now(), lease_seconds=300)
        # ... and here the worker process is killed.
    row.refresh_from_db()
    assert (row.status, row.quota_units) == (Status.SENDING, 2)

    with time_machine.travel(start + dt.timedelta(seconds=301), tick=False):
        row = process_one(row)

    assert row.status == Status.SENT
    assert row.attempts == 2
    assert quota.usage("acme", start) == {"day": 2, "month": 2}


def test_check_quota_on_enqueue_raises_in_send_mail_when_the_org_is_over(settings):
    settings.MAILAPI = {**settings.MAILAPI, "CHECK_QUOTA_ON_ENQUEUE": True}
    OrgQuota.objects.create(org="acme", daily_limit=2)
    quota.reserve("acme", 1, timezone.now())

    with django_mailapi.for_org("acme"):
        assert mail.send_mail("s", "b", "a@example.com", ["x@example.com"]) == 1
        with pytest.raises(QuotaExceeded) as info:
            mail.send_mail("s", "b", "a@example.com", ["y@example.com", "z@example.com"])

    assert info.value.code == "daily_quota_exceeded"
    assert OutboundEmail.objects.count() == 1


def test_check_quota_on_enqueue_with_fail_silently_queues_for_the_worker_to_defer(settings):
    settings.MAILAPI = {**settings.MAILAPI, "CHECK_QUOTA_ON_ENQUEUE": True}
    quota.set_limits("acme", paused=True)

    with django_mailapi.for_org("acme"):
        sent = mail.send_mail("s", "b", "a@example.com", ["x@example.com"], fail_silently=True)

    # Nothing lost: the email waits in the outbox and the worker defers it (org_paused).
    assert sent == 1
    assert OutboundEmail.objects.get().status == Status.QUEUED


def test_check_quota_on_enqueue_reports_a_full_month(settings):
    settings.MAILAPI = {**settings.MAILAPI, "CHECK_QUOTA_ON_ENQUEUE": True, "MONTHLY_LIMIT": 1}
    quota.reserve("acme", 1, timezone.now())

    with django_mailapi.for_org("acme"), pytest.raises(QuotaExceeded) as info:
        mail.send_mail("s", "b", "a@example.com", ["x@example.com"])

    assert info.value.code == "monthly_quota_exceeded"


def test_check_quota_on_enqueue_is_off_by_default():
    OrgQuota.objects.create(org="acme", daily_limit=0)

    with django_mailapi.for_org("acme"):
        assert mail.send_mail("s", "b", "a@example.com", ["x@example.com"]) == 1
