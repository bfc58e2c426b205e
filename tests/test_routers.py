"""A database router that sends our models elsewhere is honoured everywhere.

Each test routes django_mailapi's models to a second database (tests/routers.py), runs
one part of the product for real (send_mail through the backend, the outbox against the
sandbox over HTTP, quota, maintenance, the commands that write) and then checks that
the rows are on the routed database and that "default" was never even connected to: no
query, no transaction, no on_commit hook there.

Two routed databases: "outbox" is SQLite, where SQL meant for PostgreSQL fails loudly;
"outbox_pg" is a second PostgreSQL database (when the default is PostgreSQL), so the
PostgreSQL-only paths (the one-statement quota booking, UPDATE … RETURNING) run routed.
The tests are transactional, as production is: outside a test's wrapping transaction a
transaction or on_commit hook opened on the wrong database shows.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis
from django.core import mail
from django.core.management import call_command
from django.db import connections, transaction
from django.utils import timezone

from django_mailapi import outbox, quota
from django_mailapi.exceptions import QuotaExceeded
from django_mailapi.models import FailedSend, OrgQuota, OutboundEmail, Status, UsageCounter
from tests import settings as test_settings
from tests.factories import make_email
from tests.routers import MailapiRouter

MODELS = (OutboundEmail, FailedSend, OrgQuota, UsageCounter)


def _on(alias: str) -> pytest.MarkDecorator:
    return pytest.mark.django_db(transaction=True, databases=["default", alias])


ROUTED = [
    pytest.param("outbox", marks=_on("outbox"), id="sqlite"),
    pytest.param(
        "outbox_pg",
        marks=[
            _on("outbox_pg"),
            pytest.mark.skipif(
                "outbox_pg" not in test_settings.DATABASES,
                reason="the default database is not PostgreSQL",
            ),
        ],
        id="postgresql",
    ),
]


@pytest.fixture(params=ROUTED)
def routed(request: Any, settings: Any, sandbox: Any) -> Iterator[str]:
    """Our models on ``request.param``; tasks to a queue of this module's own."""
    alias: str = request.param
    settings.DATABASE_ROUTERS = [MailapiRouter(alias)]
    settings.EMAIL_BACKEND = "django_mailapi.backend.EmailBackend"  # pytest-django's is locmem
    queue = f"{settings.MAILAPI['QUEUE']}-routers"
    settings.MAILAPI = {**settings.MAILAPI, "QUEUE": queue}
    yield alias
    with contextlib.suppress(redis.RedisError):  # no Redis: nothing was published there
        redis.Redis.from_url(test_settings.REDIS_URL, socket_connect_timeout=1).delete(queue)


@pytest.fixture
def broker(routed: str, redis_url: str, settings: Any) -> Iterator[Any]:
    """The Redis list behind this module's queue, emptied first."""
    client = redis.Redis.from_url(redis_url)
    client.delete(settings.MAILAPI["QUEUE"])
    yield client


def published(client: Any, queue: str) -> list[list[int]]:
    """The ids of each send task waiting in ``queue``, oldest first."""
    tasks = []
    for raw in reversed(client.lrange(queue, 0, -1)):  # kombu pushes on the left
        message = json.loads(raw)
        args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        tasks.append(args[0])
    return tasks


@contextmanager
def default_untouched() -> Iterator[None]:
    """Fail unless the block leaves "default" alone: no SQL and not even a connection
    (on PostgreSQL a transaction.atomic() or on_commit() there opens one without any
    SQL; on SQLite, which is never closed in memory, atomic() runs BEGIN)."""
    default = connections["default"]
    default.close()
    closed = default.connection is None
    statements: list[str] = []

    def record(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        statements.append(sql)
        return execute(sql, params, many, context)

    with default.execute_wrapper(record):
        yield
    assert statements == [], "SQL ran on 'default'"
    if closed:
        assert default.connection is None, "something connected to 'default' (a transaction?)"


def counts(alias: str) -> dict[str, int]:
    return {model.__name__: model.objects.using(alias).count() for model in MODELS}


NOTHING = {"OutboundEmail": 0, "FailedSend": 0, "OrgQuota": 0, "UsageCounter": 0}


def run(*args: str) -> str:
    out, err = io.StringIO(), io.StringIO()
    call_command(*args, stdout=out, stderr=err)
    assert err.getvalue() == ""
    return out.getvalue()


def test_send_mail_writes_its_rows_on_the_routed_database(routed, broker, settings):
    with default_untouched():
        mail.send_mail("Hello", "Body", "shop@example.com", ["ann@example.org"])
        # Refused input is stored as a failed row (with its FailedSend) when silent.
        mail.send_mail("Bad", "Body", "shop@example.com", ["no address"], fail_silently=True)

    queued = OutboundEmail.objects.using(routed).get(status=Status.QUEUED)
    refused = OutboundEmail.objects.using(routed).get(status=Status.FAILED)
    assert FailedSend.objects.using(routed).get().email_id == refused.pk
    assert published(broker, settings.MAILAPI["QUEUE"]) == [[queued.pk]]
    assert counts("default") == NOTHING


def test_dispatch_waits_for_the_routed_databases_commit(routed, broker, settings):
    queue = settings.MAILAPI["QUEUE"]
    with default_untouched():
        with transaction.atomic(using=routed):
            mail.send_mail("Hello", "Body", "shop@example.com", ["ann@example.org"])
            assert published(broker, queue) == [], "a task went out before the commit"
        row = OutboundEmail.objects.using(routed).get()
        assert published(broker, queue) == [[row.pk]]

        broker.delete(queue)
        with pytest.raises(RuntimeError), transaction.atomic(using=routed):
            mail.send_mail("Undone", "Body", "shop@example.com", ["bob@example.org"])
            raise RuntimeError("the caller's transaction rolls back")

    assert list(OutboundEmail.objects.using(routed).values_list("subject", flat=True)) == ["Hello"]
    assert published(broker, queue) == [], "a task went out for rows that were rolled back"
    assert counts("default") == NOTHING


def test_the_outbox_sends_and_records_on_the_routed_database(routed, sandbox, settings):
    # One request per email: the sandbox fails a whole request for a flaky address.
    conf = {"DAILY_LIMIT": 100, "RETRY_BASE_DELAY": 60.0, "BATCH_SIZE": 1}
    settings.MAILAPI = {**settings.MAILAPI, **conf}
    mail.send_mail("Hello", "Body", "shop@example.com", ["ann@example.org", "bob@example.org"])
    mail.send_mail("Bad", "Body", "shop@example.com", ["invalid_from_address@fail.sandbox.test"])
    mail.send_mail("Flaky", "Body", "shop@example.com", ["flaky+1@example.org"])
    ids = list(OutboundEmail.objects.using(routed).order_by("pk").values_list("pk", flat=True))

    with default_untouched():
        outbox.process(ids)

    rows = OutboundEmail.objects.using(routed).order_by("pk")
    assert [(row.subject, row.status) for row in rows] == [
        ("Hello", Status.SENT),
        ("Bad", Status.FAILED),
        ("Flaky", Status.QUEUED),
    ]
    assert sorted(FailedSend.objects.using(routed).values_list("error_code", flat=True)) == [
        "application_error",
        "invalid_from_address",
    ]
    day = UsageCounter.objects.using(routed).get(period="day")
    # Two units sent; the failed email's unit came back as failed; the flaky one is held.
    assert (day.units_sent, day.units_failed) == (3, 1)
    assert len(sandbox.emails) == 1
    assert counts("default") == NOTHING


def test_quota_books_and_gives_back_on_the_routed_database(routed):
    now = timezone.now()
    with default_untouched():
        quota.set_limits("acme", daily=3)
        day = quota.reserve("acme", 2, now)
        with pytest.raises(QuotaExceeded) as refused:
            quota.reserve("acme", 2, now)
        quota.release("acme", 2, day, failed=True)
        with transaction.atomic(using=routed):  # in the caller's transaction, as the outbox
            quota.reserve("acme", 3, now)
        left = quota.remaining("acme", now)

    assert refused.value.code == "daily_quota_exceeded"
    assert left == {"day": 0, "month": None}
    assert OrgQuota.objects.using(routed).get().daily_limit == 3
    counters = UsageCounter.objects.using(routed).order_by("period")
    assert [(c.period, c.units_sent, c.units_failed) for c in counters] == [
        ("day", 3, 2),
        ("month", 3, 2),
    ]
    assert counts("default") == NOTHING


def test_retry_cancel_and_sweep_change_rows_on_the_routed_database(routed):
    past = timezone.now() - dt.timedelta(hours=1)
    failed = make_email(status=Status.FAILED)
    deferred = make_email(status=Status.DEFERRED, next_attempt_at=timezone.now())
    stranded = make_email(status=Status.QUEUED, attempts=0, next_attempt_at=past)

    with default_untouched():
        retried = outbox.retry_now(OutboundEmail.objects.filter(pk=failed.pk))
        cancelled = outbox.cancel(OutboundEmail.objects.filter(pk=deferred.pk))
        swept = outbox.sweep()

    assert (retried, cancelled, swept) == (1, 1, 1)
    status = dict(OutboundEmail.objects.using(routed).values_list("pk", "status"))
    assert status == {
        failed.pk: Status.QUEUED,
        deferred.pk: Status.CANCELLED,
        stranded.pk: Status.QUEUED,
    }
    assert OutboundEmail.objects.using(routed).get(pk=stranded.pk).next_attempt_at > past
    assert counts("default") == NOTHING


def test_commands_that_write_use_the_routed_database(routed):
    long_ago = timezone.now() - dt.timedelta(days=60)
    failed = make_email(status=Status.FAILED)
    make_email(status=Status.SENT, created_at=long_ago)
    UsageCounter.objects.create(org="acme", period="day", period_start=long_ago.date())
    make_email(status=Status.QUEUED, attempts=0, next_attempt_at=long_ago)

    with default_untouched():
        set_quota = run("mailapi_quota", "acme", "--daily", "5", "--pause")
        retried = run("mailapi_retry", str(failed.pk))
        purged = run("mailapi_purge", "--older-than", "30")
        swept = run("mailapi_sweep")

    assert set_quota == "acme: daily limit 5, monthly limit unlimited, paused\n"
    assert retried == "Re-queued 1 email.\n"
    assert purged == (
        "emails: 1 deleted\nfailed sends: 0 deleted\nusage counters: 1 deleted\n"
        "delivery events: 0 deleted\n"
    )
    assert swept == "Dispatched 1 email(s).\n"
    assert OrgQuota.objects.using(routed).get().paused is True
    assert OutboundEmail.objects.using(routed).get(pk=failed.pk).status == Status.QUEUED
    assert counts(routed) == {"OutboundEmail": 2, "FailedSend": 0, "OrgQuota": 1,
                              "UsageCounter": 0}  # fmt: skip
    assert counts("default") == NOTHING
