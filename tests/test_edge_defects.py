"""Regression tests for defects found at the edges, each named for the behaviour."""

from __future__ import annotations

import pytest
from django.core.mail import EmailMessage

from django_mailapi import outbox
from django_mailapi.backend import EmailBackend
from django_mailapi.models import FailedSend, OutboundEmail, Status

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
