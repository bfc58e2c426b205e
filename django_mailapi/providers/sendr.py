"""Sendr (docs.sendr.dev; the "Sendry API" OpenAPI spec 2.5.0). Wire facts in the README.

One email is ``POST {base}/emails`` with a Resend-like body; a batch of up to 100 is
``POST {base}/emails/batch`` with ``{"emails": [...]}``. What differs from Resend, and
what this module therefore checks before any request:

* ``reply_to`` is a single string, so a message with several reply-to addresses is
  refused (``UnsupportedFeature``).
* ``headers`` accepts ``X-*`` names only; any other custom header is refused by name.
* ``to`` is typed ``format: email`` (bare addresses), so display names in ``to`` are
  dropped; ``from``, ``cc`` and ``bcc`` keep them.
* Every attachment needs a ``filename``; one without gets a made-up name.
* The HTML body may be 5 MB and the text body 1 MB (``maxLength`` in the spec, so
  counted in characters), about 40 MB in all; ``to`` takes at most 50 addresses.

Errors come in two envelopes, depending on which Sendr source you believe: the docs
page shows a flat ``{"statusCode", "code", "message", "details"}`` and the spec and SDK
a nested ``{"error": {"code", "message", "details"?, "retry_after"?}}``. Both are read.
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Sequence
from typing import Any

from ..exceptions import SendError, UnsupportedFeature, WebhookPayloadError
from ..message import Attachment, Message
from . import signatures
from .base import (
    EVENT_TYPES,
    ApiRequest,
    ApiResponse,
    DeliveryReport,
    Provider,
    WebhookRequest,
    addresses,
    attachment_filename,
    body_digest,
    error_object,
    json_object,
    parse_time,
    retry_after,
    text,
    wire_tags,
)

_X_HEADER = re.compile(r"^[Xx]-[A-Za-z0-9-]+$")
MB = 1024 * 1024


class SendrProvider(Provider):
    name = "sendr"
    default_base_url = "https://api.sendr.dev/v1"
    #: Documented for ``to`` only ("up to 50"); cc and bcc have no documented cap.
    max_to = 50
    max_html_chars = 5 * MB
    max_text_chars = 1 * MB
    #: "typically 40 MB (including attachments)" says the docs page; base64 counted.
    max_message_bytes = 40 * MB
    max_batch = 100
    carries_tags = True

    # --- checks ------------------------------------------------------------------------
    def validate(self, message: Message) -> None:
        super().validate(message)
        if len(message["to"]) > self.max_to:
            raise self.local_error(
                "too_many_recipients",
                f"{len(message['to'])} addresses in to; Sendr accepts at most "
                f"{self.max_to} per email.",
            )
        html = message.get("html") or ""
        text = message.get("text") or ""
        if len(html) > self.max_html_chars:
            raise self.local_error(
                "message_too_large",
                f"The HTML body is {len(html) / MB:.1f} MB; Sendr accepts at most 5 MB of HTML.",
            )
        if len(text) > self.max_text_chars:
            raise self.local_error(
                "message_too_large",
                f"The text body is {len(text) / MB:.1f} MB; Sendr accepts at most 1 MB of text.",
            )
        size = len(html) + len(text) + sum(len(a["content"]) for a in message["attachments"])
        if size > self.max_message_bytes:
            raise self.local_error(
                "message_too_large",
                f"The email is {size / MB:.1f} MB after base64; Sendr accepts about 40 MB "
                "in all, attachments included.",
            )

    # --- request -----------------------------------------------------------------------
    def wire_body(self, message: Message, *, in_batch: bool = False) -> dict[str, Any]:
        """The send-email request body (or one ``emails[]`` item of a batch)."""
        body: dict[str, Any] = {
            "from": message["from"],
            "to": [email.utils.parseaddr(a)[1] for a in message["to"]],
            "subject": message["subject"],
        }
        for key in ("cc", "bcc"):
            if message[key]:
                body[key] = message[key]
        if len(message["reply_to"]) > 1:
            raise UnsupportedFeature(
                f"several reply-to addresses ({len(message['reply_to'])}; Sendr takes one)",
                self.name,
            )
        if message["reply_to"]:
            body["reply_to"] = message["reply_to"][0]
        if message.get("html") is not None:
            body["html"] = message["html"]
        if message.get("text") is not None:
            body["text"] = message["text"]
        if message["headers"]:
            body["headers"] = self._headers(message["headers"], in_batch=in_batch)
        if message["attachments"]:
            body["attachments"] = [_attachment(a, i) for i, a in enumerate(message["attachments"])]
        if message.get("tags") or message.get("metadata"):
            body["tags"] = wire_tags(message)
        return body

    def _headers(self, headers: dict[str, str], *, in_batch: bool) -> dict[str, str]:
        if in_batch:
            # The batch item schema has no `headers` property at all.
            raise UnsupportedFeature("custom headers in a batch send", self.name)
        wire: dict[str, str] = {}
        for name, value in headers.items():
            if not _X_HEADER.match(name):
                raise UnsupportedFeature(
                    f"the custom header {name!r} (only X-* headers are accepted)", self.name
                )
            wire["X-" + name[2:]] = value
        return wire

    def build_request(self, message: Message, idempotency_key: str) -> ApiRequest:
        return ApiRequest(
            "POST", "/emails", self.wire_body(message), {"idempotency-key": idempotency_key}
        )

    # --- answers -----------------------------------------------------------------------
    def parse_success(self, response: ApiResponse) -> str:
        email_id = response.json()["id"]
        if not isinstance(email_id, str) or not email_id:
            raise ValueError("no email id in the answer")
        return email_id

    def parse_error(self, response: ApiResponse) -> SendError:
        body = response.json()
        found = error_object(body)
        if found is None:
            return self.fallback_error(response)
        wait = retry_after(response.headers)
        if wait is None and isinstance(found.get("retry_after"), (int, float)):
            wait = max(0.0, float(found["retry_after"]))
        return self.envelope_error(response, found, wait=wait)

    # --- batch (wired into the outbox separately) --------------------------------------
    def build_batch_request(self, messages: list[Message], idempotency_key: str) -> ApiRequest:
        """One ``POST /emails/batch`` for up to 100 messages.

        Each message is checked as a single send would be; anything a batch item cannot
        carry (custom headers) raises ``UnsupportedFeature``. ``batch_validation`` is
        ``permissive``, so valid items are sent and invalid ones come back in ``errors``.
        """
        if not 1 <= len(messages) <= self.max_batch:
            raise ValueError(
                f"A Sendr batch holds 1 to {self.max_batch} emails, not {len(messages)}."
            )
        for message in messages:
            self.validate(message)
        return ApiRequest(
            "POST",
            "/emails/batch",
            {
                "batch_validation": "permissive",
                "emails": [self.wire_body(m, in_batch=True) for m in messages],
            },
            {"idempotency-key": idempotency_key},
        )

    @classmethod
    def batchable(cls, message: Message) -> bool:
        # Sendr's batch items carry no attachments and no custom headers.
        return super().batchable(message) and not message["headers"]

    # --- delivery events ---------------------------------------------------------------
    # Signed with a hex HMAC-SHA256 of the body in ``x-sendry-signature`` (optionally
    # ``sha256=``), keyed with the secret as text; nothing about time is signed, so
    # there is no timestamp to check. The payload shape is not published: this reads
    # ``{type | event, created_at, data: {email_id | id, to, ...}}`` and keeps the rest.
    @classmethod
    def verify_webhook(
        cls, request: WebhookRequest, secrets: Sequence[str], tolerance: float
    ) -> None:
        signatures.verify_hex_hmac(request, "x-sendry-signature", secrets)

    @classmethod
    def parse_webhook(cls, request: WebhookRequest) -> list[DeliveryReport]:
        body = json_object(request)
        raw_type = body.get("type") or body.get("event")
        data = body.get("data")
        if not isinstance(raw_type, str) or not raw_type or not isinstance(data, dict):
            raise WebhookPayloadError(
                "Not a Sendr event: no `type` (or `event`) string and `data` object."
            )
        name = raw_type.removeprefix("email.")
        kind = name if raw_type.startswith("email.") and name in EVENT_TYPES else "unknown"
        details: dict[str, Any] = {"raw_type": raw_type}
        if kind == "bounced":
            bounce = data.get("bounce")
            found = bounce.get("type") if isinstance(bounce, dict) else data.get("bounce_type")
            details["bounce_type"] = _BOUNCE_TYPES.get(str(found).lower(), "undetermined")
            details["reason"] = text(
                (bounce.get("message") if isinstance(bounce, dict) else None) or data.get("reason")
            )
        elif data.get("reason"):
            details["reason"] = text(data.get("reason"))
        for key in ("subject", "link", "url", "tags"):
            if data.get(key):
                details[key] = data[key]
        event_id = body.get("id") or body.get("event_id")
        message_id = data.get("email_id") or data.get("id")
        return [
            DeliveryReport(
                event_id=event_id if isinstance(event_id, str) else body_digest(request.body),
                type=kind,
                message_id=message_id if isinstance(message_id, str) else "",
                recipients=addresses(data.get("to") or data.get("email")),
                occurred_at=parse_time(body.get("created_at") or data.get("created_at")),
                details=details,
            )
        ]


_BOUNCE_TYPES = {"hard": "hard", "permanent": "hard", "soft": "soft", "transient": "soft"}


def _attachment(attachment: Attachment, index: int) -> dict[str, Any]:
    wire: dict[str, Any] = {
        "filename": attachment_filename(attachment, index),
        "content": attachment["content"],
        "content_type": attachment["content_type"] or "application/octet-stream",
    }
    if attachment.get("content_id"):
        wire["content_id"] = attachment["content_id"]
    return wire
