"""Acceptance: every error on Resend's error page (seed 000) goes the whole way.

One email per documented (code, HTTP status) is sent through EmailBackend, a real
Celery worker and the sandbox, which answers with that error. Each must end as a
FailedSend with the code, the status and a suggested action, retried or deferred
as its retry class says, and be listed by ``mailapi_failed`` and in the admin.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from django.core import mail
from django.core.management import call_command
from django.test import override_settings
from django.urls import reverse

from django_mailapi import errors
from django_mailapi.errors import RetryClass
from django_mailapi.models import OutboundEmail, Status
from tests.helpers import FIXTURES, Worker, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.services]

SEED = FIXTURES / "seeds" / "000_aa05d2e2a18543b5.txt"
ENTRY = re.compile(r"^### `(?P<code>[a-z_]+)`\s+\* \*\*Status:\*\* (?P<status>\d+)", re.M)


def seed_errors() -> list[tuple[str, int]]:
    """The (code, HTTP status) pairs the seed page documents, in page order, once each."""
    pairs = [(m["code"], int(m["status"])) for m in ENTRY.finditer(SEED.read_text())]
    return list(dict.fromkeys(pairs))


def address(code: str, status: int, pairs: list[tuple[str, int]]) -> str:
    statuses = {s for c, s in pairs if c == code}
    return (
        f"{code}+{status}@fail.sandbox.test" if len(statuses) > 1 else f"{code}@fail.sandbox.test"
    )


def test_the_seed_page_is_parsed_into_every_documented_error():
    pairs = seed_errors()

    assert ("validation_error", 400) in pairs
    assert ("validation_error", 403) in pairs
    assert ("rate_limit_exceeded", 429) in pairs
    assert ("internal_server_error", 500) in pairs
    assert len(pairs) == len({code for code, _ in pairs}) + 1  # validation_error twice


@pytest.fixture(scope="module")
def retry_once_queue() -> str:
    from django.conf import settings

    return f"{settings.MAILAPI['QUEUE']}-retry-once"


@pytest.fixture(scope="module")
def retry_once_worker(
    worker_env: dict[str, str], tmp_path_factory: Any, retry_once_queue: str, redis_url: str
) -> Iterator[Worker]:
    """A worker on its own queue whose settings allow one retry (MAX_RETRIES=1)."""
    from django.conf import settings

    env = {**worker_env, "MAILAPI_TEST_MAX_RETRIES": "1", "MAILAPI_QUEUE": retry_once_queue}
    with override_settings(MAILAPI={**settings.MAILAPI, "QUEUE": retry_once_queue}):
        worker = Worker(env, tmp_path_factory.mktemp("retry-once") / "worker.log").start()
    yield worker
    worker.stop()
    import redis

    redis.Redis.from_url(redis_url).delete(retry_once_queue)


def settled(ids: list[int]) -> bool:
    moving = OutboundEmail.objects.filter(pk__in=ids, status__in=[Status.QUEUED, Status.SENDING])
    return not moving.exists()


def test_every_resend_error_of_the_seed_is_recorded_with_its_action(
    settings, sandbox, server_db, retry_once_worker, retry_once_queue, admin_client
):
    settings.EMAIL_BACKEND = "django_mailapi.backend.EmailBackend"  # pytest-django sets locmem
    settings.MAILAPI = {**settings.MAILAPI, "QUEUE": retry_once_queue, "MAX_RETRIES": 1}
    pairs = seed_errors()
    sent: dict[tuple[str, int], int] = {}
    for code, status in pairs:
        mail.send_mail(
            f"{code} {status}", "body", "shop@example.com", [address(code, status, pairs)]
        )
        sent[(code, status)] = OutboundEmail.objects.latest("id").pk

    wait_for(lambda: settled(list(sent.values())), timeout=120)

    listed = json.loads(run_failed())
    for (code, status), pk in sent.items():
        email = OutboundEmail.objects.get(pk=pk)
        failures = list(email.failures.filter(error_code=code).order_by("attempt"))
        label = f"{code} {status}: {email.status}, {email.last_error_code}"
        assert failures, label
        assert all(f.http_status == status for f in failures), label
        assert all(f.suggested_action.strip() for f in failures), label
        retry = errors.resolve("resend", code, status, failures[0].message).retry

        if retry is RetryClass.PERMANENT:
            assert email.status == Status.FAILED, label
            assert email.attempts == 1, label
            assert email.failures.count() == 1, label
            assert email.last_error_code == code, label
            assert failures[0].will_retry is False, label
        elif retry.is_transient:
            # Tried, retried once (MAX_RETRIES=1), then given up.
            assert email.status == Status.FAILED, label
            assert email.last_error_code == "retries_exhausted", label
            assert [f.will_retry for f in failures] == [True, False], label
            assert email.failures.filter(error_code="retries_exhausted").count() == 1, label
        else:
            assert retry.is_quota, label
            assert email.status == Status.DEFERRED, label
            assert email.next_attempt_at is not None, label
            assert len(failures) == 1 and failures[0].will_retry is True, label

        assert any(
            row["email_id"] == pk and row["error_code"] == code and row["http_status"] == status
            for row in listed
        ), label
        page = admin_client.get(
            reverse("admin:django_mailapi_failedsend_changelist"), {"q": f"{code} {status}"}
        ).content.decode()
        # The code cell links the code to its entry in the error reference.
        assert '<td class="field-error_code_link">' in page, label
        assert f"#code-resend-{code}" in page and f"<code>{code}</code>" in page, label
        assert f'<td class="field-http_status_display">{status}</td>' in page, label
    assert sandbox.emails == []


def run_failed() -> str:
    out = io.StringIO()
    call_command("mailapi_failed", "--format", "json", "--limit", "1000", stdout=out)
    return out.getvalue()
