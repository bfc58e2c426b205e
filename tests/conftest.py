"""Shared fixtures: the sandbox provider over HTTP, services, a real Celery worker.

Helpers live in tests/helpers.py; tests import them from there, not from here.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

import pytest

from django_mailapi.sandbox import SandboxServer
from tests.celeryapp import app as celery_app  # noqa: F401  (the current app in tests)
from tests.helpers import FIGURES, ROOT, Published, Worker, database_url, service_missing


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if FIGURES:
        terminalreporter.section("django-mailapi figures")
        for name, figures in FIGURES:
            terminalreporter.write_line(f"{name}: {json.dumps(figures)}")


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
    """PostgreSQL itself: for what only PostgreSQL has (say why where it is used).

    On a run against MySQL or MariaDB such a test is skipped, not failed: the run
    against PostgreSQL covers it. Against SQLite, PostgreSQL was missing.
    """
    from django.db import connection

    if connection.vendor == "mysql":
        pytest.skip("PostgreSQL only; this run is on MySQL/MariaDB")
    if connection.vendor != "postgresql":
        server_missing("PostgreSQL")


def server_missing(what: str) -> None:
    """A test needs a database server and this run is on SQLite.

    When DATABASE_URL chose SQLite on purpose (CI's SQLite run), the test is skipped:
    the runs on PostgreSQL and MariaDB cover it. When SQLite is the fallback because
    PostgreSQL was not reachable, that is a missing service (a failure in CI)."""
    if os.environ.get("DATABASE_URL", "").startswith("sqlite:"):
        pytest.skip(f"needs {what}; this run is on SQLite, chosen by DATABASE_URL")
    service_missing(what)


#: The database servers the suite runs on, where transactions really run concurrently.
SERVERS = ("postgresql", "mysql")


@pytest.fixture
def server_db(db: None) -> None:
    """PostgreSQL or MySQL/MariaDB: concurrent workers, not SQLite's single writer."""
    from django.db import connection

    if connection.vendor not in SERVERS:
        server_missing("PostgreSQL or MySQL/MariaDB")


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


@pytest.fixture(scope="session")
def worker_env(
    django_db_setup: None, django_db_blocker: Any, sandbox_server: SandboxServer, redis_url: str
) -> dict[str, str]:
    from django.db import connection

    if connection.vendor not in SERVERS:
        server_missing("PostgreSQL or MySQL/MariaDB (for worker processes)")
    with django_db_blocker.unblock():
        db_url = database_url(connection.settings_dict)
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


@pytest.fixture
def unpublished(monkeypatch: pytest.MonkeyPatch) -> Published:
    """No send task reaches the broker: the test is the only worker of its rows."""
    import django_mailapi.dispatch

    kept = Published()
    monkeypatch.setattr(django_mailapi.dispatch, "_send_task", lambda: kept)
    return kept


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
