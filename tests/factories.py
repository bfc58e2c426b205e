"""Outbox rows as a worker would have left them, for admin and command tests."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

from django.utils import timezone

from django_mailapi import errors
from django_mailapi.models import FailedSend, OutboundEmail, Status

_keys = itertools.count(1)


def payload(to: str = "ann@example.org", subject: str = "Invoice", **extra: Any) -> dict[str, Any]:
    return {
        "from": "Shop <shop@example.com>",
        "to": [to],
        "cc": [],
        "bcc": [],
        "reply_to": [],
        "subject": subject,
        "text": "Hello",
        "html": None,
        "headers": {},
        "attachments": [],
        **extra,
    }


def make_email(
    *,
    to: str = "ann@example.org",
    subject: str = "Invoice",
    org: str = "acme",
    status: str = Status.FAILED,
    provider: str = "resend",
    created_at: dt.datetime | None = None,
    **fields: Any,
) -> OutboundEmail:
    created_at = created_at or timezone.now()
    values: dict[str, Any] = {
        "org": org,
        "provider": provider,
        "status": status,
        "idempotency_key": f"test/{org}/{next(_keys)}",
        "payload": payload(to, subject),
        "from_email": "Shop <shop@example.com>",
        "recipients": to,
        "recipient_count": 1,
        "subject": subject,
        "attempts": 1,
        "created_at": created_at,
        "updated_at": created_at,
    }
    values.update(fields)
    return OutboundEmail.objects.create(**values)


def fail(
    email: OutboundEmail,
    code: str,
    http_status: int | None,
    *,
    created_at: dt.datetime | None = None,
    attempt: int = 1,
    will_retry: bool = False,
    request_id: str = "",
    pk: int | None = None,
) -> FailedSend:
    """Record a failed attempt the way the outbox does, with the catalog's message."""
    source = email.provider if http_status is not None else "mailapi"
    spec = errors.resolve(source, code, http_status)
    email.last_error_code = code
    email.last_error_status = http_status
    email.save(update_fields=["last_error_code", "last_error_status"])
    return FailedSend.objects.create(
        pk=pk,
        email=email,
        org=email.org,
        provider=email.provider,
        source=source,
        error_code=code,
        http_status=http_status,
        message=spec.message,
        request_id=request_id,
        attempt=attempt,
        will_retry=will_retry,
        created_at=created_at or email.created_at,
    )


def failed_email(code: str, http_status: int | None, **kwargs: Any) -> OutboundEmail:
    """A failed email with one FailedSend for ``code``."""
    email = make_email(**kwargs)
    fail(email, code, http_status, created_at=kwargs.get("created_at"))
    return email
