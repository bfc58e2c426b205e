"""Emitlo (emitlo-docs.pages.dev). Wire facts in the README.

``POST {base}/messages`` sends one email to ONE recipient, with a body of its own
shape: ``from_email``/``from_name``, ``to_email``/``to_name``, ``subject``, ``body``
(HTML), ``reply_to`` (one address) and ``attachments[{filename, content,
content_type}]``. It answers ``202 {"status": "success", "data": {"message_id": ...}}``
and errors as ``{"status": "error", "error": {"code", "message", "details"}}`` with
upper-case codes.

Choices this module makes, because Emitlo cannot carry everything Django can:

* **Recipients fan out.** ``one_recipient_per_message`` makes the backend store one
  outbox row per distinct address of to, cc and bcc, each addressed to that recipient
  alone. Bcc loses nothing by this; cc recipients get their copy but the Cc list is
  not shown to anyone (Emitlo has no cc field).
* **Plain-text bodies become HTML**, escaped, with paragraphs and line breaks kept.
  When a message has both, the HTML is sent and the text alternative is not (Emitlo
  takes one body).
* **Refused** with ``UnsupportedFeature``: custom headers (no field for them), several
  reply-to addresses, and inline images (an attachment with a Content-ID): Emitlo has
  no ``content_id``, so the image would arrive as a loose file and the HTML's
  ``cid:`` reference would show as a broken image.
* **No idempotency.** Emitlo documents no idempotency header. ``Idempotency-Key`` is
  sent anyway (harmless, and useful if Emitlo adds one), but if a request times out
  after Emitlo accepted it, the retry can deliver the email twice.
* Sizes are checked before sending: 10 MB per attachment (``attachment_too_large``;
  the limit depends on the plan, 10 MB is the documented example) and 25 MB for body
  and attachments together (``message_too_large``).
"""

from __future__ import annotations

import email.utils
import html
import re
from collections.abc import Sequence
from typing import Any

from ..exceptions import (
    SendError,
    UnsupportedFeature,
    WebhookPayloadError,
    WebhookSignatureError,
)
from ..message import Message
from . import signatures
from .base import (
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
    text,
)

MB = 1024 * 1024
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n+")


class EmitloProvider(Provider):
    name = "emitlo"
    default_base_url = "https://api.emitlo.com/api/v1"
    one_recipient_per_message = True
    max_recipients = 1
    max_attachment_bytes = 10 * MB
    max_message_bytes = 25 * MB

    def validate(self, message: Message) -> None:
        count = len(message["to"]) + len(message["cc"]) + len(message["bcc"])
        if count > 1:
            raise self.local_error(
                "too_many_recipients",
                f"{count} recipients; Emitlo sends to one recipient per message (the outbox "
                "normally stores one email per recipient for it).",
            )
        super().validate(message)  # tags and metadata, which Emitlo has no field for
        size = len(message_body(message).encode("utf-8"))
        for attachment in message["attachments"]:
            if attachment["size"] > self.max_attachment_bytes:
                raise self.local_error(
                    "attachment_too_large",
                    f"The attachment {attachment.get('filename') or '(unnamed)'!r} is "
                    f"{attachment['size'] / MB:.1f} MB; Emitlo accepts at most 10 MB per "
                    "attachment.",
                )
            size += attachment["size"]
        if size > self.max_message_bytes:
            raise self.local_error(
                "message_too_large",
                f"Body and attachments come to {size / MB:.1f} MB; Emitlo accepts at most "
                "25 MB per message.",
            )

    def wire_body(self, message: Message) -> dict[str, Any]:
        """The ``POST /messages`` body for a message with one recipient."""
        if message["headers"]:
            names = ", ".join(sorted(message["headers"]))
            raise UnsupportedFeature(f"custom headers ({names})", self.name)
        if len(message["reply_to"]) > 1:
            raise UnsupportedFeature(
                f"several reply-to addresses ({len(message['reply_to'])}; Emitlo takes one)",
                self.name,
            )
        for attachment in message["attachments"]:
            if attachment.get("content_id"):
                raise UnsupportedFeature(
                    f"inline images (Content-ID {attachment['content_id']!r})", self.name
                )
        from_name, from_email = email.utils.parseaddr(message["from"])
        recipients: list[str] = [*message["to"], *message["cc"], *message["bcc"]]
        recipient = recipients[0]
        to_name, to_email = email.utils.parseaddr(recipient)
        body: dict[str, Any] = {
            "from_email": from_email,
            "to_email": to_email,
            "subject": message["subject"],
            "body": message_body(message),
        }
        if from_name:
            body["from_name"] = from_name
        if to_name:
            body["to_name"] = to_name
        if message["reply_to"]:
            body["reply_to"] = email.utils.parseaddr(message["reply_to"][0])[1]
        if message["attachments"]:
            body["attachments"] = [
                {
                    "filename": attachment_filename(a, i),
                    "content": a["content"],
                    "content_type": a["content_type"] or "application/octet-stream",
                }
                for i, a in enumerate(message["attachments"])
            ]
        return body

    def build_request(self, message: Message, idempotency_key: str) -> ApiRequest:
        return ApiRequest(
            "POST", "/messages", self.wire_body(message), {"Idempotency-Key": idempotency_key}
        )

    def parse_success(self, response: ApiResponse) -> str:
        body = response.json()
        if body.get("status") != "success":
            raise ValueError(f"status is {body.get('status')!r}, not 'success'")
        message_id = body["data"]["message_id"]
        if not isinstance(message_id, str) or not message_id:
            raise ValueError("no message_id in the answer")
        return message_id

    def parse_error(self, response: ApiResponse) -> SendError:
        # Emitlo nests the error under "error"; its page also shows the bare inner
        # object, so a flat {"code", "message"} is read too.
        found = error_object(response.json())
        if found is None:
            return self.fallback_error(response)
        return self.envelope_error(response, found)

    # --- delivery events ---------------------------------------------------------------
    # ``X-Emitlo-Signature: sha256=<hex HMAC-SHA256(raw body, secret)>``, the event in
    # ``X-Emitlo-Event`` and a delivery id (the event's id) in ``X-Emitlo-Delivery-Id``.
    # No header carries a signed time, so the body's own ``timestamp`` (inside the signed
    # bytes) is held to WEBHOOK_TOLERANCE_SECONDS once the signature is good.
    @classmethod
    def verify_webhook(
        cls, request: WebhookRequest, secrets: Sequence[str], tolerance: float
    ) -> None:
        signatures.verify_hex_hmac(request, "x-emitlo-signature", secrets)
        moment = parse_time(json_object(request).get("timestamp"))
        if moment is None:
            raise WebhookPayloadError("The event has no readable `timestamp`.")
        age = request.received_at - moment.timestamp()
        if abs(age) > tolerance:
            when = "old" if age > 0 else "in the future"
            raise WebhookSignatureError(f"The signed timestamp is {abs(age):.0f} s {when}.")

    @classmethod
    def parse_webhook(cls, request: WebhookRequest) -> list[DeliveryReport]:
        body = json_object(request)
        raw_type = body.get("event_type") or request.header("x-emitlo-event")
        data = body.get("data")
        if not isinstance(raw_type, str) or not raw_type or not isinstance(data, dict):
            raise WebhookPayloadError("Not an Emitlo event: no `event_type` and `data` object.")
        kind, bounce_type = _EVENT_TYPES.get(raw_type, ("unknown", ""))
        details: dict[str, Any] = {"raw_type": raw_type}
        if bounce_type:
            details["bounce_type"] = bounce_type
        if raw_type in ("hard_bounced", "complained"):
            # Emitlo puts these addresses on its own suppression list.
            details["provider_suppressed"] = True
        for key in ("dsn_status", "reason", "diagnostic", "bounce_reason", "url", "link"):
            if data.get(key):
                details[key] = text(data[key])
        reason = data.get("reason") or data.get("bounce_reason") or data.get("diagnostic")
        if reason or data.get("dsn_status"):
            details["reason"] = text(reason or f"DSN {data['dsn_status']}")
        if "url" in details and "link" not in details:
            details["link"] = details["url"]
        if data.get("subject"):
            details["subject"] = text(data["subject"])
        message_id = data.get("message_id")
        return [
            DeliveryReport(
                event_id=request.header("x-emitlo-delivery-id") or body_digest(request.body),
                type=kind,
                message_id=message_id if isinstance(message_id, str) else "",
                recipients=addresses(data.get("to_email")),
                occurred_at=parse_time(body.get("timestamp")),
                details=details,
            )
        ]


#: Emitlo's event types (its webhook events reference) -> (our type, bounce type).
_EVENT_TYPES: dict[str, tuple[str, str]] = {
    "delivered": ("delivered", ""),
    "deferred": ("delivery_delayed", ""),
    "soft_bounced": ("bounced", "soft"),
    "hard_bounced": ("bounced", "hard"),
    # Listed among the types a webhook subscribes to, without saying which kind.
    "bounced": ("bounced", "undetermined"),
    "complained": ("complained", ""),
    "opened": ("opened", ""),
    "clicked": ("clicked", ""),
    "unsubscribed": ("unsubscribed", ""),
}


def message_body(message: Message) -> str:
    """The HTML Emitlo gets: the message's HTML, else its text made into safe HTML."""
    if message.get("html") is not None:
        return str(message["html"])
    return text_to_html(message.get("text") or "")


def text_to_html(text: str) -> str:
    """Plain text as HTML that reads the same: escaped, paragraphs and line breaks kept.

    Blank lines separate ``<p>`` paragraphs; single line breaks become ``<br>``; runs
    of spaces and tabs keep their width, so indented or column-aligned text survives.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n").strip("\n")
    if not text:
        return "<p></p>"
    paragraphs = []
    for paragraph in _PARAGRAPH_BREAK.split(text):
        lines = [_keep_spaces(html.escape(line, quote=False)) for line in paragraph.split("\n")]
        paragraphs.append("<p>" + "<br>\n".join(lines) + "</p>")
    return "\n".join(paragraphs)


def _keep_spaces(line: str) -> str:
    line = line.replace("\t", "    ")
    # Every second space of a run, and a leading one, becomes &nbsp; so HTML keeps it.
    line = re.sub(r"  ", " &nbsp;", line)
    if line.startswith(" "):
        line = "&nbsp;" + line[1:]
    return line
