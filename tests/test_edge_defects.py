"""Regression tests for defects found at the edges, each named for the behaviour."""

from __future__ import annotations

import pytest
from django.core.mail import EmailMessage

from django_mailapi import outbox
from django_mailapi.backend import EmailBackend
from django_mailapi.models import FailedSend, OutboundEmail, Status
from django_mailapi.outbox import batching
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
