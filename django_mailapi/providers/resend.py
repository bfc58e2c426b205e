"""Resend: https://resend.com/docs/api-reference (wire facts in the README)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from ..exceptions import SendError, WebhookPayloadError
from ..message import Attachment, Message
from . import signatures
from .base import (
    ApiRequest,
    ApiResponse,
    DeliveryReport,
    Provider,
    WebhookRequest,
    addresses,
    json_object,
    parse_time,
    retry_after,
    text,
    wire_tags,
)

#: Resend's event types (the OpenAPI spec's ``webhooks``), normalized.
EVENT_TYPES = {
    "email.sent": "sent",
    "email.delivered": "delivered",
    "email.delivery_delayed": "delivery_delayed",
    "email.bounced": "bounced",
    "email.complained": "complained",
    "email.failed": "failed",
    "email.suppressed": "suppressed",
    "email.opened": "opened",
    "email.clicked": "clicked",
    "email.scheduled": "scheduled",
}
#: ``bounce.type`` as Resend sends it (from Amazon SES) -> our bounce type.
BOUNCE_TYPES = {"Permanent": "hard", "Transient": "soft"}


class ResendProvider(Provider):
    name = "resend"
    # Annotated as in the base class, so subclasses (GenericProvider) may set None.
    default_base_url: ClassVar[str | None] = "https://api.resend.com"
    max_recipients: ClassVar[int | None] = 50  # the documented cap on `to`; applied to all 3
    max_message_bytes: ClassVar[int | None] = 40 * 1024 * 1024  # after base64, as Resend counts
    max_batch: ClassVar[int] = 100
    carries_tags: ClassVar[bool] = True

    def validate(self, message: Message) -> None:
        super().validate(message)
        size = sum(len(a["content"]) for a in message["attachments"])
        size += len(message.get("html") or "") + len(message.get("text") or "")
        if self.max_message_bytes is not None and size > self.max_message_bytes:
            raise self.local_error(
                "message_too_large",
                f"The email is {size / 1e6:.1f} MB after base64; Resend accepts at most 40 MB.",
            )

    def wire_body(self, message: Message) -> dict[str, Any]:
        """The SendEmailRequest body for one message."""
        body: dict[str, Any] = {
            "from": message["from"],
            "to": message["to"],
            "subject": message["subject"],
        }
        for key in ("cc", "bcc", "reply_to"):
            if message[key]:
                body[key] = message[key]
        if message.get("html") is not None:
            body["html"] = message["html"]
        if message.get("text") is not None:
            body["text"] = message["text"]
        if message["headers"]:
            body["headers"] = message["headers"]
        if message["attachments"]:
            body["attachments"] = [_attachment(a) for a in message["attachments"]]
        if message.get("tags") or message.get("metadata"):
            body["tags"] = wire_tags(message)
        return body

    def build_request(self, message: Message, idempotency_key: str) -> ApiRequest:
        return ApiRequest(
            "POST",
            "/emails",
            self.wire_body(message),
            {"Idempotency-Key": idempotency_key},
        )

    def build_batch_request(self, messages: list[Message], idempotency_key: str) -> ApiRequest:
        # Permissive: valid emails go out and each invalid one comes back in `errors`.
        return ApiRequest(
            "POST",
            "/emails/batch",
            [self.wire_body(message) for message in messages],
            {"Idempotency-Key": idempotency_key, "x-batch-validation": "permissive"},
        )

    def parse_success(self, response: ApiResponse) -> str:
        return str(response.json()["id"])

    def parse_error(self, response: ApiResponse) -> SendError:
        body = response.json()
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            # A proxy's HTML page, an empty 5xx: Resend's SDKs call these application_error.
            error = self.fallback_error(response, code="application_error")
            return error
        return SendError(
            str(body.get("message") or ""),
            code=body["name"],
            http_status=response.status,
            details={k: v for k, v in body.items() if k not in ("name", "message", "statusCode")}
            or None,
            request_id=response.headers.get("x-request-id", ""),
            retry_after=retry_after(response.headers),
        )

    # --- delivery events: Svix-signed ``{type, created_at, data}`` -------------------
    @classmethod
    def verify_webhook(
        cls, request: WebhookRequest, secrets: Sequence[str], tolerance: float
    ) -> None:
        signatures.verify_svix(request, secrets, tolerance)

    @classmethod
    def parse_webhook(cls, request: WebhookRequest) -> list[DeliveryReport]:
        body = json_object(request)
        raw_type, data = body.get("type"), body.get("data")
        if not isinstance(raw_type, str) or not raw_type or not isinstance(data, dict):
            raise WebhookPayloadError("Not a Resend event: no `type` string and `data` object.")
        kind = EVENT_TYPES.get(raw_type, "unknown")
        details: dict[str, Any] = {"raw_type": raw_type}
        if kind == "bounced":
            bounce: dict[str, Any] = data["bounce"] if isinstance(data.get("bounce"), dict) else {}
            details["bounce_type"] = BOUNCE_TYPES.get(str(bounce.get("type")), "undetermined")
            details["bounce"] = bounce
            details["reason"] = text(bounce.get("message") or bounce.get("subType"))
        for key in ("failed", "suppressed"):
            found = data.get(key)
            if kind == key and isinstance(found, dict):
                details[key] = found
                details["reason"] = text(found.get("reason") or found.get("message"))
        click = data.get("click")
        if isinstance(click, dict):
            details["link"] = text(click.get("link"))
        for key in ("subject", "tags", "broadcast_id"):
            if data.get(key):
                details[key] = data[key]
        email_id = data.get("email_id")
        return [
            DeliveryReport(
                # verify_webhook checked that one of the two headers is there.
                event_id=request.header("svix-id", "webhook-id"),
                type=kind,
                message_id=email_id if isinstance(email_id, str) else "",
                recipients=addresses(data.get("to")),
                occurred_at=parse_time(body.get("created_at")),
                details=details,
            )
        ]


def _attachment(attachment: Attachment) -> dict[str, Any]:
    wire: dict[str, Any] = {
        "content": attachment["content"],
        "content_type": attachment["content_type"],
    }
    if attachment.get("filename"):
        wire["filename"] = attachment["filename"]
    if attachment.get("content_id"):
        wire["content_id"] = attachment["content_id"]
    return wire
