"""Helpers shared by the tests, and by conftest.py's fixtures.

Tests import from here, never from conftest.py (pytest loads that module itself).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from django.core.mail import EmailMessage

from django_mailapi import outbox
from django_mailapi.backend import EmailBackend
from django_mailapi.models import OutboundEmail

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"
REQUIRE_SERVICES = os.environ.get("MAILAPI_REQUIRE_SERVICES") == "1"

#: (test name, figures) reported by tests that measure something; printed at the end.
FIGURES: list[tuple[str, dict[str, Any]]] = []


class Published:
    """Stands in for the send task: the ids that would have been published, kept here.

    A test that commits for real (``transaction=True``) and drives the outbox itself
    uses it (the ``unpublished`` fixture), so that the session's Celery worker, started
    by an earlier test and consuming the same queue, cannot claim some of its rows
    between its own steps.
    """

    def __init__(self) -> None:
        self.ids: list[int] = []

    def apply_async(self, args: list[list[int]], **options: Any) -> None:
        self.ids.extend(args[0])


def service_missing(what: str) -> None:
    """Skip, or fail when MAILAPI_REQUIRE_SERVICES=1 (as in CI)."""
    if REQUIRE_SERVICES:
        pytest.fail(f"{what} is required (MAILAPI_REQUIRE_SERVICES=1) but not reachable")
    pytest.skip(f"{what} not reachable")


#: URL schemes of tests/settings.py's DATABASE_URL, by Django engine.
_SCHEMES = {"django.db.backends.postgresql": "postgres", "django.db.backends.mysql": "mysql"}


def database_url(settings_dict: dict[str, Any]) -> str:
    """DATABASE_URL for a process of its own (a worker, manage.py) on this database."""
    s = settings_dict
    scheme = _SCHEMES[s["ENGINE"]]
    return f"{scheme}://{s['USER']}@{s['HOST']}:{s['PORT']}/{s['NAME']}"


@contextmanager
def other_session() -> Iterator[Any]:
    """A cursor of a second session on the default database, inside a transaction that
    ends when the block does: another worker holding row locks, say."""
    from django.db import connections

    other = connections.create_connection("default")
    try:
        other.set_autocommit(False)
        with other.cursor() as cursor:
            yield cursor
        other.rollback()
    finally:
        other.close()


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05) -> Any:
    """Poll until ``predicate()`` is truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {predicate}")
        time.sleep(interval)


def check_ids(settings: Any, mailapi: Any) -> list[str]:
    """The system check ids ``MAILAPI = mailapi`` gets."""
    from django_mailapi.checks import check_settings

    settings.MAILAPI = mailapi
    return [str(message.id) for message in check_settings()]


# --- the outbox, driven in this process ------------------------------------------------
def send(
    *to: str, org: str | None = None, subject: str = "Subject", **kwargs: Any
) -> OutboundEmail:
    """One email to all of ``to`` through our backend; its outbox row."""
    message = EmailMessage(subject, "Body", "Shop <shop@example.com>", list(to), **kwargs)
    if org:
        message.org = org  # type: ignore[attr-defined]
    EmailBackend().send_messages([message])
    return OutboundEmail.objects.latest("pk")


def send_each(*to: str, attach: bool = False) -> list[OutboundEmail]:
    """One email per address of ``to``, in one call to our backend; their rows, in order."""
    messages = []
    for address in to:
        message = EmailMessage("Hi", "Body", "Shop <shop@example.com>", [address])
        if attach:
            message.attach("a.txt", "x", "text/plain")
        messages.append(message)
    before = OutboundEmail.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    EmailBackend().send_messages(messages)
    return list(OutboundEmail.objects.filter(pk__gt=before).order_by("pk"))


def process(*rows: OutboundEmail) -> list[OutboundEmail]:
    """Run the worker's code on ``rows`` in this process; the rows as it left them."""
    outbox.process([row.pk for row in rows])
    return list(OutboundEmail.objects.filter(pk__in=[r.pk for r in rows]).order_by("pk"))


def process_one(row: OutboundEmail) -> OutboundEmail:
    (done,) = process(row)
    return done


# --- a real Celery worker --------------------------------------------------------------
class Worker:
    """A real ``celery worker`` process on Redis, using the test database."""

    def __init__(self, env: dict[str, str], log: Path, concurrency: int = 1) -> None:
        self.env = env
        self.log = log
        self.concurrency = concurrency
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        from django.conf import settings

        queue = settings.MAILAPI["QUEUE"]
        pool = (
            ["-P", "solo"]
            if self.concurrency == 1
            else ["-P", "prefork", "-c", str(self.concurrency)]
        )
        self.log.write_text("")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "tests.celeryapp",
                "worker",
                *pool,
                "-Q",
                queue,
                "-n",
                f"mailapi-test-{os.getpid()}-{time.monotonic_ns()}@%h",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-l",
                "INFO",
                "-f",
                str(self.log),
            ],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: "ready." in self.log.read_text() or self.proc.poll() is not None, 60)
        if self.proc.poll() is not None:
            raise RuntimeError(f"celery worker exited: {self.log.read_text()[-2000:]}")
        return self

    def stop(self, sig: int | None = None) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        if sig is None:
            self.proc.terminate()
        else:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


# --- request bodies against the providers' published schemas ----------------------------
def resend_schema() -> dict[str, Any]:
    return json.loads((FIXTURES / "resend_send_email_request.schema.json").read_text())


def assert_resend_valid(body: dict[str, Any]) -> None:
    """Fail unless ``body`` is a valid Resend SendEmailRequest."""
    jsonschema.validate(body, resend_schema(), cls=jsonschema.Draft202012Validator)


def sendr_schema(name: str = "sendr_send_email_request") -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.schema.json").read_text())


def assert_sendr_valid(body: dict[str, Any], *, batch: bool = False) -> None:
    """Fail unless ``body`` is a valid Sendr send-email (or batch) request body.

    Formats are checked too: Sendr types ``to`` as ``format: email``.
    """
    schema = sendr_schema("sendr_batch_request" if batch else "sendr_send_email_request")
    jsonschema.validate(
        body,
        schema,
        cls=jsonschema.Draft202012Validator,
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    )


@contextmanager
def provider_worker(
    provider: str, worker_env: dict[str, str], log_dir: Path
) -> Iterator[tuple[Any, Any, str]]:
    """A sandbox speaking ``provider``'s dialect and a Celery worker sending to it.

    The worker runs tests/settings.py with MAILAPI_TEST_PROVIDER, the sandbox's URL and
    a queue of its own, so the session's Resend worker never takes these emails. Yields
    (sandbox, worker, queue); tests point MAILAPI['QUEUE'] at the queue.
    """
    from django.conf import settings
    from django.test import override_settings

    from django_mailapi.sandbox import SandboxServer

    sandbox = SandboxServer(provider=provider).start()
    queue = f"{settings.MAILAPI['QUEUE']}-{provider}"
    env = {
        **worker_env,
        "MAILAPI_TEST_PROVIDER": provider,
        "MAILAPI_BASE_URL": sandbox.url,
        "MAILAPI_QUEUE": queue,
    }
    worker = Worker(env, log_dir / f"worker-{provider}.log")
    try:
        with override_settings(MAILAPI={**settings.MAILAPI, "QUEUE": queue}):
            worker.start()
        yield sandbox, worker, queue
    finally:
        worker.stop()
        sandbox.stop()
        try:
            import redis

            redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1).delete(queue)
        except Exception:  # Redis gone: nothing left in it either
            pass


def run_sandbox_cli(argv: list[str], provider: str, probe: Any, timeout: float = 30) -> Any:
    """Start the sandbox's command line, read its URL, call ``probe(url)``, then Ctrl-C it.

    Returns (probe's result, exit code, stdout after the first line, stderr).
    """
    import re
    import selectors
    import signal

    def as_from_a_terminal() -> None:
        # A suite started in the background (nohup, CI) passes an ignored SIGINT on to
        # its children; a terminal's Ctrl-C is what this command line is tested with.
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    process = subprocess.Popen(
        [sys.executable, *argv],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=as_from_a_terminal,
    )
    try:
        assert process.stdout is not None
        selector = selectors.DefaultSelector()
        selector.register(process.stdout, selectors.EVENT_READ)
        assert selector.select(timeout=timeout), "no start-up line"
        line = process.stdout.readline()
        pattern = rf"Sandbox provider \({provider}\) listening on (http://127\.0\.0\.1:\d+)\n"
        match = re.fullmatch(pattern, line)
        assert match, line
        result = probe(match.group(1))
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return result, process.returncode, stdout, stderr


def headless_chromium(profile: Path, *arguments: str) -> Any:
    """A headless Chromium driven by Selenium, with ``profile`` as its user data folder and
    ``arguments`` added (a window size, say); a skip (a failure in CI) without one."""
    import shutil

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        service_missing("Selenium")
    if not (chromium and driver_path):
        service_missing("Chromium and chromedriver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        *arguments,
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.implicitly_wait(5)
    return driver
