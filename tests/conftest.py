"""Shared fixtures: the sandbox provider over HTTP, services, a real Celery worker."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from django_mailapi.sandbox import SandboxServer
from tests.celeryapp import app as celery_app  # noqa: F401  (the current app in tests)

ROOT = Path(__file__).resolve().parents[1]
REQUIRE_SERVICES = os.environ.get("MAILAPI_REQUIRE_SERVICES") == "1"


#: (test name, figures) reported by tests that measure something; printed at the end.
FIGURES: list[tuple[str, dict[str, Any]]] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if FIGURES:
        terminalreporter.section("django-mailapi figures")
        for name, figures in FIGURES:
            terminalreporter.write_line(f"{name}: {json.dumps(figures)}")


def service_missing(what: str) -> None:
    """Skip, or fail when MAILAPI_REQUIRE_SERVICES=1 (as in CI)."""
    if REQUIRE_SERVICES:
        pytest.fail(f"{what} is required (MAILAPI_REQUIRE_SERVICES=1) but not reachable")
    pytest.skip(f"{what} not reachable")


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


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[SandboxServer]:
    server = SandboxServer(port=0).start()
    yield server
    server.stop()


@pytest.fixture
def sandbox(sandbox_server: SandboxServer, settings: Any) -> Iterator[SandboxServer]:
    """A clean sandbox, with MAILAPI['BASE_URL'] pointing at it."""
    sandbox_server.reset()
    sandbox_server.rate_limit = None
    sandbox_server.fail_rate = 0.0
    settings.MAILAPI = {**settings.MAILAPI, "BASE_URL": sandbox_server.url}
    yield sandbox_server
    sandbox_server.reset()


@pytest.fixture
def postgres(db: None) -> None:
    from django.db import connection

    if connection.vendor != "postgresql":
        service_missing("PostgreSQL")


def _redis_url() -> str:
    from django.conf import settings

    return str(settings.REDIS_URL)


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = _redis_url()
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 6379), 1):
            pass
    except OSError:
        service_missing(f"Redis at {url}")
    return url


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


@pytest.fixture(scope="session")
def worker_env(
    django_db_setup: None, django_db_blocker: Any, sandbox_server: SandboxServer, redis_url: str
) -> dict[str, str]:
    from django.db import connection

    if connection.vendor != "postgresql":
        service_missing("PostgreSQL (for worker processes)")
    with django_db_blocker.unblock():
        s = connection.settings_dict
    db_url = f"postgres://{s['USER']}@{s['HOST']}:{s['PORT']}/{s['NAME']}"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": db_url,
        "REDIS_URL": redis_url,
        "MAILAPI_BASE_URL": sandbox_server.url,
        "PYTHONPATH": str(ROOT),
    }
    env.pop("MAILAPI_REQUIRE_SERVICES", None)
    return env


@pytest.fixture(scope="session")
def celery_worker(worker_env: dict[str, str], tmp_path_factory: Any) -> Iterator[Worker]:
    """One worker for the session; tests that use it need ``transaction=True``."""
    worker = Worker(worker_env, tmp_path_factory.mktemp("worker") / "worker.log").start()
    yield worker
    worker.stop()


@pytest.fixture(scope="session", autouse=True)
def _drop_test_queue() -> Iterator[None]:
    """Delete this run's queue from Redis at the end, whatever the tests left in it."""
    yield
    from django.conf import settings

    try:
        import redis

        client = redis.Redis.from_url(_redis_url(), socket_connect_timeout=1)
        client.delete(settings.MAILAPI["QUEUE"])
    except Exception:  # Redis not there: nothing was queued in it either
        pass
