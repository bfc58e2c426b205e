"""The generic provider: any JSON email API that speaks Resend's request shape.

Built for the API behind seed 003 (codes such as ``api_key_revoked`` and
``ip_not_allowed``, a ``request_id`` in every error), whose send endpoint is not
publicly documented. So it has no public URL: ``MAILAPI['BASE_URL']`` is required
(system check ``mailapi.E004``; the provider raises ``ImproperlyConfigured`` without it).

By default it sends what Resend would: ``POST {base}/emails`` with Resend's body and an
``Idempotency-Key`` header, and reads ``{"id": ...}`` back. To map the message to a
different body or path, subclass it and point ``MAILAPI['PROVIDER']`` at the subclass::

    class AcmeProvider(GenericProvider):
        def wire_body(self, message):
            body = super().wire_body(message)
            body["sender"] = body.pop("from")
            return body

Errors are read from a flat ``{"code", "message", "details", "request_id"}`` or a nested
``{"error": {...}}``; the ``request_id`` (else an ``X-Request-Id`` header) is kept on the
failed send, to quote to the API's support. Limits are the API's to enforce: nothing is
checked locally beyond what every provider checks.
"""

from __future__ import annotations

from typing import Any

from ..exceptions import SendError
from ..message import Message
from .base import ApiResponse, error_object
from .resend import ResendProvider


class GenericProvider(ResendProvider):
    name = "generic"
    default_base_url = None
    max_recipients = None
    max_message_bytes = None
    max_batch = 1  # the API documents no batch endpoint

    @classmethod
    def accepts_webhooks(cls) -> bool:
        # The API documents no webhooks; reading Resend's (inherited) would be a guess.
        return False

    def parse_error(self, response: ApiResponse) -> SendError:
        body = response.json()
        found = error_object(body)
        if found is None:
            return self.fallback_error(response)
        request_id = found.get("request_id")
        if not isinstance(request_id, str) and isinstance(body, dict):
            request_id = body.get("request_id")
        return self.envelope_error(
            response, found, request_id=request_id if isinstance(request_id, str) else ""
        )

    def wire_body(self, message: Message) -> dict[str, Any]:
        """Resend's SendEmailRequest body; override to speak another API's shape."""
        return super().wire_body(message)
