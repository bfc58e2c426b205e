"""The outbox state machine, driven directly against the sandbox over HTTP."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine
from django.utils import timezone

from django_mailapi import outbox, signals
from django_mailapi.models import FailedSend, OutboundEmail, Status, UsageCounter
from django_mailapi.providers.resend import ResendProvider
from tests.helpers import process_one, send, wait_for

pytestmark = pytest.mark.django_db


def test_accepted_email_is_marked_sent_with_the_api_id(sandbox):
    row = process_one(send("ann@example.org"))

    assert row.status == Status.SENT
    assert row.attempts == 1
    (received,) = sandbox.emails
    assert row.provider_message_id == received["id"]
    assert received["idempotency_key"] == row.idempotency_key
    assert row.payload is not None
    assert row.leased_until is None


def test_keep_sent_payload_false_drops_the_body_after_sending(sandbox, settings):
    settings.MAILAPI = {**settings.MAILAPI, "KEEP_SENT_PAYLOAD": False}
    row = process_one(send("ann@example.org"))
    assert row.status == Status.SENT
    assert row.payload is None


def test_permanent_error_fails_at_once_and_gives_back_quota(sandbox, settings):
    settings.MAILAPI = {**settings.MAILAPI, "DAILY_LIMIT": 10}
    row = process_one(send("invalid_attachment@fail.sandbox.test", "b@example.org"))

    assert row.status == Status.FAILED
    assert row.last_error_code == "invalid_attachment"
    assert row.last_error_status == 422
    (failure,) = row.failures.all()
    assert (failure.error_code, failure.http_status, failure.will_retry) == (
        "invalid_attachment",
        422,
        False,
    )
    assert failure.source == "resend"
    assert "content" in failure.suggested_action
    day = UsageCounter.objects.get(org="default", period="day")
    assert (day.units_sent, day.units_failed) == (0, 2)
    assert row.quota_units == 0


def test_transient_error_is_retried_later_under_the_same_key(sandbox, settings):
    settings.MAILAPI = {**settings.MAILAPI, "RETRY_BASE_DELAY": 30.0, "RETRY_MAX_DELAY": 60.0}
    row = process_one(send("flaky+1@example.org"))

    assert row.status == Status.QUEUED
    assert row.next_attempt_at > timezone.now()
    (failure,) = row.failures.all()
    assert failure.will_retry is True
    assert failure.http_status == 500

    with time_machine.travel(row.next_attempt_at + dt.timedelta(seconds=1), tick=True):
        row = process_one(row)
    assert row.status == Status.SENT
    assert row.attempts == 2
    assert [e["idempotency_key"] for e in sandbox.emails] == [row.idempotency_key]


def test_email_not_yet_due_is_left_alone(sandbox, settings):
    settings.MAILAPI = {**settings.MAILAPI, "RETRY_BASE_DELAY": 30.0}
    row = process_one(send("flaky+1@example.org"))
    assert process_one(row).attempts == 1  # next_attempt_at is in the future


def test_rate_limit_waits_for_retry_after(sandbox):
    before = timezone.now()
    row = process_one(send("rate_limit_exceeded@fail.sandbox.test"))

    assert row.status == Status.QUEUED
    waited = (row.next_attempt_at - before).total_seconds()
    assert 1.0 <= waited <= 3.0  # the sandbox says retry-after: 1


def test_retries_end_in_retries_exhausted(sandbox, settings):
    settings.MAILAPI = {**settings.MAILAPI, "MAX_RETRIES": 1}
    row = process_one(send("application_error@fail.sandbox.test"))
    assert row.status == Status.QUEUED
    with time_machine.travel(row.next_attempt_at + dt.timedelta(seconds=1), tick=True):
        row = process_one(row)

    assert row.status == Status.FAILED
    assert row.last_error_code == "retries_exhausted"
    codes = list(row.failures.order_by("pk").values_list("error_code", "will_retry"))
    assert codes == [
        ("application_error", True),
        ("application_error", False),
        ("retries_exhausted", False),
    ]


def test_connection_refused_is_a_local_transient_error(sandbox, settings):
    settings.MAILAPI = {**settings.MAILAPI, "BASE_URL": "http://127.0.0.1:9"}
    row = process_one(send("ann@example.org"))

    assert row.status == Status.QUEUED
    (failure,) = row.failures.all()
    assert (failure.error_code, failure.http_status, failure.source) == (
        "connection_error",
        None,
        "mailapi",
    )


def test_slow_api_is_a_timeout(sandbox, settings):
    settings.MAILAPI = {**settings.MAILAPI, "TIMEOUT": 0.3}
    row = process_one(send("slow+1500@example.org"))
    assert row.last_error_code == "timeout"
    assert row.status == Status.QUEUED
    # The API still accepts it after we gave up: the reason retries reuse the same key.
    (late,) = wait_for(lambda: sandbox.emails, timeout=10)
    assert late["idempotency_key"] == row.idempotency_key


def test_daily_quota_defers_to_next_utc_midnight(sandbox, settings):
    settings.MAILAPI = {**settings.MAILAPI, "DAILY_LIMIT": 1}
    first, second = send("a@example.org"), send("b@example.org")
    fired = []
    signals.quota_exceeded.connect(lambda **kw: fired.append(kw["code"]), weak=False)
    try:
        outbox.process([first.pk, second.pk])
    finally:
        signals.quota_exceeded.receivers.clear()
    first.refresh_from_db()
    second.refresh_from_db()

    assert first.status == Status.SENT
    assert second.status == Status.DEFERRED
    assert second.attempts == 0
    midnight = dt.datetime.combine(
        timezone.now().date() + dt.timedelta(days=1), dt.time(), tzinfo=dt.timezone.utc
    )
    assert midnight <= second.next_attempt_at <= midnight + dt.timedelta(minutes=1)
    assert second.failures.get().error_code == "daily_quota_exceeded"
    assert fired == ["daily_quota_exceeded"]
    assert len(sandbox.emails) == 1


def test_quota_fail_mode_fails_instead_of_deferring(sandbox, settings):
    settings.MAILAPI = {**settings.MAILAPI, "MONTHLY_LIMIT": 0, "ON_QUOTA_EXCEEDED": "fail"}
    row = process_one(send("a@example.org"))
    assert row.status == Status.FAILED
    assert row.last_error_code == "monthly_quota_exceeded"
    assert sandbox.emails == []


def test_api_quota_error_is_deferred_like_ours(sandbox):
    row = process_one(send("monthly_quota_exceeded@fail.sandbox.test"))
    assert row.status == Status.DEFERRED
    assert row.next_attempt_at.day == 1
    assert row.failures.get().http_status == 429


def test_two_claims_never_both_win(sandbox):
    row = send("a@example.org")
    now = timezone.now()
    assert [r.pk for r in outbox.claim([row.pk], now, 60).rows] == [row.pk]
    assert outbox.claim([row.pk], now, 60).rows == []


def test_expired_lease_is_claimed_again(sandbox):
    row = send("a@example.org")
    now = timezone.now()
    outbox.claim([row.pk], now, 60)
    later = now + dt.timedelta(seconds=61)
    (again,) = outbox.claim([row.pk], later, 60).rows
    assert again.attempts == 2


def test_sweep_dispatches_only_stranded_rows(sandbox, settings):
    old = send("old@example.org")
    fresh = send("fresh@example.org")
    OutboundEmail.objects.filter(pk=old.pk).update(
        next_attempt_at=timezone.now() - dt.timedelta(hours=1)
    )
    assert outbox.sweep() == 1
    old.refresh_from_db()
    assert old.next_attempt_at > timezone.now() - dt.timedelta(minutes=1)
    assert outbox.sweep() == 0  # not again until another grace period
    assert fresh.status == Status.QUEUED


def test_missing_payload_fails_with_its_own_code(sandbox):
    row = send("a@example.org")
    OutboundEmail.objects.filter(pk=row.pk).update(payload=None)
    row = process_one(row)
    assert row.status == Status.FAILED
    assert row.last_error_code == "payload_missing"


def test_missing_api_key_at_send_time_is_a_configuration_error(sandbox, settings):
    row = send("a@example.org")
    settings.MAILAPI = {k: v for k, v in settings.MAILAPI.items() if k != "API_KEY"}
    row = process_one(row)
    assert row.status == Status.FAILED
    assert row.last_error_code == "configuration_error"
    assert sandbox.emails == []


class UnreadableSuccess(ResendProvider):
    name = "resend"

    def parse_success(self, response):
        return response.json()["no_such_field"]


class Exploding(ResendProvider):
    name = "resend"

    def build_request(self, message, idempotency_key):
        raise RuntimeError("bug in a provider")


def test_unreadable_success_body_is_retried_as_invalid_response(sandbox, settings):
    settings.MAILAPI = {**settings.MAILAPI, "PROVIDER": "tests.test_outbox.UnreadableSuccess"}
    row = process_one(send("a@example.org"))
    assert row.status == Status.QUEUED
    assert row.last_error_code == "invalid_response"


def test_a_bug_in_a_provider_keeps_the_email_and_records_it(sandbox, settings):
    settings.MAILAPI = {**settings.MAILAPI, "PROVIDER": "tests.test_outbox.Exploding"}
    row = process_one(send("a@example.org"))
    assert row.status == Status.QUEUED
    assert row.last_error_code == "unexpected_error"
    assert "bug in a provider" in row.failures.get().message


def test_retry_now_requeues_failed_and_cancel_stops_queued(
    sandbox, django_capture_on_commit_callbacks
):
    failed = process_one(send("invalid_from_address@fail.sandbox.test"))
    waiting = send("w@example.org")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert outbox.retry_now(OutboundEmail.objects.filter(pk=failed.pk)) == 1
    assert len(callbacks) == 1
    failed.refresh_from_db()
    assert (failed.status, failed.attempts) == (Status.QUEUED, 0)

    assert outbox.cancel(OutboundEmail.objects.filter(pk=waiting.pk)) == 1
    waiting.refresh_from_db()
    assert waiting.status == Status.CANCELLED
    assert process_one(waiting).status == Status.CANCELLED


def test_sent_and_failed_signals_fire(sandbox):
    seen = []
    signals.message_sent.connect(lambda **kw: seen.append(("sent", kw["email"].pk)), weak=False)
    signals.send_failed.connect(
        lambda **kw: seen.append(("failed", kw["failure"].error_code)), weak=False
    )
    try:
        ok = process_one(send("a@example.org"))
        process_one(send("not_found@fail.sandbox.test"))
    finally:
        signals.message_sent.receivers.clear()
        signals.send_failed.receivers.clear()
    assert seen == [("sent", ok.pk), ("failed", "not_found")]
    assert FailedSend.objects.count() == 1


def test_retry_now_leaves_emails_whose_payload_is_gone(sandbox, django_capture_on_commit_callbacks):
    row = process_one(send("invalid_from_address@fail.sandbox.test"))
    OutboundEmail.objects.filter(pk=row.pk).update(payload=None)
    with django_capture_on_commit_callbacks(execute=False):
        assert outbox.retry_now(OutboundEmail.objects.filter(pk=row.pk)) == 0
    row.refresh_from_db()
    assert row.status == Status.FAILED
