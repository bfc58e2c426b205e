"""Regression tests for the races and uncertain outcomes of the send state machine.

Each test drives the window on purpose (a lease that runs out mid-task, a request that
times out after the API accepted it, a second claim, an admin action in between) against
the sandbox over HTTP, and states the invariant it checks. Each failed on the outbox
before it was rebuilt around lease-fenced writes.
"""

from __future__ import annotations

import datetime as dt
import threading

import pytest
import time_machine
from django.core.mail import EmailMessage
from django.utils import timezone

from django_mailapi import outbox, quota
from django_mailapi.backend import EmailBackend
from django_mailapi.exceptions import SendError
from django_mailapi.models import FailedSend, OutboundEmail, Status
from django_mailapi.sandbox import SandboxServer
from tests.helpers import other_session

pytestmark = pytest.mark.django_db


def queue(*addresses: str, org: str = "acme") -> list[OutboundEmail]:
    messages = []
    for i, address in enumerate(addresses):
        msg = EmailMessage(f"Message {i}", "Body", "shop@example.com", [address])
        msg.org = org  # type: ignore[attr-defined]
        messages.append(msg)
    before = set(OutboundEmail.objects.values_list("pk", flat=True))
    EmailBackend().send_messages(messages)
    return list(OutboundEmail.objects.exclude(pk__in=before).order_by("pk"))


def fresh(rows: list[OutboundEmail]) -> list[OutboundEmail]:
    return list(OutboundEmail.objects.filter(pk__in=[r.pk for r in rows]).order_by("pk"))


def per_subject(sandbox) -> dict[str, int]:
    counts: dict[str, int] = {}
    for email in sandbox.emails:
        subject = email["payload"]["subject"]
        counts[subject] = counts.get(subject, 0) + 1
    return counts


@pytest.fixture
def conf(settings, sandbox):
    def apply(**overrides):
        settings.MAILAPI = {**settings.MAILAPI, **overrides}

    return apply


# --- the lease fences every write --------------------------------------------------------
def test_a_late_outcome_from_a_worker_whose_lease_ran_out_changes_nothing(sandbox, conf):
    """Invariant: only the lease holder writes an email's outcome, quota included."""
    conf(DAILY_LIMIT=1)
    # Noon: the lease runs out 31 s later on the same UTC day, whenever the suite runs
    # (from 23:59:30 it used to cross midnight, and the day's counter read 0).
    noon = (timezone.now() + dt.timedelta(days=1)).replace(hour=12, minute=0)
    with time_machine.travel(noon, tick=False) as clock:
        (row,) = queue("a@example.com")
        first = outbox.claim([row.pk], timezone.now(), 30)
        (stale,) = first.rows
        clock.shift(31)  # the first worker stalled past its lease ...
        second = outbox.claim([row.pk], timezone.now(), 30)
        assert [r.pk for r in second.rows] == [row.pk]
        # ... and now writes what its request got: a timeout, and then a success.
        first.deliveries[0].fail([(stale, SendError("No answer", code="timeout", local=True))])
        first.deliveries[0].sent = [(stale, "from-the-stale-worker")]
        first.deliveries[0].flush()

        (current,) = fresh([row])
        assert (current.status, current.lease_token) == (Status.SENDING, second.lease.token)
        assert not FailedSend.objects.exists()
        assert quota.usage("acme") == {"day": 1, "month": 1}

        assert second.send() == {"sent": 1}
        # The counter still holds the one email the API took, so a second one waits.
        (other,) = queue("b@example.com")
        assert outbox.process([other.pk]) == {"deferred": 1}

    (current,) = fresh([row])
    assert current.status == Status.SENT
    assert current.provider_message_id == sandbox.emails[0]["id"]
    assert per_subject(sandbox) == {"Message 0": 1}
    assert quota.usage("acme", current.sent_at) == {"day": 1, "month": 1}


def test_a_worker_renews_its_lease_before_each_request_so_no_one_else_takes_its_rows(sandbox, conf):
    """Invariant: a row is never sent by two workers, however long a task runs."""
    conf(BATCH_SIZE=1)
    rows = queue("a@example.com", "b@example.com", "c@example.com")
    ids = [r.pk for r in rows]
    with time_machine.travel(timezone.now(), tick=False) as clock:
        first = outbox.claim(ids, timezone.now(), 30)
        steps = first.deliveries[0].steps()
        next(steps)  # refusals (none)
        next(steps)  # the first email goes out
        clock.shift(20)  # 10 s of lease left: less than a request may take
        next(steps)  # so the lease is renewed before the second request
        clock.shift(20)  # the first lease would have run out by now
        assert outbox.claim(ids, timezone.now(), 30).rows == []
        list(steps)

    assert {r.status for r in fresh(rows)} == {Status.SENT}
    assert per_subject(sandbox) == {"Message 0": 1, "Message 1": 1, "Message 2": 1}


@pytest.fixture
def emitlo():
    server = SandboxServer(port=0, provider="emitlo").start()
    yield server
    server.stop()


def test_a_worker_that_lost_its_lease_makes_no_request(emitlo, conf):
    """Invariant: a request is only made for rows the worker still holds."""
    # Emitlo has no idempotency keys: nothing at the API would save a repeat.
    conf(BATCH_SIZE=1, PROVIDER="emitlo", BASE_URL=emitlo.url)
    rows = queue("a@example.com", "b@example.com")
    ids = [r.pk for r in rows]
    with time_machine.travel(timezone.now(), tick=False) as clock:
        first = outbox.claim(ids, timezone.now(), 30)
        steps = first.deliveries[0].steps()
        next(steps)
        clock.shift(31)  # stalled past its lease; another worker takes and sends the rows
        assert outbox.claim(ids, timezone.now(), 30).send() == {"sent": 2}
        list(steps)

    assert first.deliveries[0].outcomes == {"lost_lease": 2}
    assert emitlo.stats["requests"] == 2
    assert per_subject(emitlo) == {"Message 0": 1, "Message 1": 1}
    assert {r.status for r in fresh(rows)} == {Status.SENT}


# --- quota while an outcome is unknown ---------------------------------------------------
def test_a_timeout_after_acceptance_keeps_the_units_booked(sandbox, conf):
    """Invariant: counters never fall below the units of what the API accepted."""
    conf(DAILY_LIMIT=1, TIMEOUT=0.3)
    (slow,) = queue("slow+1000@example.com")
    assert outbox.process([slow.pk]) == {"retry": 1}
    (slow,) = fresh([slow])
    assert (slow.status, slow.last_error_code, slow.quota_units) == (Status.QUEUED, "timeout", 1)
    assert sandbox.wait_for(1, timeout=10)[0]  # the API did take it, after we gave up
    assert quota.usage("acme") == {"day": 1, "month": 1}

    (other,) = queue("b@example.com")
    assert outbox.process([other.pk]) == {"deferred": 1}
    with time_machine.travel(timezone.now() + dt.timedelta(minutes=5), tick=False):
        assert outbox.process([slow.pk]) == {"sent": 1}  # answered as a replay

    assert per_subject(sandbox) == {"Message 0": 1}
    assert quota.usage("acme") == {"day": 1, "month": 1}


def test_a_certain_rejection_gives_the_units_back(sandbox, conf):
    """A 429 means the API did not take the email: its units are free again."""
    conf(DAILY_LIMIT=1)
    (row,) = queue("rate_limit_exceeded@fail.sandbox.test")
    assert outbox.process([row.pk]) == {"retry": 1}
    (row,) = fresh([row])
    assert (row.status, row.quota_units, row.quota_day) == (Status.QUEUED, 0, None)
    assert quota.usage("acme") == {"day": 0, "month": 0}


# --- batches keep their members ----------------------------------------------------------
def timed_out_batch(sandbox, conf, **overrides) -> list[OutboundEmail]:
    """Three emails sent in one batch request that timed out after the API took it."""
    conf(BATCH_SIZE=3, TIMEOUT=0.3, **overrides)
    rows = queue("slow+1000@example.com", "b@example.com", "c@example.com")
    outbox.process([r.pk for r in rows])
    assert sandbox.wait_for(3, timeout=10)[0]
    rows = fresh(rows)
    (key,) = {r.batch_key for r in rows}
    assert key and all(r.quota_units == 1 for r in rows)
    return rows


def assert_sent_once_under(sandbox, rows: list[OutboundEmail], key: str) -> None:
    rows = fresh(rows)
    assert {r.status for r in rows} == {Status.SENT}
    assert {r.batch_key for r in rows} == {key}
    assert [r.provider_message_id for r in rows] == [e["id"] for e in sandbox.emails]
    assert per_subject(sandbox) == {"Message 0": 1, "Message 1": 1, "Message 2": 1}
    assert not FailedSend.objects.filter(error_code="invalid_idempotent_request").exists()


def test_a_batch_in_doubt_goes_again_whole_under_its_key_when_quota_is_short(sandbox, conf):
    """Invariant: a batch key always carries the same emails. Lowering the limit after
    the timeout used to book two of three, re-send them under the old key, get a 409
    invalid_idempotent_request and mark two delivered emails failed."""
    rows = timed_out_batch(sandbox, conf)
    quota.set_limits("acme", daily=2)
    with time_machine.travel(timezone.now() + dt.timedelta(minutes=5), tick=False):
        assert outbox.process([rows[0].pk]) == {"sent": 3}
    assert_sent_once_under(sandbox, rows, rows[0].batch_key)
    assert quota.usage("acme") == {"day": 3, "month": 3}


def test_cancel_leaves_a_batch_in_doubt_whole(sandbox, conf):
    rows = timed_out_batch(sandbox, conf)
    assert outbox.cancel(OutboundEmail.objects.filter(pk=rows[1].pk)) == 0
    with time_machine.travel(timezone.now() + dt.timedelta(minutes=5), tick=False):
        assert outbox.process([rows[2].pk]) == {"sent": 3}
    assert_sent_once_under(sandbox, rows, rows[0].batch_key)


def test_retry_now_requeues_a_batch_in_doubt_whole_and_keeps_its_key(
    sandbox, conf, django_capture_on_commit_callbacks
):
    """ "Retry now" used to clear the key, so the API took the batch a second time."""
    rows = timed_out_batch(sandbox, conf, MAX_RETRIES=0)
    assert {r.status for r in fresh(rows)} == {Status.FAILED}
    with django_capture_on_commit_callbacks():  # no broker: the test runs the worker
        assert outbox.retry_now(OutboundEmail.objects.filter(pk=rows[1].pk)) == 3
    assert outbox.process([rows[1].pk]) == {"sent": 3}
    assert_sent_once_under(sandbox, rows, rows[0].batch_key)


@pytest.mark.django_db(transaction=True)
def test_a_committed_test_publishes_no_task_the_session_worker_could_take(
    sandbox, server_db, unpublished, redis_url, settings
):
    """The rows of a test that commits and drives the outbox itself stay its own.

    Without ``unpublished``, send_messages' on-commit task went to the queue the
    session's worker consumes; that worker once claimed one email of the batch below
    while the test claimed the other two, and the test saw two batch keys (CI on
    MariaDB, 2026-12-02).
    """
    import redis

    broker = redis.Redis.from_url(redis_url)
    before = broker.llen(settings.MAILAPI["QUEUE"])
    rows = queue("a@example.com", "b@example.com")
    assert unpublished.ids == [r.pk for r in rows]
    assert broker.llen(settings.MAILAPI["QUEUE"]) == before


@pytest.mark.django_db(transaction=True)
def test_a_batch_is_claimed_whole_or_not_at_all(sandbox, conf, server_db, unpublished):
    """A member locked by another claim (SKIP LOCKED) holds back its whole batch."""
    rows = timed_out_batch(sandbox, conf)
    later = timezone.now() + dt.timedelta(minutes=5)
    locked, release = threading.Event(), threading.Event()

    def other_claim() -> None:
        with other_session() as other:
            other.execute(
                f"SELECT id FROM {OutboundEmail._meta.db_table} WHERE id = %s FOR UPDATE",
                [rows[2].pk],
            )
            locked.set()
            release.wait(10)

    thread = threading.Thread(target=other_claim)
    thread.start()
    try:
        assert locked.wait(10)
        assert outbox.claim([r.pk for r in rows], later, 30).rows == []
    finally:
        release.set()
        thread.join()
    with time_machine.travel(later, tick=False):
        assert outbox.process([rows[0].pk]) == {"sent": 3}
    assert_sent_once_under(sandbox, rows, rows[0].batch_key)


# --- admin actions carry their precondition -----------------------------------------------
def test_retry_now_and_cancel_leave_rows_that_moved_on_alone(sandbox):
    """The status condition is in the UPDATE itself, so a row that became sent or
    sending after the admin's page was drawn is neither re-queued nor cancelled."""
    sent, sending = queue("a@example.com", "b@example.com")
    OutboundEmail.objects.filter(pk=sent.pk).update(status=Status.SENT)
    OutboundEmail.objects.filter(pk=sending.pk).update(
        status=Status.SENDING, lease_token="x", leased_until=timezone.now()
    )
    both = OutboundEmail.objects.filter(pk__in=[sent.pk, sending.pk])
    now = timezone.now()
    assert both.retry_now(now) == 0
    assert both.cancel(now) == 0
    assert outbox.retry_now(both) == 0
    assert outbox.cancel(both) == 0
    assert [r.status for r in fresh([sent, sending])] == [Status.SENT, Status.SENDING]


def test_the_sweeper_keeps_a_retry_time_a_worker_set_in_the_meantime(sandbox, settings):
    (row,) = queue("a@example.com")
    long_ago = timezone.now() - dt.timedelta(hours=1)
    OutboundEmail.objects.filter(pk=row.pk).update(next_attempt_at=long_ago)
    assert outbox.sweep() == 1
    (row,) = fresh([row])
    assert row.next_attempt_at > long_ago
