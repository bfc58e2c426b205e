"""The API key never shows up in a database row, a log line, an error message, a task
message or an admin page."""

from __future__ import annotations

import json
import logging

import pytest
import redis
from django.core import mail, serializers
from django.db import transaction

from django_mailapi import outbox
from django_mailapi.models import FailedSend, OrgQuota, OutboundEmail, UsageCounter
from tests.celeryapp import app as celery_app

KEY = "re_SECRET_9f3c2a7d41e8b6"

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _secret_key(settings, sandbox):
    settings.EMAIL_BACKEND = "django_mailapi.backend.EmailBackend"
    settings.MAILAPI = {
        **settings.MAILAPI,
        "API_KEY": KEY,
        "DAILY_LIMIT": 50,
        "QUEUE": "secrets-q",
        "BATCH_SIZE": 1,
    }


def everything_in_the_database() -> str:
    return "".join(
        serializers.serialize("json", model.objects.all())
        for model in (OutboundEmail, FailedSend, OrgQuota, UsageCounter)
    )


def test_api_key_appears_nowhere(sandbox, settings, caplog, redis_url):
    caplog.set_level(logging.DEBUG)
    client = redis.Redis.from_url(redis_url)
    client.delete("secrets-q")
    try:
        with transaction.atomic():
            mail.send_mail("ok", "b", "a@example.com", ["ann@example.org"])
            mail.send_mail("bad key", "b", "a@example.com", ["invalid_api_key@fail.sandbox.test"])
            mail.send_mail("flaky", "b", "a@example.com", ["flaky+1@example.org"])
        raw_tasks = client.lrange("secrets-q", 0, -1)
        outbox.process(list(OutboundEmail.objects.values_list("pk", flat=True)))
        settings.MAILAPI = {**settings.MAILAPI, "BASE_URL": "http://127.0.0.1:9"}
        mail.send_mail("unreachable", "b", "a@example.com", ["c@example.org"])
        outbox.process([OutboundEmail.objects.latest("pk").pk])
    finally:
        client.delete("secrets-q")

    assert raw_tasks, "the backend published task messages"
    for raw in raw_tasks:
        message = json.loads(raw)
        assert message["content-type"] == "application/json"
        assert KEY not in raw.decode()
    assert FailedSend.objects.filter(error_code="invalid_api_key").exists()
    assert FailedSend.objects.filter(error_code="connection_error").exists()
    assert KEY not in everything_in_the_database()
    assert all(KEY not in record.getMessage() for record in caplog.records)
    assert KEY not in caplog.text
    for failure in FailedSend.objects.all():
        assert KEY not in failure.message
        assert KEY not in json.dumps(failure.details)
    assert all(KEY not in json.dumps(e["headers"]) for e in sandbox.emails)


def test_provider_repr_hides_the_key():
    from django_mailapi.providers.resend import ResendProvider

    provider = ResendProvider(api_key=KEY, base_url="http://127.0.0.1:9")
    assert KEY not in repr(provider)
    assert KEY not in str(vars(provider).get("base_url"))


def test_celery_is_json_only():
    assert celery_app.conf.task_serializer == "json"
    assert list(celery_app.conf.accept_content) == ["json"]
    from django_mailapi.tasks import send_emails

    assert send_emails.serializer == "json"
    assert send_emails.acks_late is True
