"""Delivery guarantees, proven by breaking real parts: worker processes killed with
SIGKILL, a broker that is down, an API that fails 30% of requests, an API that
rate-limits. PostgreSQL (or MySQL/MariaDB) + Redis + real Celery workers + the sandbox
over HTTP. The worker-killed, broker-outage and rate-limit tests run twice: with Redis
and with RabbitMQ as the broker.

Each test prints its figures (sent, lost, duplicated, 429s, timings) to the terminal;
the assertions are about outcomes, never about how fast something went. One outcome has a
deadline in it because the defaults promise one: with the default settings a killed
worker's emails are all sent within a minute of the kill.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from urllib.parse import urlparse

import pytest
from django.core import mail

from django_mailapi import outbox
from django_mailapi.conf import DEFAULTS, get_settings
from django_mailapi.models import FailedSend, OutboundEmail, Status
from tests.celeryapp import app as celery_app
from tests.helpers import FIGURES, Worker, service_missing, wait_for
from tests.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.services]

#: The machine's RabbitMQ (guest/guest, vhost /); RABBITMQ_URL names another.
RABBITMQ_URL = os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")


@pytest.fixture(autouse=True)
def _services(server_db: None, sandbox: Any, settings: Any) -> None:
    settings.EMAIL_BACKEND = "django_mailapi.backend.EmailBackend"


def _rabbitmq() -> tuple[str, int]:
    """RABBITMQ_URL and its port, or a skip (a failure in CI) when it does not answer."""
    port = urlparse(RABBITMQ_URL).port or 5672
    if not _answers(port):
        service_missing(f"RabbitMQ at {RABBITMQ_URL}")
    return RABBITMQ_URL, port


@pytest.fixture(params=["redis", "rabbitmq"])
def broker(request: pytest.FixtureRequest) -> Iterator[str]:
    """The broker this process publishes to, and the workers it starts consume from."""
    original = celery_app.conf.broker_url
    if request.param == "redis":
        yield original
        return
    url, _port = _rabbitmq()
    point_celery_at(url)
    try:
        yield url
    finally:
        point_celery_at(original)


def broker_name(url: str) -> str:
    return "rabbitmq" if url.startswith("amqp") else "redis"


def delete_queue(url: str, queue: str) -> None:
    """Delete a test's queue (and its exchange) from RabbitMQ, where queues are durable
    and would outlive the run; on Redis an empty queue is gone by itself."""
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=2) as conn:
            channel = conn.default_channel
            channel.queue_delete(queue)
            channel.exchange_delete(queue)
    except Exception as exc:  # a leftover queue is untidy, not a failed test
        print(f"could not delete {queue} from RabbitMQ: {exc!r}", file=sys.stderr)


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Any:
    """Keep a test's figures; conftest prints them in the terminal summary."""

    def write(**figures: Any) -> None:
        FIGURES.append((request.node.name, figures))

    return write


@pytest.fixture
def start_worker(worker_env: dict[str, str], tmp_path: Any, settings: Any) -> Iterator[Any]:
    """Start worker processes with MAILAPI overrides (also applied in this process)."""
    workers: list[Worker] = []

    # A queue of the test's own, so the session's shared worker never takes its tasks.
    queue = f"{settings.MAILAPI['QUEUE']}-{uuid.uuid4().hex[:8]}"

    brokers: set[str] = set()

    def start(overrides: dict[str, Any], concurrency: int = 1, **env: str) -> Worker:
        overrides = {"QUEUE": queue, **overrides}
        settings.MAILAPI = {**settings.MAILAPI, **overrides}
        # The broker this process publishes to, unless the test names another.
        env.setdefault("CELERY_BROKER_URL", celery_app.conf.broker_url)
        brokers.add(env["CELERY_BROKER_URL"])
        full_env = {**worker_env, "MAILAPI_TEST_OVERRIDES": json.dumps(overrides), **env}
        worker = Worker(full_env, tmp_path / f"worker{len(workers)}.log", concurrency)
        workers.append(worker.start())
        return worker

    yield start
    for worker in workers:
        worker.stop(signal.SIGKILL)
    if any(url.startswith("amqp") for url in brokers):
        # Straight to RabbitMQ: a test's proxy in front of it may be stopped by now.
        delete_queue(RABBITMQ_URL, queue)


def send_many(count: int, to: str = "user{i}@example.com") -> list[int]:
    messages = [
        (f"Message {to.format(i=i)} {i}", "body", "a@example.com", [to.format(i=i)])
        for i in range(count)
    ]
    assert mail.send_mass_mail(messages) == count
    return list(OutboundEmail.objects.order_by("pk").values_list("pk", flat=True))


def settled_count() -> int:
    return OutboundEmail.objects.filter(status__in=[Status.SENT, Status.FAILED]).count()


def deliveries_per_message(sandbox: Any) -> Counter[str]:
    """How often the sandbox stored each message, by its subject (unique per message)."""
    return Counter(email["payload"]["subject"] for email in sandbox.emails)


def subjects() -> set[str]:
    return set(OutboundEmail.objects.values_list("subject", flat=True))


def sent_subjects() -> set[str]:
    return set(OutboundEmail.objects.filter(status=Status.SENT).values_list("subject", flat=True))


def sweep_until_settled(total: int, timeout: float) -> None:
    """What beat does in production: sweep now and then until every email settled."""

    def settled() -> bool:
        if settled_count() == total:
            return True
        outbox.sweep()
        return False

    wait_for(settled, timeout=timeout, interval=0.5)


def test_worker_killed_mid_batch_loses_nothing_and_sends_nothing_twice(
    sandbox, broker, start_worker, report
):
    overrides = {"LEASE_SECONDS": 3, "SWEEP_AFTER_SECONDS": 2, "BATCH_SIZE": 20}
    first = start_worker(overrides)
    ids = send_many(300, to="slow+40@example.com")  # 40 ms per request: often killed mid-call
    wait_for(lambda: len(sandbox.emails) >= 60, timeout=60)

    first.stop(signal.SIGKILL)
    at_kill = len(sandbox.emails)
    start_worker(overrides)
    sweep_until_settled(len(ids), timeout=180)

    per_key = deliveries_per_message(sandbox)
    assert OutboundEmail.objects.filter(status=Status.SENT).count() == 300
    assert set(per_key) == subjects()
    assert max(per_key.values()) == 1
    report(
        broker=broker_name(broker),
        messages=300,
        delivered_before_kill=at_kill,
        sent=len(per_key),
        lost=300 - len(per_key),
        duplicated=sum(n - 1 for n in per_key.values()),
        replays_answered_by_idempotency=sandbox.stats["replays"],
    )


#: The README's beat schedule for the sweeper: ``"schedule": 15.0``.
BEAT_SWEEP_SECONDS = 15.0
#: What the issue asks of the defaults: all of a killed worker's emails sent within this.
RECOVERY_TARGET_SECONDS = 60.0
#: What tests/settings.py must set to reach the sandbox; everything else is reset below.
SANDBOX_SETTINGS = {"PROVIDER", "API_KEY", "BASE_URL", "QUEUE"}


class Beat:
    """``outbox.sweep()`` every ``every`` seconds, as CELERY_BEAT_SCHEDULE runs the sweeper.

    Started with the workers, so its phase has nothing to do with the kill. It runs when
    ``tick()`` is called, which ``wait_for`` does several times a second.
    """

    def __init__(self, every: float) -> None:
        self.every = every
        self.next_at = time.monotonic() + every
        self.runs: list[tuple[float, int]] = []  # (time.monotonic(), emails dispatched)

    def tick(self) -> None:
        if time.monotonic() >= self.next_at:
            self.runs.append((time.monotonic(), outbox.sweep()))
            self.next_at += self.every


def test_worker_killed_with_default_settings_is_recovered_within_a_minute(
    sandbox, broker, start_worker, settings, report
):
    # Default settings: no lease, sweep or batch overrides, and the test settings' own
    # shorter timeout and retry delays put back to the defaults too.
    overrides = {
        name: DEFAULTS[name]
        for name in settings.MAILAPI
        if name not in SANDBOX_SETTINGS and name in DEFAULTS
    }
    first = start_worker(overrides)
    beat = Beat(BEAT_SWEEP_SECONDS)
    # 40 ms per API request, so the 300 are not all sent before the kill lands.
    ids = send_many(300, to="slow+40@example.com")
    assert sandbox.wait_for(1, timeout=60)[0]

    killed_at, killed_at_wall = time.monotonic(), time.time()
    first.stop(signal.SIGKILL)
    at_kill = len(sandbox.emails)
    assert at_kill < 300  # the kill came while there was still work to do
    start_worker(overrides)

    def all_sent() -> bool:
        beat.tick()
        return OutboundEmail.objects.filter(status=Status.SENT).count() == len(ids)

    remaining = RECOVERY_TARGET_SECONDS - (time.monotonic() - killed_at)
    try:
        wait_for(all_sent, timeout=remaining, interval=0.2)
        within_target = True
    except AssertionError:
        within_target = False
    all_sent_after = time.monotonic() - killed_at

    emails = sandbox.emails
    per_key = Counter(email["payload"]["subject"] for email in emails)
    last_arrival = max(datetime.fromisoformat(email["received_at"]) for email in emails)
    by_status = Counter(OutboundEmail.objects.values_list("status", flat=True))
    conf = get_settings()
    report(
        broker=broker_name(broker),
        messages=300,
        lease_seconds=conf.LEASE_SECONDS,
        sweep_after_seconds=conf.SWEEP_AFTER_SECONDS,
        batch_size=conf.BATCH_SIZE,
        sweep_every_seconds=BEAT_SWEEP_SECONDS,
        delivered_before_kill=at_kill,
        kill_to_last_arrival_seconds=round(last_arrival.timestamp() - killed_at_wall, 2),
        kill_to_all_sent_seconds=round(all_sent_after, 2) if within_target else None,
        sweeps_from_kill=[[round(at - killed_at, 1), dispatched] for at, dispatched in beat.runs],
        statuses=dict(by_status),
        delivered=len(per_key),
        not_delivered=300 - len(per_key),
        duplicated=sum(n - 1 for n in per_key.values()),
        replays_answered_by_idempotency=sandbox.stats["replays"],
        met_60s_target=within_target,
    )
    assert within_target, (
        f"not all 300 sent within {RECOVERY_TARGET_SECONDS:.0f}s of the kill: {dict(by_status)}"
    )
    assert set(per_key) == subjects()
    assert max(per_key.values()) == 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def point_celery_at(url: str) -> None:
    celery_app.conf.broker_url = url
    celery_app._pool = None  # drop pooled connections to the old broker
    celery_app.amqp._producer_pool = None


class RedisBroker:
    """A redis-server of the test's own on a free port: down until started."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)


class RabbitMQBroker:
    """The shared RabbitMQ behind a proxy on a free port, which the test starts and
    stops: while it is stopped the broker is unreachable for this test alone."""

    def __init__(self) -> None:
        url, target = _rabbitmq()
        self.port = free_port()
        self.url = url.replace(f":{target}/", f":{self.port}/", 1)
        self.proxy = TcpProxy(target, self.port)
        self.started = False

    def start(self) -> None:
        self.proxy.start()
        self.started = True

    def stop(self) -> None:
        if self.started:
            self.proxy.stop()


@pytest.mark.parametrize("kind", ["redis", "rabbitmq"])
def test_broker_outage_keeps_rows_queued_and_the_sweeper_delivers_them(
    sandbox, start_worker, report, kind
):
    broker = RedisBroker() if kind == "redis" else RabbitMQBroker()
    url = broker.url
    original = celery_app.conf.broker_url
    point_celery_at(url)
    try:
        durations = []
        for i in range(20):
            started = time.perf_counter()
            assert mail.send_mail(f"Outage {i}", "b", "a@example.com", [f"o{i}@example.com"]) == 1
            durations.append(time.perf_counter() - started)
        assert OutboundEmail.objects.filter(status=Status.QUEUED).count() == 20
        assert sandbox.emails == []

        broker.start()
        wait_for(lambda: _answers(broker.port), timeout=20)
        point_celery_at(url)
        start_worker({"SWEEP_AFTER_SECONDS": 1}, CELERY_BROKER_URL=url)
        sweep_until_settled(20, timeout=60)
    finally:
        point_celery_at(original)
        broker.stop()

    per_key = deliveries_per_message(sandbox)
    assert OutboundEmail.objects.filter(status=Status.SENT).count() == 20
    assert len(per_key) == 20
    assert max(per_key.values()) == 1
    report(
        broker=kind,
        send_mail_calls=20,
        broker_down_send_mail_seconds_max=round(max(durations), 3),
        broker_down_send_mail_seconds_mean=round(sum(durations) / 20, 3),
        delivered_after_recovery=len(per_key),
        duplicated=sum(n - 1 for n in per_key.values()),
    )


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), 0.5):
            return True
    except OSError:
        return False


def test_api_failing_30_percent_ends_every_email_sent_once_or_recorded(
    sandbox, start_worker, report
):
    sandbox.fail_rate = 0.3
    start_worker(
        {"RETRY_BASE_DELAY": 0.05, "RETRY_MAX_DELAY": 0.5, "MAX_RETRIES": 12, "BATCH_SIZE": 1}
    )
    ids = send_many(1000)
    wait_for(lambda: settled_count() == len(ids), timeout=240, interval=0.5)

    sent = sent_subjects()
    failed = OutboundEmail.objects.filter(status=Status.FAILED)
    per_key = deliveries_per_message(sandbox)
    assert set(per_key) == sent
    assert max(per_key.values()) == 1
    assert len(sent) + failed.count() == 1000
    for email in failed:
        assert FailedSend.objects.filter(email=email, will_retry=False).exists()
    stats = sandbox.stats
    report(
        messages=1000,
        sent=len(sent),
        failed_with_record=failed.count(),
        lost=1000 - len(sent) - failed.count(),
        duplicated=sum(n - 1 for n in per_key.values()),
        injected_500s=stats["errors_by_status"].get("500", 0),
        injected_resets=stats["resets"],
        failed_attempts_recorded=FailedSend.objects.count(),
    )


@pytest.mark.parametrize("shared_limit", [False, True], ids=["no-limit", "RATE_LIMIT=5"])
def test_rate_limited_api_gets_everything_and_no_429_with_a_shared_limit(
    sandbox, broker, start_worker, report, shared_limit
):
    sandbox.rate_limit = 5
    # One request per email, and eight tasks so both worker processes take some.
    overrides: dict[str, Any] = {"BATCH_SIZE": 1, "RETRY_BASE_DELAY": 0.2}
    if shared_limit:
        overrides["RATE_LIMIT"] = 5
    start_worker(overrides, concurrency=2)
    started = time.perf_counter()
    for part in range(8):
        send_many(5, to=f"p{part}-{{i}}@example.com")
    ids = list(OutboundEmail.objects.values_list("pk", flat=True))
    wait_for(lambda: settled_count() == len(ids), timeout=120, interval=0.2)
    elapsed = time.perf_counter() - started

    per_key = deliveries_per_message(sandbox)
    assert OutboundEmail.objects.filter(status=Status.SENT).count() == 40
    assert max(per_key.values()) == 1
    rate_limited = sandbox.stats["rate_limited"]
    if shared_limit:
        assert rate_limited == 0
    report(
        broker=broker_name(broker),
        messages=40,
        worker_processes=2,
        shared_rate_limit=shared_limit,
        sandbox_limit_per_second=5,
        responses_429=rate_limited,
        seconds=round(elapsed, 2),
    )


def test_worker_processes_get_settings_overrides_as_json():
    # The mechanism the tests above rely on, kept honest.
    env = json.dumps({"LEASE_SECONDS": 3})
    out = subprocess.run(
        [
            sys.executable, "-c",
            "import django, os; django.setup(); from django.conf import settings; "
            "print(settings.MAILAPI['LEASE_SECONDS'])",
        ],
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings",
             "MAILAPI_TEST_OVERRIDES": env},
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert out.stdout.strip() == "3"


def cut_other_connections() -> int:
    """End every other session on the test database, as a database restart would."""
    from django.db import connection

    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            return int(cursor.fetchone()[0])
        cursor.execute(
            "SELECT id FROM information_schema.processlist "
            "WHERE db = DATABASE() AND id <> CONNECTION_ID()"
        )
        ids = [row[0] for row in cursor.fetchall()]
        for session in ids:
            cursor.execute(f"KILL CONNECTION {int(session)}")
        return len(ids)


def test_database_lost_mid_send_marks_nothing_false_and_the_email_goes_once(
    sandbox, start_worker, report
):

    start_worker({"LEASE_SECONDS": 3, "SWEEP_AFTER_SECONDS": 1})
    mail.send_mail("DB outage", "b", "a@example.com", ["slow+1500@example.com"])
    row = OutboundEmail.objects.get()
    wait_for(lambda: sandbox.stats["slowed"] >= 1, timeout=30)  # the worker is in the call

    # Cut every database connection but ours: the worker's write of the outcome fails.
    terminated = cut_other_connections()
    assert terminated >= 1
    wait_for(lambda: len(sandbox.emails) == 1, timeout=30)  # the API did take it
    row.refresh_from_db()
    assert row.status == Status.SENDING  # not marked sent, not marked failed

    sweep_until_settled(1, timeout=90)
    row.refresh_from_db()
    assert row.status == Status.SENT
    assert len(sandbox.emails) == 1  # the retry was answered from the idempotency store
    assert sandbox.stats["replays"] == 1
    report(
        worker_connections_cut=terminated,
        delivered=len(sandbox.emails),
        duplicated=0,
        attempts=row.attempts,
    )
