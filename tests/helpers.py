"""Small helpers shared by tests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jsonschema

FIXTURES = Path(__file__).parent / "fixtures"


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
    from tests.conftest import Worker

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


def run_sandbox_cli(argv: list[str], provider: str, probe: Any, timeout: float = 10) -> Any:
    """Start the sandbox's command line, read its URL, call ``probe(url)``, then Ctrl-C it.

    Returns (probe's result, exit code, stdout after the first line, stderr).
    """
    import os
    import re
    import selectors
    import signal
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    process = subprocess.Popen(
        [sys.executable, *argv],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
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
