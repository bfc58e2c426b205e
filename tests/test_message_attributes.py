"""What a message can carry beyond Django's fields: tags, metadata, send_at, its outbox
id, and the staging override of its recipients (SPEC §12)."""

from __future__ import annotations

import datetime as dt
import io

import pytest
import time_machine
from django.core.mail import EmailMessage
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from django_mailapi import outbox, quota
from django_mailapi.backend import EmailBackend
from django_mailapi.checks import check_settings
from django_mailapi.exceptions import InvalidMessage
from django_mailapi.models import FailedSend, OutboundEmail, Status
from django_mailapi.sandbox import SandboxServer
from tests.helpers import assert_resend_valid, assert_sendr_valid

pytestmark = pytest.mark.django_db


def message(to: str = "a@example.com", **attributes) -> EmailMessage:
    msg = EmailMessage("Hi", "Body", "shop@example.com", [to])
    for name, value in attributes.items():
        setattr(msg, name, value)
    return msg


def only_row() -> OutboundEmail:
    return OutboundEmail.objects.get()


# --- tags and metadata -------------------------------------------------------------------
def test_tags_and_metadata_are_stored_and_sent_as_resend_tags(sandbox):
    msg = message(tags=["welcome", "onboarding"], metadata={"order_id": "A-1042"})
    EmailBackend().send_messages([msg])
    row = only_row()
    assert (row.tags, row.metadata) == (["welcome", "onboarding"], {"order_id": "A-1042"})

    assert outbox.process([row.pk]) == {"sent": 1}

    (received,) = sandbox.emails
    assert_resend_valid(received["payload"])
    assert received["payload"]["tags"] == [
        {"name": "order_id", "value": "A-1042"},
        {"name": "welcome", "value": "true"},
        {"name": "onboarding", "value": "true"},
    ]


def test_tags_travel_in_a_sendr_batch_too(settings):
    server = SandboxServer(port=0, provider="sendr").start()
    try:
        settings.MAILAPI = {**settings.MAILAPI, "PROVIDER": "sendr", "BASE_URL": server.url}
        EmailBackend().send_messages(
            [message(f"u{i}@example.com", tags=["receipt"]) for i in range(3)]
        )
        assert outbox.process(list(OutboundEmail.objects.values_list("pk", flat=True))) == {
            "sent": 3
        }
        assert server.stats["requests"] == 1
        for received in server.emails:
            assert received["payload"]["tags"] == [{"name": "receipt", "value": "true"}]
            body = {"from": "shop@example.com", **received["payload"]}
            assert_sendr_valid(body)
    finally:
        server.stop()


def test_a_provider_without_tags_refuses_them_at_send_mail(settings):
    settings.MAILAPI = {**settings.MAILAPI, "PROVIDER": "emitlo", "BASE_URL": "http://127.0.0.1:9"}
    with pytest.raises(InvalidMessage, match="emitlo provider cannot carry tags") as caught:
        EmailBackend().send_messages([message(metadata={"user": "7"})])
    assert caught.value.code == "unsupported_feature"


@pytest.mark.parametrize(
    "attributes, code",
    [
        ({"tags": "welcome"}, "invalid_tags"),
        ({"tags": [7]}, "invalid_tags"),
        ({"tags": ["has space"]}, "invalid_tags"),
        ({"tags": ["x" * 257]}, "invalid_tags"),
        ({"metadata": ["order", "7"]}, "invalid_metadata"),
        ({"metadata": {"order": 7}}, "invalid_metadata"),
        ({"metadata": {"bad key": "7"}}, "invalid_metadata"),
        ({"tags": ["order"], "metadata": {"order": "7"}}, "invalid_tags"),
        ({"send_at": dt.datetime(2030, 1, 1)}, "invalid_send_at"),  # naive
        ({"send_at": "tomorrow"}, "invalid_send_at"),
        ({"send_at": timezone.now() + dt.timedelta(days=400)}, "invalid_send_at"),
    ],
)
def test_bad_attributes_are_refused_with_a_code_or_stored_as_failed(attributes, code):
    with pytest.raises(InvalidMessage) as caught:
        EmailBackend().send_messages([message(**attributes)])
    assert caught.value.code == code
    assert not OutboundEmail.objects.exists()

    msg = message(**attributes)
    assert EmailBackend(fail_silently=True).send_messages([msg]) == 0
    row = only_row()
    assert (row.status, row.last_error_code) == (Status.FAILED, code)
    assert FailedSend.objects.get().suggested_action
    assert msg.mailapi_id is None


# --- the outbox id ---------------------------------------------------------------------
def test_each_message_learns_its_outbox_id(settings):
    first, refused, last = message("a@x.io"), message("not an address"), message("c@x.io")
    assert EmailBackend(fail_silently=True).send_messages([first, refused, last]) == 2
    rows = {row.recipients: row for row in OutboundEmail.objects.all()}
    assert first.mailapi_id == rows["a@x.io"].pk
    assert last.mailapi_id == rows["c@x.io"].pk
    assert refused.mailapi_id is None


# --- scheduled sends --------------------------------------------------------------------
def test_a_scheduled_email_waits_for_its_time_and_books_quota_on_that_day(sandbox):
    start = dt.datetime(2026, 12, 1, 22, 0, tzinfo=dt.timezone.utc)
    send_at = start + dt.timedelta(hours=3)  # the next UTC day
    with time_machine.travel(start, tick=False):
        EmailBackend().send_messages([message(send_at=send_at)])
        row = only_row()
        assert (row.send_at, row.next_attempt_at) == (send_at, send_at)
        assert outbox.process([row.pk]) == {}
    with time_machine.travel(send_at - dt.timedelta(seconds=1), tick=False):
        assert outbox.sweep() == 0
        assert outbox.process([row.pk]) == {}
    with time_machine.travel(send_at, tick=False):
        assert outbox.process([row.pk]) == {"sent": 1}
    assert len(sandbox.emails) == 1
    assert quota.usage("acme" if row.org == "acme" else row.org, send_at)["day"] == 1
    assert quota.usage(row.org, start)["day"] == 0


def test_a_send_at_in_the_past_sends_now(sandbox):
    EmailBackend().send_messages([message(send_at=timezone.now() - dt.timedelta(days=3))])
    row = only_row()
    assert row.next_attempt_at <= timezone.now()
    assert outbox.process([row.pk]) == {"sent": 1}


def test_a_scheduled_email_cancelled_before_its_time_never_reaches_the_api(sandbox):
    send_at = timezone.now() + dt.timedelta(hours=1)
    EmailBackend().send_messages([message(send_at=send_at)])
    row = only_row()
    assert outbox.cancel(OutboundEmail.objects.filter(pk=row.pk)) == 1
    with time_machine.travel(send_at + dt.timedelta(minutes=5), tick=False):
        assert outbox.sweep() == 0
        assert outbox.process([row.pk]) == {}
    assert sandbox.emails == []


# --- staging override -------------------------------------------------------------------
def test_override_recipients_sends_to_them_alone_and_keeps_the_originals(sandbox, settings):
    settings.MAILAPI = {**settings.MAILAPI, "OVERRIDE_RECIPIENTS": ["qa@example.com"]}
    msg = EmailMessage(
        "Hi", "Body", "shop@example.com", ["ann@example.org"], cc=["bo@x.io"], bcc=["cy@x.io"]
    )
    EmailBackend().send_messages([msg])
    row = only_row()
    assert row.original_recipients == "ann@example.org, bo@x.io, cy@x.io"
    assert (row.recipients, row.recipient_count) == ("qa@example.com", 1)

    assert outbox.process([row.pk]) == {"sent": 1}
    (received,) = sandbox.emails
    assert received["payload"]["to"] == ["qa@example.com"]
    assert "cc" not in received["payload"] and "bcc" not in received["payload"]

    (info,) = [m for m in check_settings() if m.id == "mailapi.I001"]
    assert "qa@example.com" in info.msg


# --- through a real worker ---------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
@pytest.mark.services
def test_through_a_worker_a_send_at_two_seconds_ahead_arrives_after_it_and_a_cancelled_one_never(
    sandbox, celery_worker, server_db, settings
):
    settings.EMAIL_BACKEND = "django_mailapi.backend.EmailBackend"
    send_at = timezone.now() + dt.timedelta(seconds=2)
    kept = message("kept@example.com", send_at=send_at, tags=["reminder"])
    dropped = message("dropped@example.com", send_at=send_at)
    EmailBackend().send_messages([kept, dropped])
    assert outbox.cancel(OutboundEmail.objects.filter(pk=dropped.mailapi_id)) == 1

    assert sandbox.wait_for(1, timeout=20)[0]
    arrived = timezone.now()
    # Had the cancelled email gone out, it would arrive as soon as the kept one did.
    assert not sandbox.wait_for(2, timeout=3)[0]

    (received,) = sandbox.emails
    assert received["payload"]["to"] == ["kept@example.com"]
    assert arrived >= send_at
    stored = dt.datetime.fromisoformat(received["received_at"])
    assert stored >= send_at
    assert OutboundEmail.objects.get(pk=dropped.mailapi_id).status == Status.CANCELLED


# --- mailapi_cancel ------------------------------------------------------------------------
def cancel_command(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("mailapi_cancel", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_mailapi_cancel_stops_scheduled_emails_and_says_what_it_left(sandbox):
    later = timezone.now() + dt.timedelta(days=1)
    EmailBackend().send_messages(
        [message("a@x.io", send_at=later), message("b@x.io"), message("c@x.io", send_at=later)]
    )
    a, b, c = OutboundEmail.objects.order_by("pk")
    OutboundEmail.objects.filter(pk=c.pk).update(status=Status.SENT)

    assert cancel_command("--org", a.org, "--scheduled", "--dry-run")[0].startswith(
        "Would cancel 1 email (dry run, nothing changed).\n"
    )
    out, err = cancel_command(str(a.pk), str(c.pk), "999999")

    assert out == "Cancelled 1 email.\n"
    assert err == (f"Skipped email #{c.pk}: it is sent.\nSkipped email #999999: no such email.\n")
    statuses = dict(OutboundEmail.objects.values_list("pk", "status"))
    assert statuses == {a.pk: Status.CANCELLED, b.pk: Status.QUEUED, c.pk: Status.SENT}


def test_mailapi_cancel_needs_a_selection():
    with pytest.raises(CommandError, match="Say which emails to cancel"):
        call_command("mailapi_cancel")


# --- the admin -----------------------------------------------------------------------------
def test_the_admin_shows_scheduled_emails_tags_and_the_override_banner(admin_client, settings):
    later = timezone.now() + dt.timedelta(days=2)
    EmailBackend().send_messages(
        [message("a@x.io", send_at=later, tags=["reminder"]), message("b@x.io", tags=["receipt"])]
    )
    scheduled, plain = OutboundEmail.objects.order_by("pk")
    page = admin_client.get("/admin/django_mailapi/outboundemail/").content.decode()
    assert "scheduled for" in page and "OVERRIDE_RECIPIENTS" not in page

    tagged = admin_client.get("/admin/django_mailapi/outboundemail/?tag=receipt").content.decode()

    def link(row: OutboundEmail) -> str:
        return f"/admin/django_mailapi/outboundemail/{row.pk}/change/"

    assert link(plain) in tagged and link(scheduled) not in tagged
    ahead = admin_client.get("/admin/django_mailapi/outboundemail/?scheduled=ahead")
    assert link(scheduled) in ahead.content.decode() and link(plain) not in ahead.content.decode()

    settings.MAILAPI = {**settings.MAILAPI, "OVERRIDE_RECIPIENTS": ["qa@example.com"]}
    for url in (
        "/admin/django_mailapi/",
        "/admin/django_mailapi/outboundemail/",
        f"/admin/django_mailapi/outboundemail/{plain.pk}/change/",
    ):
        body = admin_client.get(url).content.decode()
        assert "OVERRIDE_RECIPIENTS is set: every email goes to qa@example.com" in body, url


@pytest.mark.django_db(transaction=True)
@pytest.mark.services
def test_through_a_worker_tags_metadata_and_the_staging_override_reach_the_api(
    sandbox, celery_worker, server_db, settings
):
    settings.EMAIL_BACKEND = "django_mailapi.backend.EmailBackend"
    settings.MAILAPI = {**settings.MAILAPI, "OVERRIDE_RECIPIENTS": ["qa@example.com"]}
    msg = message("customer@example.org", tags=["invoice"], metadata={"invoice_id": "F-77"})
    msg.cc = ["accounts@example.org"]
    msg.send()

    assert sandbox.wait_for(1, timeout=20)[0]
    (received,) = sandbox.emails
    assert_resend_valid(received["payload"])
    assert received["payload"]["to"] == ["qa@example.com"]
    assert "cc" not in received["payload"]
    assert received["payload"]["tags"] == [
        {"name": "invoice_id", "value": "F-77"},
        {"name": "invoice", "value": "true"},
    ]
