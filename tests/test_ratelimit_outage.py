"""The shared rate limiter's Redis goes away mid-send: no email pays for it.

The test starts a redis-server of its own on a free loopback port, makes it Django's
default cache (where ``RATE_LIMIT`` keeps its slots), sends through the outbox to the
sandbox and stops that Redis between two requests. Every email must still be sent, on
its first attempt, under the provider's own rate limit; the outage is logged once; and
when the same Redis comes back the limiter uses it again.
"""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.core import mail

from django_mailapi import outbox, ratelimit
from django_mailapi.models import FailedSend, OutboundEmail, Status
from tests.helpers import service_missing, wait_for

pytestmark = pytest.mark.django_db


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A redis-server on loopback that keeps nothing on disk; stop and start it at will."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=1)

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for(self._answers, timeout=10)
        return self

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with status {self.proc.returncode}")
        try:
            return bool(self.client().ping())
        except redis.ConnectionError:
            return False

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def script_calls(self) -> int:
        """How many times this server ran a Lua script since it started."""
        stats = self.client().info("commandstats")
        return sum(stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in ("evalsha", "eval"))


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        service_missing("redis-server (the binary)")
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _fresh_outage_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process has seen no outage yet, whatever ran before (warnings are throttled
    per process)."""
    monkeypatch.setattr(ratelimit, "_outage_since", None)
    monkeypatch.setattr(ratelimit, "_last_warning", None)
    monkeypatch.setattr(ratelimit, "_fallen_back", set())


def queue(count: int, first: int = 0) -> list[int]:
    for n in range(first, first + count):
        mail.send_mail(f"Hello {n}", "Body", "shop@example.com", [f"user{n}@example.org"])
    return list(
        OutboundEmail.objects.filter(status=Status.QUEUED)
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def outage_warnings(caplog: Any) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "shared rate limiter" in r.getMessage()
    ]


def test_a_limiter_outage_falls_back_to_a_per_process_limit_and_burns_no_retries(
    sandbox, settings, caplog, own_redis
):
    settings.EMAIL_BACKEND = "django_mailapi.backend.EmailBackend"
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": own_redis.url,
        }
    }
    # One request per email, and no retry to spare: an attempt lost to the outage shows.
    settings.MAILAPI = {**settings.MAILAPI, "RATE_LIMIT": 8.0, "BATCH_SIZE": 1, "MAX_RETRIES": 0}
    sandbox.rate_limit = 10  # the provider's own limit, per second
    caplog.set_level(logging.INFO, logger="django_mailapi")

    first = queue(16)
    (delivery,) = outbox.claim(first).deliveries
    made = 0
    for request in delivery.steps():
        made += request is not None
        if made == 4 and own_redis.proc and own_redis.proc.poll() is None:
            assert own_redis.script_calls() >= 4, "the first requests took their slot in Redis"
            own_redis.stop()

    assert made == 16
    own_redis.start()  # the same Redis, on the same port, empty
    second = queue(4, first=16)
    outbox.process(second)

    statuses = OutboundEmail.objects.order_by("pk").values_list("status", "attempts")
    assert list(statuses) == [(Status.SENT, 1)] * 20
    assert not FailedSend.objects.exists()
    assert len(sandbox.emails) == 20
    assert sandbox.stats["rate_limited"] == 0, "the per-process limiter kept under the limit"
    (warning,) = outage_warnings(caplog)
    assert "per-process" in warning
    assert own_redis.script_calls() >= 3, "back on the shared limiter once Redis answered"
    assert any("reachable again" in r.getMessage() for r in caplog.records)
