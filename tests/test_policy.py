"""The retry/defer policy: a pure function of (error, attempts, doubt, settings, now)."""

# ruff: noqa: E501  (the table reads best one case a line)

from __future__ import annotations

import datetime as dt

import pytest

from django_mailapi.conf import MailapiSettings
from django_mailapi.exceptions import SendError
from django_mailapi.models import Status
from django_mailapi.outbox import policy

NOW = dt.datetime(2026, 3, 14, 15, 9, 26, tzinfo=dt.timezone.utc)


def middle(low: float, high: float) -> float:
    return (low + high) / 2


def local(code: str) -> SendError:
    return SendError(code, code=code, local=True)


def api(code: str, status: int, retry_after: float | None = None) -> SendError:
    return SendError(code, code=code, http_status=status, retry_after=retry_after)


CONF = MailapiSettings(
    {"MAX_RETRIES": 3, "RETRY_BASE_DELAY": 2.0, "RETRY_MAX_DELAY": 900.0}, mailer=""
)
FAIL_ON_QUOTA = MailapiSettings({"ON_QUOTA_EXCEEDED": "fail"}, mailer="")

# error, catalog, attempts, was in doubt, settings ->
#     outcome, status, seconds until the next attempt (None: no next attempt),
#     attempts after, in doubt after, exhausted, code shown
TABLE = [
    # transient: backoff 2 * 2**(n-1), jittered to 0.75 of it here
    (local("timeout"), "mailapi", 1, False, CONF, "retry", Status.QUEUED, 1.5, 1, True, False, "timeout"),
    (local("connection_error"), "mailapi", 3, False, CONF, "retry", Status.QUEUED, 6.0, 3, True, False, "connection_error"),
    (api("internal_server_error", 500), "resend", 2, False, CONF, "retry", Status.QUEUED, 3.0, 2, True, False, "internal_server_error"),
    # 429 waits for Retry-After (plus a quarter second here), and the API did not take it
    (api("rate_limit_exceeded", 429, 7.0), "resend", 1, False, CONF, "retry", Status.QUEUED, 7.25, 1, False, False, "rate_limit_exceeded"),
    # ... unless an earlier attempt may have reached the API
    (api("rate_limit_exceeded", 429, 7.0), "resend", 2, True, CONF, "retry", Status.QUEUED, 7.25, 2, True, False, "rate_limit_exceeded"),
    # a 409 about the key: another request under it exists
    (api("concurrent_idempotent_requests", 409), "resend", 1, False, CONF, "retry", Status.QUEUED, 1.5, 1, True, False, "concurrent_idempotent_requests"),
    (api("invalid_idempotent_request", 409), "resend", 1, False, CONF, "failed", Status.FAILED, None, 1, True, False, "invalid_idempotent_request"),
    # attempts run out on a transient error
    (local("timeout"), "mailapi", 4, False, CONF, "failed", Status.FAILED, None, 4, True, True, "retries_exhausted"),
    (api("rate_limit_exceeded", 429), "resend", 4, False, CONF, "failed", Status.FAILED, None, 4, False, True, "retries_exhausted"),
    # permanent
    (api("validation_error", 422), "resend", 1, False, CONF, "failed", Status.FAILED, None, 1, False, False, "validation_error"),
    (local("payload_missing"), "mailapi", 1, False, CONF, "failed", Status.FAILED, None, 1, False, False, "payload_missing"),
    (local("payload_missing"), "mailapi", 2, True, CONF, "failed", Status.FAILED, None, 2, True, False, "payload_missing"),
    # quota: deferred to the next UTC midnight (plus half a minute here), not a try
    (local("daily_quota_exceeded"), "mailapi", 2, False, CONF, "deferred", Status.DEFERRED, 31_834 + 30, 1, False, False, "daily_quota_exceeded"),
    (local("monthly_quota_exceeded"), "mailapi", 1, False, CONF, "deferred", Status.DEFERRED, 1_500_634 + 30, 0, False, False, "monthly_quota_exceeded"),
    (local("daily_quota_exceeded"), "mailapi", 1, False, FAIL_ON_QUOTA, "failed", Status.FAILED, None, 1, False, False, "daily_quota_exceeded"),
]  # fmt: skip


@pytest.mark.parametrize(
    "error, source, attempts, doubt, conf, outcome, status, wait, attempts_after, "
    "in_doubt, exhausted, code",
    TABLE,
    ids=[f"{row[0].code}-{row[2]}-{'doubt' if row[3] else 'clear'}" for row in TABLE],
)
def test_decide(
    error, source, attempts, doubt, conf, outcome, status, wait, attempts_after, in_doubt,
    exhausted, code,
):  # fmt: skip
    decision = policy.decide(
        error, source, attempts=attempts, was_in_doubt=doubt, conf=conf, now=NOW, rand=middle
    )
    seconds = (
        None
        if decision.next_attempt_at is None
        else (decision.next_attempt_at - NOW).total_seconds()
    )
    assert (
        decision.outcome,
        decision.status,
        seconds,
        decision.attempts,
        decision.in_doubt,
        decision.exhausted,
        decision.error_code,
    ) == (outcome, status, wait, attempts_after, in_doubt, exhausted, code)
    assert decision.will_retry == (outcome != "failed")


@pytest.mark.parametrize(
    "error, accepted",
    [
        (local("timeout"), True),
        (local("connection_error"), True),
        (local("invalid_response"), True),
        (local("unexpected_error"), True),
        (local("invalid_recipient"), False),
        (local("daily_quota_exceeded"), False),
        (api("internal_server_error", 500), True),
        (api("http_502", 502), True),
        (api("concurrent_idempotent_requests", 409), True),
        (api("rate_limit_exceeded", 429), False),
        (api("validation_error", 422), False),
        (api("missing_api_key", 401), False),
    ],
    ids=lambda value: getattr(value, "code", str(value)),
)
def test_may_have_been_accepted(error, accepted):
    assert policy.may_have_been_accepted(error) is accepted
