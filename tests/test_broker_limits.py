"""No countdown outlives the broker (SPEC §13).

A task published with a countdown waits, unacknowledged, in a worker's memory. Redis
delivers it to another worker once its ``visibility_timeout`` (1 hour by default) has
passed; RabbitMQ cancels the consumer holding it after ``consumer_timeout`` (30 minutes
by default). So every countdown the app publishes stays at or under MAX_ETA_SECONDS
(1500 by default), longer waits are left to the sweeper, and a system check (W005) says
when a configured MAX_ETA_SECONDS is not under the broker's limit.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import time_machine
from celery import current_app
from django.core.mail import EmailMessage
from hypothesis import given
from hypothesis import strategies as st

from django_mailapi import dispatch, outbox
from django_mailapi.backend import EmailBackend
from django_mailapi.checks import (
    RABBITMQ_CONSUMER_TIMEOUT,
    REDIS_VISIBILITY_TIMEOUT,
    broker_redelivery_limit,
    check_settings,
)
from django_mailapi.conf import DEFAULTS, get_settings
from django_mailapi.models import OutboundEmail, Status
from tests.helpers import send_each

pytestmark = pytest.mark.django_db

START = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.timezone.utc)


class Published(list[dict[str, Any]]):
    """The options of every send task published, instead of publishing it."""

    def countdowns(self) -> list[float]:
        return [call["countdown"] for call in self if "countdown" in call]


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> Published:
    calls = Published()
    task = current_app.tasks[dispatch.SEND_EMAILS]

    def record(args: Any = None, **options: Any) -> None:
        assert "eta" not in options  # a countdown is how the app says "later"
        calls.append({"ids": args[0], **options})

    monkeypatch.setattr(task, "apply_async", record)
    return calls


def test_the_default_is_under_both_brokers_limits():
    assert DEFAULTS["MAX_ETA_SECONDS"] == 1500
    assert DEFAULTS["MAX_ETA_SECONDS"] < RABBITMQ_CONSUMER_TIMEOUT < REDIS_VISIBILITY_TIMEOUT


@given(delay=st.floats(min_value=-60, max_value=10 * 86400, allow_nan=False))
def test_schedule_publishes_a_countdown_only_up_to_max_eta(delay):
    calls: list[dict[str, Any]] = []
    task = current_app.tasks[dispatch.SEND_EMAILS]
    original = task.apply_async
    task.apply_async = lambda args=None, **options: calls.append(options)  # type: ignore[method-assign]
    try:
        published = dispatch.schedule([1], get_settings(), delay)
    finally:
        task.apply_async = original  # type: ignore[method-assign]

    conf = get_settings()
    assert published == (delay <= conf.MAX_ETA_SECONDS)
    assert [c["countdown"] for c in calls] == ([max(0.0, delay)] if published else [])
    assert all(0 <= c["countdown"] <= conf.MAX_ETA_SECONDS for c in calls)


@pytest.mark.parametrize(
    ("ahead", "countdown"),
    [
        (dt.timedelta(seconds=90), 90.0),
        (dt.timedelta(seconds=1500), 1500.0),  # MAX_ETA_SECONDS itself: still a countdown
        (dt.timedelta(seconds=1501), None),  # the sweeper's from here on
        (dt.timedelta(hours=20), None),
    ],
)
def test_a_scheduled_send_is_a_countdown_only_within_max_eta(
    published, django_capture_on_commit_callbacks, ahead, countdown
):
    with (
        time_machine.travel(START, tick=False),
        django_capture_on_commit_callbacks(execute=True),  # published after the commit
    ):
        message = EmailMessage("Hi", "Body", "shop@example.com", ["a@example.com"])
        message.send_at = START + ahead  # type: ignore[attr-defined]
        EmailBackend().send_messages([message])

    assert published.countdowns() == ([countdown] if countdown is not None else [])
    row = OutboundEmail.objects.get()
    assert (row.status, row.next_attempt_at) == (Status.QUEUED, START + ahead)


def test_a_retry_after_a_short_backoff_is_published_with_its_countdown(
    published, sandbox, settings
):
    settings.MAILAPI = {**settings.MAILAPI, "RETRY_BASE_DELAY": 10, "RETRY_MAX_DELAY": 20}
    sandbox.fail_rate = 1.0
    (row,) = send_each("a@example.com")
    published.clear()

    outbox.process([row.pk])

    (countdown,) = published.countdowns()
    assert 5 <= countdown <= 10  # the first backoff: 10 s with jitter in its upper half


def test_a_retry_waiting_longer_than_max_eta_is_left_to_the_sweeper(published, sandbox, settings):
    # A backoff allowed to reach two hours: the retry is due then, and no countdown is
    # published for it; the sweeper dispatches it once it is due.
    settings.MAILAPI = {**settings.MAILAPI, "RETRY_BASE_DELAY": 5000, "RETRY_MAX_DELAY": 7200}
    sandbox.fail_rate = 1.0
    (row,) = send_each("a@example.com")
    published.clear()

    outbox.process([row.pk])

    row.refresh_from_db()
    assert row.status == Status.QUEUED
    assert published.countdowns() == []
    with time_machine.travel(row.next_attempt_at + dt.timedelta(minutes=5), tick=False):
        assert outbox.sweep() == 1
    assert published[-1]["ids"] == [row.pk]
    assert "countdown" not in published[-1]


@pytest.mark.parametrize(
    ("now", "published_countdown"),
    [
        (dt.datetime(2026, 12, 1, 23, 59, tzinfo=dt.timezone.utc), True),  # midnight is near
        (dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.timezone.utc), False),  # twelve hours off
    ],
)
def test_an_email_deferred_by_the_daily_quota_waits_for_midnight_within_max_eta(
    published, sandbox, settings, now, published_countdown
):
    settings.MAILAPI = {**settings.MAILAPI, "DAILY_LIMIT": 1, "BATCH_SIZE": 1}
    with time_machine.travel(now, tick=False):
        rows = send_each("a@example.com", "b@example.com")
        published.clear()
        outbox.process([row.pk for row in rows])

    deferred = OutboundEmail.objects.get(status=Status.DEFERRED)
    countdowns = published.countdowns()
    conf = get_settings()
    if published_countdown:
        (countdown,) = countdowns
        assert countdown == (deferred.next_attempt_at - now).total_seconds()
        assert countdown <= conf.MAX_ETA_SECONDS
    else:
        assert countdowns == []


def test_the_tasks_own_database_retries_back_off_within_max_eta():
    task = current_app.tasks[dispatch.SEND_EMAILS]
    assert task.retry_backoff_max <= DEFAULTS["MAX_ETA_SECONDS"]


# --- mailapi.W005 -----------------------------------------------------------------------
def ids(settings: Any, mailapi: dict[str, Any]) -> list[str]:
    settings.MAILAPI = {**settings.MAILAPI, **mailapi}
    return [str(m.id) for m in check_settings() if m.id == "mailapi.W005"]


@pytest.mark.parametrize(
    ("broker", "options", "max_eta", "warned"),
    [
        ("redis://127.0.0.1:6379/0", None, 1500, False),
        ("redis://127.0.0.1:6379/0", None, 3599, False),
        ("redis://127.0.0.1:6379/0", None, 3600, True),  # the default visibility_timeout
        ("redis://127.0.0.1:6379/0", {"visibility_timeout": 600}, 1500, True),
        ("redis://127.0.0.1:6379/0", {"visibility_timeout": 43200}, 7200, False),
        ("rediss://cache.internal:6380/0", None, 4000, True),
        ("amqp://guest:guest@127.0.0.1:5672//", None, 1500, False),
        ("amqp://guest:guest@127.0.0.1:5672//", None, 1800, True),
        ("pyamqp://guest@127.0.0.1//", None, 2000, True),
        ("sqs://", None, 100_000, False),  # a broker the check does not know
    ],
)
def test_w005_when_max_eta_is_not_under_the_brokers_limit(
    settings, broker, options, max_eta, warned
):
    settings.CELERY_BROKER_URL = broker
    if options is not None:
        settings.CELERY_BROKER_TRANSPORT_OPTIONS = options

    assert ids(settings, {"MAX_ETA_SECONDS": max_eta}) == (["mailapi.W005"] if warned else [])


def test_w005_says_which_limit_and_how_to_fix_it(settings):
    settings.CELERY_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672//"
    settings.MAILAPI = {**settings.MAILAPI, "MAX_ETA_SECONDS": 3600}

    (warning,) = [m for m in check_settings() if m.id == "mailapi.W005"]

    assert warning.msg == (
        "MAILAPI['MAX_ETA_SECONDS'] (3600) is not under RabbitMQ's default consumer_timeout "
        "(1800 s): a task waiting that long for its countdown may be delivered to a second "
        "worker, or its worker's consumer cancelled."
    )
    assert warning.hint.startswith("Set MAX_ETA_SECONDS below 1800 (the default, 1500,")


def test_w005_reads_the_celery_app_when_settings_name_no_broker(settings, monkeypatch):
    # Patched before the setting goes, so the undo puts back the real URL (patched
    # after, it would write the None read meanwhile onto the app for every later test).
    monkeypatch.setattr(current_app.conf, "broker_url", "amqp://guest@127.0.0.1//")
    del settings.CELERY_BROKER_URL
    assert broker_redelivery_limit() == (1800, "RabbitMQ's default consumer_timeout")


def test_w005_for_a_mailer_with_its_own_max_eta(settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:6379/0"
    settings.MAILERS = {
        "default": {"BACKEND": "django_mailapi.backend.EmailBackend"},
        "slow": {
            "BACKEND": "django_mailapi.backend.EmailBackend",
            "OPTIONS": {"max_eta_seconds": 5000},
        },
    }
    found = [(m.id, m.obj) for m in check_settings() if m.id == "mailapi.W005"]
    assert found == [("mailapi.W005", "settings.MAILERS['slow']")]
