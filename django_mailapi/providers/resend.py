"""Resend: https://resend.com/docs/api-reference (wire facts in the README)."""

from __future__ import annotations

from typing import Any, ClassVar

from ..exceptions import SendError
from ..message import Attachment, Message
from .base import ApiRequest, ApiResponse, Provider, retry_after, wire_tags


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
