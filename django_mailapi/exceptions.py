"""Exceptions raised by django-mailapi.

Each one inherits from our base class and from the stdlib or Django class it resembles,
so callers can catch it either way.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured as DjangoImproperlyConfigured


class MailapiError(Exception):
    """Base class of every django-mailapi error. ``code`` is a catalog code."""

    code: str = "mailapi_error"

    def __init__(self, message: str = "", *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.message} [{self.code}]" if self.message else self.code


class ImproperlyConfigured(MailapiError, DjangoImproperlyConfigured):
    """A setting is missing or malformed. Never swallowed by ``fail_silently``."""

    code = "configuration_error"


class InvalidMessage(MailapiError, ValueError):
    """The message cannot be sent as it is: bad address, header injection, too large..."""

    code = "invalid_message"


class UnsupportedFeature(InvalidMessage):
    """The message uses something the configured provider cannot carry."""

    code = "unsupported_feature"

    def __init__(self, feature: str, provider: str) -> None:
        super().__init__(f"The {provider} provider cannot send {feature}.")
        self.feature = feature
        self.provider = provider


class QuotaExceeded(MailapiError):
    """An org has used up its daily or monthly quota (or is paused)."""

    code = "daily_quota_exceeded"

    def __init__(self, message: str, *, code: str, org: str, period: str | None = None) -> None:
        super().__init__(message, code=code)
        self.org = org
        self.period = period


class SendError(MailapiError):
    """One attempt to call the API failed.

    Raised by providers. ``http_status`` is None for transport errors (timeouts,
    refused connections) and for checks made before any request.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str,
        http_status: int | None = None,
        details: Any = None,
        request_id: str = "",
        retry_after: float | None = None,
        local: bool = False,
    ) -> None:
        super().__init__(message, code=code)
        self.http_status = http_status
        self.details = details
        self.request_id = request_id
        self.retry_after = retry_after
        #: True when the code is from our own "mailapi" catalog, not the API's.
        self.local = local


class WebhookError(MailapiError, ValueError):
    """A webhook request that is not recorded. ``status`` is the HTTP status it gets."""

    code = "webhook_error"
    status = 400


class WebhookSignatureError(WebhookError):
    """Not verified: no signature or a wrong one, no secret that fits, or a signed time
    outside ``WEBHOOK_TOLERANCE_SECONDS``. Answered 401; nothing is stored."""

    code = "webhook_signature"
    status = 401


class WebhookPayloadError(WebhookError):
    """Verified, but the body is not the provider's event shape. Answered 400."""

    code = "webhook_payload"
    status = 400
