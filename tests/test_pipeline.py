"""The whole path: send_mail -> outbox -> real Celery worker on Redis -> sandbox over HTTP."""

from __future__ import annotations

import io

import pytest
from django.core import mail
from django.core.mail import EmailMultiAlternatives

from django_mailapi.models import FailedSend, OutboundEmail, Status
from tests.helpers import assert_resend_valid, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.services]


@pytest.fixture(autouse=True)
def _our_backend(settings, sandbox, celery_worker, server_db):
    settings.EMAIL_BACKEND = "django_mailapi.backend.EmailBackend"


def settled(*ids: int) -> bool:
    done = OutboundEmail.objects.filter(pk__in=ids, status__in=[Status.SENT, Status.FAILED])
    return done.count() == len(ids)


def test_send_mail_reaches_the_sandbox_through_a_worker_with_its_idempotency_key(sandbox):
    msg = EmailMultiAlternatives(
        "Welcome", "Hi Ann", "Shop <shop@example.com>", ["ann@example.org"]
    )
    msg.attach_alternative("<p>Hi Ann</p>", "text/html")
    msg.send()
    row = OutboundEmail.objects.get()

    wait_for(lambda: settled(row.pk))

    row.refresh_from_db()
    assert row.status == Status.SENT
    assert row.attempts == 1
    (received,) = sandbox.emails
    assert received["id"] == row.provider_message_id
    assert received["idempotency_key"] == row.idempotency_key
    assert_resend_valid(received["payload"])
    assert received["payload"]["html"] == "<p>Hi Ann</p>"
    headers = {k.lower(): v for k, v in received["headers"].items()}
    assert headers["user-agent"].startswith("django-mailapi/")


def test_permanent_api_error_is_recorded_once_with_its_action(sandbox):
    mail.send_mail("s", "b", "a@example.com", ["invalid_from_address@fail.sandbox.test"])
    row = OutboundEmail.objects.get()

    wait_for(lambda: settled(row.pk))

    row.refresh_from_db()
    assert row.status == Status.FAILED
    assert row.last_error_code == "invalid_from_address"
    (failure,) = FailedSend.objects.filter(email=row)
    assert failure.http_status == 422
    assert failure.will_retry is False
    assert "from" in failure.suggested_action
    assert sandbox.emails == []


def test_transient_errors_are_retried_under_the_same_key_until_sent(sandbox):
    mail.send_mail("s", "b", "a@example.com", ["flaky+2@example.com"])
    row = OutboundEmail.objects.get()

    wait_for(lambda: settled(row.pk))

    row.refresh_from_db()
    assert row.status == Status.SENT
    assert row.attempts == 3
    assert [f.http_status for f in row.failures.order_by("attempt")] == [500, 500]
    assert all(f.will_retry for f in row.failures.all())
    (received,) = sandbox.emails
    assert received["idempotency_key"] == row.idempotency_key


def test_a_batch_of_messages_all_arrive_exactly_once(sandbox):
    messages = [(f"S{i}", "b", "a@example.com", [f"user{i}@example.com"]) for i in range(25)]
    assert mail.send_mass_mail(messages) == 25
    ids = list(OutboundEmail.objects.values_list("pk", flat=True))

    wait_for(lambda: settled(*ids))

    assert OutboundEmail.objects.filter(status=Status.SENT).count() == 25
    subjects = [e["payload"]["subject"] for e in sandbox.emails]
    assert sorted(subjects) == sorted(OutboundEmail.objects.values_list("subject", flat=True))
    assert {e["idempotency_key"] for e in sandbox.emails} == set(
        OutboundEmail.objects.values_list("batch_key", flat=True)
    )


def test_sendtest_reports_the_api_id(sandbox):
    from django.core.management import call_command

    out = io.StringIO()
    call_command("mailapi_sendtest", "--to", "ann@example.org", "--org", "acme", stdout=out)

    row = OutboundEmail.objects.get()
    assert out.getvalue() == (
        f"Queued email #{row.pk} for ann@example.org (org acme).\n"
        f"Sent: the API accepted it as {row.provider_message_id} after 1 attempt(s).\n"
    )


def test_sendtest_reports_the_error_and_its_action(sandbox):
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError) as info:
        call_command(
            "mailapi_sendtest", "--to", "invalid_api_key@fail.sandbox.test", stdout=io.StringIO()
        )
    row = OutboundEmail.objects.get()
    assert str(info.value).startswith(f"Email #{row.pk} is failed: invalid_api_key (403): ")
    assert "Suggested action: " in str(info.value)


def test_sendtest_says_when_no_worker_picks_it_up(sandbox, settings):
    from django.core.management import CommandError, call_command

    settings.MAILAPI = {**settings.MAILAPI, "QUEUE": "nobody-listens-here"}
    with pytest.raises(CommandError, match=r"still queued after 0\.5s: is a Celery worker"):
        call_command(
            "mailapi_sendtest", "--to", "a@example.org", "--timeout", "0.5", stdout=io.StringIO()
        )
