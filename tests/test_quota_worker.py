"""Quotas through the whole path: send_mail -> outbox -> real Celery worker -> sandbox."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core import mail
from django.core.management import call_command

import django_mailapi
from django_mailapi import quota
from django_mailapi.models import FailedSend, OutboundEmail, Status, UsageCounter
from tests.helpers import Worker, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.services]

SETTLED = [Status.SENT, Status.DEFERRED, Status.FAILED]


@pytest.fixture(autouse=True)
def _our_backend(settings, sandbox, server_db):
    settings.EMAIL_BACKEND = "django_mailapi.backend.EmailBackend"


def settled(count: int) -> bool:
    return OutboundEmail.objects.filter(status__in=SETTLED).count() == count


def send(org: str, *recipients: str) -> None:
    with django_mailapi.for_org(org):
        for to in recipients:
            mail.send_mail("Report", "Numbers.", "shop@example.com", [to])


@pytest.mark.usefixtures("celery_worker")
def test_acceptance_acme_capped_at_5_sends_5_of_8_and_beta_sends_all_3(sandbox):
    call_command("mailapi_quota", "acme", "--daily", "5", stdout=StringIO())

    send("acme", *(f"r{n}@acme.test" for n in range(8)))
    send("beta", *(f"r{n}@beta.test" for n in range(3)))
    wait_for(lambda: settled(11))

    received = [e["payload"]["to"][0] for e in sandbox.emails]
    assert sum(to.endswith("@acme.test") for to in received) == 5
    assert sum(to.endswith("@beta.test") for to in received) == 3
    out = StringIO()
    call_command("mailapi_usage", "--format", "json", stdout=out)
    usage = {row["org"]: row for row in json.loads(out.getvalue())}
    assert (usage["acme"]["sent_today"], usage["acme"]["daily_limit"]) == (5, 5)
    assert (usage["beta"]["sent_today"], usage["beta"]["sent_this_month"]) == (3, 3)
    deferred = OutboundEmail.objects.filter(status=Status.DEFERRED)
    assert set(deferred.values_list("org", flat=True)) == {"acme"}
    assert deferred.count() == 3
    codes = FailedSend.objects.filter(email__in=deferred).values_list("error_code", "will_retry")
    assert list(codes) == [("daily_quota_exceeded", True)] * 3
    assert all(row.next_attempt_at > row.updated_at for row in deferred)


@pytest.mark.usefixtures("celery_worker")
def test_a_permanently_failed_send_gives_its_units_back_through_the_worker(sandbox):
    send("acme", "invalid_from_address@fail.sandbox.test", "ok@example.com")
    wait_for(lambda: settled(2))

    assert quota.usage("acme") == {"day": 1, "month": 1}
    failed = UsageCounter.objects.filter(org="acme").values_list("period", "units_failed")
    assert sorted(failed) == [("day", 1), ("month", 1)]


@pytest.mark.usefixtures("celery_worker")
def test_the_providers_daily_quota_429_defers_the_email_through_the_worker(sandbox):
    send("acme", "daily_quota_exceeded@fail.sandbox.test")
    wait_for(lambda: settled(1))

    row = OutboundEmail.objects.get()
    assert row.status == Status.DEFERRED
    (failure,) = row.failures.all()
    assert (failure.error_code, failure.http_status, failure.will_retry) == (
        "daily_quota_exceeded",
        429,
        True,
    )
    assert quota.usage("acme") == {"day": 0, "month": 0}


def test_with_on_quota_exceeded_fail_the_worker_fails_over_quota_emails(
    sandbox, settings, worker_env, tmp_path
):
    queue = f"{settings.MAILAPI['QUEUE']}-fail"
    settings.MAILAPI = {**settings.MAILAPI, "QUEUE": queue, "ON_QUOTA_EXCEEDED": "fail"}
    env = {
        **worker_env,
        "DJANGO_SETTINGS_MODULE": "tests.settings_quota_fail",
        "MAILAPI_QUEUE": queue,
    }
    quota.set_limits("acme", daily=1)
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        send("acme", "a@example.com", "b@example.com")
        wait_for(lambda: settled(2))
    finally:
        worker.stop()
        _drop_queue(settings.REDIS_URL, queue)

    statuses = sorted(OutboundEmail.objects.values_list("status", "last_error_code"))
    assert statuses == [(Status.FAILED, "daily_quota_exceeded"), (Status.SENT, "")]
    assert len(sandbox.emails) == 1
    assert FailedSend.objects.get().will_retry is False


def _drop_queue(url: str, queue: str) -> None:
    import redis

    redis.Redis.from_url(url, socket_connect_timeout=1).delete(queue)
