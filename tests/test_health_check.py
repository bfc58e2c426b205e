"""django_mailapi.health.MailAPI in django-health-check's own view."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import pytest
from django.test import RequestFactory
from django.utils import timezone

from django_mailapi.models import Status
from tests.factories import make_email

# django-health-check 4 needs Django 5.2 or later: the Django 4.2 run has no such package.
pytest.importorskip("health_check", reason="django-health-check 4 needs Django 5.2 or later")

from health_check.exceptions import ServiceUnavailable
from health_check.views import HealthCheckView

from django_mailapi.health import MailAPI

pytestmark = pytest.mark.django_db(transaction=True)  # the view runs checks in a thread


def ask(max_age: int = 600) -> tuple[int, dict]:
    """GET the health view (JSON) with our check alone; its status and body."""
    view = HealthCheckView.as_view(checks=[("django_mailapi.health.MailAPI", {"max_age": max_age})])
    request = RequestFactory().get("/ht/", {"format": "json"})
    response = asyncio.run(view(request))
    return response.status_code, json.loads(response.content)


def test_healthy_when_nothing_due_has_waited_too_long():
    now = timezone.now()
    make_email(status=Status.SENT)
    make_email(status=Status.QUEUED, next_attempt_at=now - dt.timedelta(seconds=30))
    # Deferred to tomorrow by quota: waiting, not stuck.
    make_email(status=Status.DEFERRED, next_attempt_at=now + dt.timedelta(hours=20))

    status, body = ask(max_age=600)

    assert status == 200
    assert list(body.values()) == ["OK"]


def test_unavailable_when_the_oldest_due_email_waited_longer_than_max_age():
    make_email(status=Status.QUEUED, next_attempt_at=timezone.now() - dt.timedelta(minutes=11))

    status, body = ask(max_age=600)

    assert status == 500
    (message,) = body.values()
    assert message.startswith("Unavailable: the oldest due email has waited 66")
    assert message.endswith("longer than 600 s: no worker is taking email from the outbox")


def test_a_lease_left_by_a_dead_worker_counts_as_waiting():
    make_email(status=Status.SENDING, leased_until=timezone.now() - dt.timedelta(seconds=120))

    result = asyncio.run(MailAPI(max_age=60).get_result())

    assert isinstance(result.error, ServiceUnavailable)
    assert "has waited 12" in str(result.error)
