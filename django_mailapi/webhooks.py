"""The webhook view: verify a provider's delivery events, parse them, store them.

``POST webhooks/<provider>/`` (``django_mailapi.urls``, URL name ``mailapi-webhook``).
The answers are the contract of SPEC §10, and what a provider's retry logic needs:

=====  ==============================================================================
404    no ``WEBHOOK_SECRET`` is configured, or no configured provider of that name
       takes webhooks (the endpoint does not exist as far as callers can tell)
405    not a POST
413    a body over ``MAX_BODY_BYTES`` (read no further than that)
401    a missing or wrong signature, or a signed time outside the tolerance; nothing
       is stored
400    verified, but not the provider's event shape
200    every verified event, new or duplicate, matched to an email or not, so the
       provider never disables the endpoint over events the app already has
=====  ==============================================================================

The view verifies the raw bytes before parsing anything, runs outside
``ATOMIC_REQUESTS`` (each event commits on its own, and no lock or transaction is open
while the request body is read), and is exempt from CSRF (providers sign instead).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from . import events
from .conf import mailapi_settings
from .exceptions import MailapiError, WebhookError, WebhookPayloadError
from .providers import BUILTIN, resolve_provider_class
from .providers.base import Provider, WebhookRequest

logger = logging.getLogger("django_mailapi")

#: Largest body read. Providers' events are a few kilobytes; anything near this is not
#: one, and reading it would only cost memory.
MAX_BODY_BYTES = 1024 * 1024


def _answer(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse({"error": code, "message": message}, status=status)


def provider_for(name: str) -> type[Provider] | None:
    """The provider class named ``name`` that takes webhooks, among the built-in ones
    and those configured (``PROVIDER``, and ``MAILERS`` options), else None."""
    candidates: list[Any] = [*BUILTIN, mailapi_settings.get("PROVIDER")]
    for entry in (getattr(settings, "MAILERS", None) or {}).values():
        options = entry.get("OPTIONS") if isinstance(entry, dict) else None
        if isinstance(options, dict):
            candidates += [v for k, v in options.items() if k.upper() == "PROVIDER"]
    for candidate in candidates:
        try:
            cls = resolve_provider_class(candidate)
        except MailapiError:
            continue
        if cls.name == name and cls.accepts_webhooks():
            return cls
    return None


class BodyTooLarge(Exception):
    pass


def read_body(request: HttpRequest, limit: int = MAX_BODY_BYTES) -> bytes:
    """The request body, refusing (``BodyTooLarge``) before reading more than ``limit``."""
    try:
        declared = int(request.headers.get("content-length") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        raise BodyTooLarge
    body = request.read(limit + 1)
    if len(body) > limit:
        raise BodyTooLarge
    return body


@csrf_exempt
@require_POST
@transaction.non_atomic_requests
def webhook(request: HttpRequest, provider: str) -> JsonResponse:
    secrets: list[str] = mailapi_settings.WEBHOOK_SECRET
    cls = provider_for(provider) if secrets else None
    if cls is None:
        return _answer(404, "not_found", "No webhook endpoint here.")
    try:
        body = read_body(request)
    except BodyTooLarge:
        return _answer(
            413, "too_large", f"The body is over {MAX_BODY_BYTES} bytes; no event is that big."
        )
    incoming = WebhookRequest(dict(request.headers), body, time.time())
    try:
        cls.verify_webhook(incoming, secrets, mailapi_settings.WEBHOOK_TOLERANCE_SECONDS)
        reports = cls.parse_webhook(incoming)
    except WebhookError as error:
        logger.warning("django-mailapi: %s webhook refused (%s): %s", provider, error.status, error)
        return _answer(error.status, error.code, error.message)
    except Exception as error:  # a provider's parser tripping over odd input
        logger.warning("django-mailapi: %s webhook unreadable: %r", provider, error)
        failed = WebhookPayloadError("The body is not an event this endpoint can read.")
        return _answer(failed.status, failed.code, failed.message)
    received = events.receive(cls.name, reports, timezone.now())
    return JsonResponse(
        {
            "received": len(reports),
            "stored": received.stored,
            "duplicates": received.duplicates,
            "matched": received.matched,
        }
    )
