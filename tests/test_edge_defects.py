"""Regression tests for defects found at the edges, each named for the behaviour."""

from __future__ import annotations

import base64
import datetime as dt
import time
from email.message import Message as StdlibMessage

import pytest
from django.core.mail import EmailMessage
from django.utils import timezone

from django_mailapi import outbox
from django_mailapi.backend import EmailBackend, serialize_message, task_chunks
from django_mailapi.conf import get_settings
from django_mailapi.dispatch import chunks as dispatch_chunks
from django_mailapi.exceptions import InvalidMessage, SendError
from django_mailapi.models import FailedSend, OutboundEmail, Status
from django_mailapi.outbox import batching
from django_mailapi.providers.base import MAX_RETRY_AFTER, retry_after
from django_mailapi.providers.resend import ResendProvider
from django_mailapi.sandbox import SandboxServer

pytestmark = pytest.mark.django_db


def queue(*messages: EmailMessage) -> list[OutboundEmail]:
    EmailBackend().send_messages(list(messages))
    return list(OutboundEmail.objects.order_by("pk"))


def message(to: str = "a@example.com", **kwargs) -> EmailMessage:
    return EmailMessage("Hi", "Body", "shop@example.com", [to], **kwargs)


def test_a_row_queued_for_another_provider_is_refused_and_no_key_leaves(sandbox, settings):
    """PROVIDER changed while rows waited: sending them to the old provider's API with
    the new provider's key (or the reverse) would hand a key to the wrong company."""
    (row,) = queue(message())
    settings.MAILAPI = {**settings.MAILAPI, "PROVIDER": "sendr"}

    assert outbox.process([row.pk]) == {"failed": 1}

    row.refresh_from_db()
    assert (row.status, row.last_error_code) == (Status.FAILED, "provider_mismatch")
    failure = FailedSend.objects.get()
    assert "queued for the 'resend' provider" in failure.message
    assert "MAILAPI['PROVIDER'] is now 'sendr'" in failure.message
    assert failure.suggested_action.startswith("The email was not sent")
    assert sandbox.stats["requests"] == 0


@pytest.fixture
def sendr(settings):
    server = SandboxServer(port=0, provider="sendr").start()
    settings.MAILAPI = {**settings.MAILAPI, "PROVIDER": "sendr", "BASE_URL": server.url}
    yield server
    server.stop()


def test_one_email_a_sendr_batch_cannot_carry_fails_alone(sendr):
    """Two reply-to addresses used to fail all five emails of the batch."""
    odd = message("c@example.com", reply_to=["r1@example.com", "r2@example.com"])
    rows = queue(*(message(f"u{i}@example.com") for i in range(2)), odd, message("d@x.io"))

    assert outbox.process([row.pk for row in rows]) == {"failed": 1, "sent": 3}

    by_to = {row.recipients: row for row in OutboundEmail.objects.all()}
    failed = by_to["c@example.com"]
    assert (failed.status, failed.last_error_code) == (Status.FAILED, "unsupported_feature")
    assert (failed.batch_key, failed.quota_units) == ("", 0)
    sent = [row for row in by_to.values() if row.status == Status.SENT]
    assert len(sent) == 3
    (key,) = {row.batch_key for row in sent}
    # A key of its own: the batch first planned had four members.
    assert key == batching.new_key(sorted(sent, key=lambda row: row.pk))
    assert sendr.stats["requests"] == 1
    assert sorted(e["id"] for e in sendr.emails) == sorted(r.provider_message_id for r in sent)


# --- recipients only in cc or bcc -------------------------------------------------------
def test_a_bcc_only_email_is_refused_at_send_mail_where_the_api_needs_a_to(sandbox):
    """It used to be queued, then fail at Resend with missing_required_field."""
    bcc_only = EmailMessage("Hi", "Body", "shop@example.com", bcc=["b@example.com"])
    with pytest.raises(InvalidMessage, match="needs at least one address in to") as caught:
        EmailBackend().send_messages([bcc_only])
    assert caught.value.code == "missing_to_recipient"
    assert not OutboundEmail.objects.exists()

    cc_only = EmailMessage("Hi", "Body", "shop@example.com", cc=["c@example.com"])
    assert EmailBackend(fail_silently=True).send_messages([cc_only]) == 0
    row = OutboundEmail.objects.get()
    assert (row.status, row.last_error_code) == (Status.FAILED, "missing_to_recipient")
    assert FailedSend.objects.get().suggested_action.startswith("Put at least one address")


def test_a_bcc_only_email_goes_to_each_address_on_emitlo(settings):
    server = SandboxServer(port=0, provider="emitlo").start()
    try:
        settings.MAILAPI = {**settings.MAILAPI, "PROVIDER": "emitlo", "BASE_URL": server.url}
        msg = EmailMessage("Hi", "Body", "shop@example.com", bcc=["b@example.com", "c@x.io"])
        rows = queue(msg)
        assert outbox.process([row.pk for row in rows]) == {"sent": 2}
        assert sorted(e["payload"]["to_email"] for e in server.emails) == [
            "b@example.com",
            "c@x.io",
        ]
    finally:
        server.stop()


# --- hostile or unusual input ------------------------------------------------------------
def test_a_reply_to_header_keeps_a_comma_inside_a_quoted_name():
    msg = message(headers={"Reply-To": '"Doe, John" <j@example.com>, help@example.com'})
    (row,) = queue(msg)
    assert row.payload["reply_to"] == ['"Doe, John" <j@example.com>', "help@example.com"]


def test_an_rfc822_attachment_given_as_a_stdlib_message_is_carried():
    forwarded = StdlibMessage()
    forwarded["Subject"] = "Original"
    forwarded.set_payload("Forwarded body")
    msg = message()
    msg.attach("original.eml", forwarded, "message/rfc822")
    (row,) = queue(msg)
    (attachment,) = row.payload["attachments"]
    assert attachment["content_type"] == "message/rfc822"
    assert base64.b64decode(attachment["content"]) == forwarded.as_bytes()


def test_an_address_nested_500_comments_deep_is_an_invalid_recipient():
    """parseaddr used to raise RecursionError through fail_silently=True."""
    nested = "(" * 500 + "x@example.com"
    with pytest.raises(InvalidMessage) as caught:
        EmailBackend().send_messages([message(nested)])
    assert caught.value.code == "invalid_recipient"
    assert EmailBackend(fail_silently=True).send_messages([message(nested)]) == 0
    assert OutboundEmail.objects.get().last_error_code == "invalid_recipient"


def test_any_exception_while_reading_a_message_is_an_invalid_message():
    msg = message()
    msg.attachments.append(("two-tuple", b"x"))  # not (filename, content, mimetype)
    with pytest.raises(InvalidMessage) as caught:
        EmailBackend().send_messages([msg])
    assert caught.value.code == "invalid_content"
    assert "ValueError" in caught.value.message


# --- sizes ------------------------------------------------------------------------------
def test_an_email_resend_can_never_accept_is_refused_at_send_mail():
    msg = message()
    msg.attach("big.bin", b"\0" * (31 * 1024 * 1024), "application/octet-stream")  # 41 MB in base64
    with pytest.raises(InvalidMessage, match="at most 40 MB") as caught:
        EmailBackend().send_messages([msg])
    assert caught.value.code == "message_too_large"
    assert not OutboundEmail.objects.exists()


# --- waits the API asks for ---------------------------------------------------------------
@pytest.mark.parametrize(
    "headers, expected",
    [
        ({"retry-after": "7"}, 7.0),
        ({"x-ratelimit-reset": "{now_plus_30}"}, 30.0),  # an epoch: read as one
        ({"ratelimit-reset": "1e300"}, MAX_RETRY_AFTER),  # absurd: capped
        ({"retry-after": "inf"}, MAX_RETRY_AFTER),
        ({"retry-after": "nan"}, None),
        ({"retry-after": "soon, maybe"}, None),
        ({"retry-after": "-5"}, 0.0),
    ],
)
def test_retry_after_reads_epochs_as_epochs_and_caps_every_wait(headers, expected):
    now = time.time()
    headers = {k: v.replace("{now_plus_30}", str(int(now) + 30)) for k, v in headers.items()}
    found = retry_after(headers)
    assert found == pytest.approx(expected, abs=1.5) if expected is not None else found is None


def test_a_huge_retry_after_neither_parks_the_email_for_decades_nor_breaks_the_writer(
    sandbox,
):
    """An epoch-style reset used to park a row for decades; a huge value raised
    OverflowError inside the outcome writer."""
    (row,) = queue(message())
    claim = outbox.claim([row.pk])
    (claimed,) = claim.rows
    huge = SendError("slow down", code="rate_limit_exceeded", http_status=429, retry_after=1e300)

    claim.deliveries[0].fail([(claimed, huge)])

    row.refresh_from_db()
    assert row.status == Status.QUEUED
    wait = row.next_attempt_at - timezone.now()
    assert dt.timedelta(minutes=59) < wait <= dt.timedelta(seconds=MAX_RETRY_AFTER + 1)


def test_a_task_holds_at_most_task_bytes_of_payload_so_a_worker_memory_is_bounded(settings):
    """A task of 100 emails of 40 MB each was possible: 4 GB in one worker."""
    settings.MAILAPI = {**settings.MAILAPI, "BATCH_SIZE": 1}
    big = "x" * (20 * 1024 * 1024)
    parts = [("acme", serialize_message(message(), "resend")) for _ in range(5)]
    for _, part in parts[:3]:
        part["text"] = big  # 20 MB each: two fit in 50 MB, not three
    sizes = [len(chunk) for chunk in task_chunks(parts, ResendProvider, get_settings())]
    assert sizes == [2, 3]  # 40 MB, then 20 MB and the two small ones

    weights = [30 * 1024 * 1024, 30 * 1024 * 1024, 10, 10, 60 * 1024 * 1024, 10]
    assert dispatch_chunks([1, 2, 3, 4, 5, 6], 100, weights) == [[1], [2, 3, 4], [5], [6]]
    assert dispatch_chunks(list(range(250)), 100) == [
        list(range(100)),
        list(range(100, 200)),
        list(range(200, 250)),
    ]


def test_the_payload_size_is_stored_on_the_row(sandbox):
    msg = message()
    msg.attach("a.bin", b"\0" * 3000, "application/octet-stream")
    (row,) = queue(msg)
    assert row.payload_bytes == 4000 + len("Body")  # base64 of 3,000 bytes, and the text
