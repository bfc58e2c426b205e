"""The provider contract.

A provider turns the outbox's provider-neutral message into an HTTP request for one
email API, and turns the API's answer into either a message id or a ``SendError``.
It knows HTTP and its API's shapes, and nothing of models, quotas or retries: the
outbox decides what an error means by looking its code up in the provider's error
catalog (``django_mailapi.errors``).

To add a provider, subclass ``Provider`` and write four things:

``name`` and ``default_base_url``
    The short name recorded on every row (it also selects the error catalog, so
    use the catalog's name if you add one), and the public API URL (None when users
    must always configure ``BASE_URL``).

``build_request(message, idempotency_key) -> ApiRequest``
    Map the message (a ``django_mailapi.message.Message``, described below) to a
    method, a path under the base URL, a JSON body and extra headers. Raise
    ``UnsupportedFeature(feature, self.name)`` for anything the API cannot carry;
    never drop it silently. Send ``idempotency_key`` in whatever header
    the API uses; it is the same for every retry of the same message.

``parse_success(response) -> str``
    The API's id for the accepted email. Raise ``ValueError`` (or ``KeyError``) if the
    body is not what a success looks like; the outbox records ``invalid_response``
    and retries under the same idempotency key.

``parse_error(response) -> SendError``
    Read the error envelope into a code, message, details and request id. It must
    never raise: bodies can be empty, HTML from a proxy, or JSON of another shape. Use
    ``self.fallback_error(response)`` when nothing better can be read.

``build_request`` and ``parse_success`` have no default: the base class raises
``NotImplementedError`` naming your class and the method you left out.

Optionally override ``validate(message)`` to refuse, before any request, what the
API would refuse (sizes, recipient counts); raise ``self.local_error(code, text)``
with a code from the "mailapi" catalog.

APIs that take exactly one recipient per call set ``one_recipient_per_message = True``
and may override the class method ``split(message) -> [message, ...]``. The backend
calls ``split`` when it writes the outbox, so each recipient becomes its own row: sent,
retried, counted against the quota and shown in the admin on its own. ``split`` runs in
the web process, before any API key or base URL is known, so it must be pure shape
work on the message dict.

APIs with a batch endpoint set ``max_batch`` to the most emails one request carries and
write ``build_batch_request(messages, idempotency_key) -> ApiRequest``; the default
``parse_batch_response`` reads the answer shape Resend and Sendr share. Override
``batchable(message)`` (a class method) to keep some messages out of batches.

The message (``django_mailapi.message.Message``, a ``TypedDict``: JSON-safe, every
key always present)::

    {"from": "Name <a@example.com>", "to": [...], "cc": [...], "bcc": [...],
     "reply_to": [...], "subject": "...", "text": "..." | None, "html": "..." | None,
     "headers": {"X-Name": "value"},
     "attachments": [{"filename": "a.pdf" | None, "content": "<base64>",
                      "content_type": "application/pdf", "content_id": "logo" | None,
                      "size": 1234}]}

Addresses are strings as Django users write them (``"Name <addr>"`` or ``addr``).
An attachment with a ``content_id`` is an inline image referenced as ``cid:<id>``.

Instances are reused by one thread for many messages, so keep per-request state out
of ``self``. ``self.session`` is a ``requests.Session`` that keeps connections open.

Delivery events (webhooks)
--------------------------

A provider whose API reports what happened after it accepted an email (delivered,
bounced, complained, ...) takes part in ``django_mailapi.urls``
(``POST webhooks/<name>/``) by writing two class methods. Both are class methods
because a webhook arrives with no API key, base URL or org: only the request and
``MAILAPI["WEBHOOK_SECRET"]``. Both must be safe on any input; whatever they raise
other than the two errors below is a bug, and the view answers 400 all the same.

``verify_webhook(request, secrets, tolerance) -> None``
    Decide, from the raw bytes of ``request.body`` and the headers, whether one of
    ``secrets`` signed it; raise ``WebhookSignatureError`` (answered 401, nothing
    stored) if none did, if the signature is missing, or if the signed timestamp is more
    than ``tolerance`` seconds from ``request.received_at`` either way. Compare with
    ``hmac.compare_digest``, never ``==``. Do not parse JSON before the signature is
    checked. ``django_mailapi.providers.signatures`` has the two schemes in use:
    ``verify_svix`` (Svix / Standard Webhooks: Resend) and ``verify_hex_hmac`` (a hex
    HMAC-SHA256 of the body: Sendr, Emitlo). A secret that cannot be one of yours (say,
    not base64 where Svix needs it) is skipped, since ``secrets`` may hold the secrets
    of several providers.

``parse_webhook(request) -> [DeliveryReport, ...]``
    Only called after ``verify_webhook`` passed. Read the body into normalized reports
    (below), or raise ``WebhookPayloadError`` (answered 400) when it is not your API's
    event shape at all. An event type you do not know is not an error: report it as
    ``"unknown"`` with the raw type in ``details["raw_type"]``, so the provider gets its
    2xx and keeps the endpoint enabled.

A ``DeliveryReport`` carries: ``event_id`` (the provider's id for this event, the same
on every redelivery: Svix's ``svix-id``, a delivery id header, an id in the body, or
else ``body_digest(request.body)``; it is unique per provider and makes redeliveries
no-ops; a request carrying several events must give each its own), ``type`` (one of
``EVENT_TYPES``), ``message_id`` (the API's id of the email, what ``parse_success``
returned; events are matched to emails by it), ``recipients`` (the addresses the event
is about), ``occurred_at`` (aware datetime, or None for "when it arrived") and
``details`` (JSON-safe: ``raw_type``, and where known ``bounce_type`` (``"hard"``,
``"soft"`` or ``"undetermined"``), ``reason``, ``link``, ...).
A bounce's ``bounce_type`` decides its failure code: ``hard_bounce`` or
``soft_bounce`` (undetermined counts as soft, so no address is written off on a guess).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import json
import math
import mimetypes
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import requests
from requests.structures import CaseInsensitiveDict

from .. import __version__
from ..exceptions import (
    ImproperlyConfigured,
    SendError,
    WebhookPayloadError,
)
from ..message import Attachment, Message

USER_AGENT = f"django-mailapi/{__version__} python-requests/{requests.__version__}"


@dataclass
class ApiRequest:
    method: str
    path: str
    json: Any
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class ApiResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def __post_init__(self) -> None:
        self.headers = CaseInsensitiveDict(self.headers)

    def json(self) -> Any:
        """The body as JSON, or None when it is empty or not JSON."""
        if not self.body:
            return None
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


#: The normalized types of ``DeliveryReport.type`` (and ``DeliveryEvent.type``).
EVENT_TYPES: tuple[str, ...] = (
    "sent",
    "delivered",
    "delivery_delayed",
    "bounced",
    "complained",
    "failed",
    "suppressed",
    "opened",
    "clicked",
    "unsubscribed",
    "scheduled",
    "unknown",
)


@dataclass(frozen=True)
class WebhookRequest:
    """One webhook request as it arrived: headers (any case), raw body, arrival time."""

    headers: Mapping[str, str]
    body: bytes
    #: Unix time of arrival: the "now" that signed timestamps are compared with.
    received_at: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "headers", CaseInsensitiveDict(self.headers))

    def header(self, *names: str) -> str:
        """The first of ``names`` present (stripped), else ""."""
        for name in names:
            value = self.headers.get(name)
            if value is not None:
                return value.strip()
        return ""


@dataclass
class DeliveryReport:
    """One event a provider reported about an email, normalized (see the module docs)."""

    event_id: str
    type: str
    message_id: str = ""
    recipients: list[str] = field(default_factory=list)
    occurred_at: dt.datetime | None = None
    details: dict[str, Any] = field(default_factory=dict)


def body_digest(body: bytes) -> str:
    """An event id for APIs that send none: the SHA-256 of the raw body."""
    return "sha256:" + hashlib.sha256(body).hexdigest()


def json_object(request: WebhookRequest) -> dict[str, Any]:
    """The body as a JSON object, or ``WebhookPayloadError``."""
    try:
        body = json.loads(request.body)
    except (ValueError, RecursionError):
        raise WebhookPayloadError("The body is not JSON.") from None
    if not isinstance(body, dict):
        raise WebhookPayloadError("The body is not a JSON object.")
    return body


def parse_time(value: Any) -> dt.datetime | None:
    """An ISO 8601 string (``Z`` allowed) or Unix seconds as an aware UTC datetime."""
    try:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return dt.datetime.fromtimestamp(float(value), tz=dt.timezone.utc)
        if not isinstance(value, str) or not value:
            return None
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        moment = dt.datetime.fromisoformat(text)
    except (ValueError, OverflowError, OSError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return moment.astimezone(dt.timezone.utc)


def addresses(value: Any) -> list[str]:
    """A recipient field (one string or a list of them) as a list of strings."""
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str) and item]
    return []


def text(value: object, limit: int = 2000) -> str:
    """A JSON value as short text ("" for None)."""
    if value is None:
        return ""
    found = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return found[:limit]


class Provider:
    name: ClassVar[str] = ""
    default_base_url: ClassVar[str | None] = None
    #: The error catalog (``django_mailapi.errors``) this API's codes are looked up in;
    #: None = the catalog named like the provider. A provider for an API that speaks
    #: another's error codes (say, a Resend-compatible service) names that catalog here.
    catalog: ClassVar[str | None] = None
    #: Most emails one batch request carries; 1 = the API has no batch endpoint.
    max_batch: ClassVar[int] = 1
    #: Most recipients (to + cc + bcc) one API call accepts; None = no local check.
    max_recipients: ClassVar[int | None] = None
    #: Whether the API carries ``message.tags`` and ``message.metadata``, as one list of
    #: ``{"name", "value"}`` pairs (see ``wire_tags``). Where it cannot they are refused.
    carries_tags: ClassVar[bool] = False
    #: Whether the API needs an address in ``to`` (cc or bcc alone are then refused when
    #: the message is queued). APIs taking one recipient per call split first, so their
    #: parts always have one.
    requires_to: ClassVar[bool] = True
    #: Largest message we let through, in bytes of JSON body; None = no local check.
    max_message_bytes: ClassVar[int | None] = None
    #: True when the API takes a single recipient per call: the backend then writes one
    #: outbox row per message that ``split`` returns.
    one_recipient_per_message: ClassVar[bool] = False

    def __init__(self, *, api_key: str, base_url: str | None = None, timeout: float = 10.0):
        base = base_url or self.default_base_url
        if not base:
            raise ImproperlyConfigured(
                f"The {self.name} provider needs MAILAPI['BASE_URL'].",
                code="configuration_error",
            )
        self.base_url = base.rstrip("/")
        self.timeout = timeout
        self._api_key = api_key
        self.session = requests.Session()
        # requests reads proxy and CA settings from the environment on every request;
        # read them once here instead (they still apply) and skip that per call.
        self.session.proxies.update(requests.utils.get_environ_proxies(self.base_url))
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if bundle:
            self.session.verify = bundle
        self.session.trust_env = False
        self.session.headers.update(
            {"User-Agent": USER_AGENT, "Accept": "application/json"} | self.auth_headers()
        )

    def __repr__(self) -> str:  # never show the key
        return f"<{type(self).__name__} {self.base_url}>"

    # --- to write in a subclass ------------------------------------------------------
    def build_request(self, message: Message, idempotency_key: str) -> ApiRequest:
        """The request that sends ``message``; see the module docstring."""
        raise self._missing("build_request")

    def parse_success(self, response: ApiResponse) -> str:
        """The API's id for the email a 2xx ``response`` accepted."""
        raise self._missing("parse_success")

    def parse_error(self, response: ApiResponse) -> SendError:
        return self.fallback_error(response)

    def validate(self, message: Message) -> None:
        if self.requires_to and not message["to"]:
            raise self.local_error(
                "missing_to_recipient",
                f"The {self.name} API needs at least one address in to; this email has "
                "only cc or bcc recipients.",
            )
        tags, metadata = message.get("tags") or [], message.get("metadata") or {}
        if (tags or metadata) and not self.carries_tags:
            raise self.local_error(
                "unsupported_feature",
                f"The {self.name} provider cannot carry tags or metadata.",
            )
        clash = sorted(set(tags) & set(metadata))
        if clash:
            raise self.local_error(
                "invalid_tags",
                f"{', '.join(clash)} is both a tag and a metadata key; the {self.name} API "
                "carries both as one list of name/value tags.",
            )
        count = len(message["to"]) + len(message["cc"]) + len(message["bcc"])
        if self.max_recipients is not None and count > self.max_recipients:
            raise self.local_error(
                "too_many_recipients",
                f"{count} recipients; {self.name} accepts at most {self.max_recipients} per email.",
            )

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"}

    @classmethod
    def split(cls, message: Message) -> list[Message]:
        """The messages to store for ``message``: itself, unless the API needs it split.

        With ``one_recipient_per_message``, the default gives each distinct address of
        to, cc and bcc (compared without case) its own copy, addressed to it alone in
        ``to``. Cc and bcc lists are therefore not shown to anyone, which is what
        one-recipient APIs do anyway; override this to refuse cc or bcc instead.
        """
        if not cls.one_recipient_per_message:
            return [message]
        seen: set[str] = set()
        parts: list[Message] = []
        for address in (*message["to"], *message["cc"], *message["bcc"]):
            bare = email.utils.parseaddr(address)[1].lower()
            if bare in seen:
                continue
            seen.add(bare)
            parts.append({**message, "to": [address], "cc": [], "bcc": []})
        return parts

    # --- delivery events (webhooks); see the module docstring -------------------------
    @classmethod
    def verify_webhook(
        cls, request: WebhookRequest, secrets: Sequence[str], tolerance: float
    ) -> None:
        """Raise ``WebhookSignatureError`` unless one of ``secrets`` signed ``request``."""
        raise cls._missing_webhook("verify_webhook")

    @classmethod
    def parse_webhook(cls, request: WebhookRequest) -> list[DeliveryReport]:
        """The events of a verified request, or ``WebhookPayloadError``."""
        raise cls._missing_webhook("parse_webhook")

    @classmethod
    def accepts_webhooks(cls) -> bool:
        """Whether this provider implements both webhook methods."""
        base = Provider.__dict__
        return all(
            getattr(cls, method).__func__ is not base[method].__func__
            for method in ("verify_webhook", "parse_webhook")
        )

    @classmethod
    def _missing_webhook(cls, method: str) -> NotImplementedError:
        return NotImplementedError(
            f"{cls.__name__} must implement {method}() to receive delivery events "
            "(see django_mailapi.providers.base.Provider)"
        )

    # --- provided --------------------------------------------------------------------
    @classmethod
    def batchable(cls, message: Message) -> bool:
        """Whether ``message`` may travel in a batch request (batches carry no attachments).

        Decided from the message alone, so the backend can ask it when it sizes tasks;
        override this (not ``can_batch``) to narrow what goes in a batch.
        """
        return cls.max_batch > 1 and not message["attachments"]

    def can_batch(self, message: Message) -> bool:
        """Whether this provider sends ``message`` in a batch; ``batchable`` by default."""
        return self.batchable(message)

    def build_batch_request(self, messages: list[Message], idempotency_key: str) -> ApiRequest:
        """One request for several messages (only where ``max_batch`` > 1)."""
        raise self._missing(
            "build_batch_request", f" to send batches (max_batch = {self.max_batch})"
        )

    def send_batch(self, messages: list[Message], idempotency_key: str) -> list[str | SendError]:
        """Send validated messages in one request: per message, its id or its error.

        Raises ``SendError`` when the whole request failed; the outbox then retries the
        same messages together under the same ``idempotency_key``.
        """
        return self.parse_batch_response(
            self.call(self.build_batch_request(messages, idempotency_key))
        )

    def parse_batch_response(self, response: ApiResponse) -> list[str | SendError]:
        """Per message of the batch, in order: its email id, or the ``SendError`` for it.

        Reads the shape Resend and Sendr share: ``{"data": [{"id": ...}, ...],
        "errors": [{"index": i, "message" | "error": "..."}]}``, where ``data`` lists the
        accepted emails in request order and skips the indexes ``errors`` names. A
        non-2xx answer failed the whole batch and is raised as one ``SendError``; so is a
        2xx body that cannot be read, since nothing in it says which emails went out.
        """
        if not 200 <= response.status < 300:
            raise self.parse_error(response)
        body = response.json()
        try:
            ids = [str(item["id"]) for item in body["data"]]
            by_index = {
                int(item["index"]): str(item.get("message") or item.get("error") or "")
                for item in body.get("errors") or []
            }
        except (KeyError, TypeError, ValueError, AttributeError):
            raise SendError(
                f"The API answered {response.status} to a batch with a body we cannot read: "
                f"{response.text[:200]!r}",
                code="invalid_response",
                local=True,
            ) from None
        total = len(ids) + len(by_index)
        if any(not 0 <= index < total for index in by_index):
            raise SendError(
                f"The batch answer names an error index outside 0..{total - 1}.",
                code="invalid_response",
                local=True,
            )
        accepted = iter(ids)
        request_id = response.headers.get("x-request-id", "")
        return [
            SendError(
                by_index[index] or "The batch rejected this email.",
                code="validation_error",
                http_status=422,
                details={"index": index},
                request_id=request_id,
            )
            if index in by_index
            else next(accepted)
            for index in range(total)
        ]

    def send(self, message: Message, idempotency_key: str) -> str:
        """Send one message; return the API's id or raise ``SendError``."""
        self.validate(message)
        return self.deliver(message, idempotency_key)

    def deliver(self, message: Message, idempotency_key: str) -> str:
        """``send`` without ``validate``, for messages the outbox has checked already."""
        request = self.build_request(message, idempotency_key)
        response = self.call(request)
        if 200 <= response.status < 300:
            try:
                return self.parse_success(response)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise SendError(
                    f"The API answered {response.status} with a body we cannot read: "
                    f"{response.text[:200]!r} ({exc})",
                    code="invalid_response",
                    local=True,
                ) from None
        raise self.parse_error(response)

    def call(self, request: ApiRequest) -> ApiResponse:
        """One HTTP exchange. Transport failures become local ``SendError``s."""
        url = f"{self.base_url}/{request.path.lstrip('/')}"
        try:
            resp = self.session.request(
                request.method,
                url,
                json=request.json,
                headers=request.headers,
                timeout=self.timeout,
            )
        except requests.Timeout:
            raise SendError(
                f"No answer from {self.base_url} within {self.timeout:g}s.",
                code="timeout",
                local=True,
            ) from None
        except requests.RequestException as exc:
            raise SendError(
                f"Could not reach {self.base_url}: {type(exc).__name__}.",
                code="connection_error",
                local=True,
            ) from None
        return ApiResponse(resp.status_code, resp.headers, resp.content)

    def _missing(self, method: str, purpose: str = "") -> NotImplementedError:
        # Names the subclass, so whoever wires up a half-written provider sees which
        # class and which hook, not a bare NotImplementedError from this module.
        return NotImplementedError(
            f"{type(self).__name__} must implement {method}(){purpose} "
            "(see django_mailapi.providers.base.Provider)"
        )

    def local_error(self, code: str, message: str) -> SendError:
        return SendError(message, code=code, local=True)

    def envelope_error(
        self,
        response: ApiResponse,
        found: dict[str, Any],
        *,
        request_id: str = "",
        wait: float | None = None,
    ) -> SendError:
        """A ``SendError`` from an error object ``{"code", "message", "details"?}``."""
        details = found.get("details")
        return SendError(
            str(found.get("message") or ""),
            code=found["code"],
            http_status=response.status,
            details=details if details not in (None, {}, []) else None,
            request_id=request_id or response.headers.get("x-request-id", ""),
            retry_after=wait if wait is not None else retry_after(response.headers),
        )

    def fallback_error(self, response: ApiResponse, code: str | None = None) -> SendError:
        """An error for a body we could not read: keyed by the HTTP status."""
        snippet = " ".join(response.text.split())[:300]
        return SendError(
            snippet or f"HTTP {response.status} with an empty body.",
            code=code or f"http_{response.status}",
            http_status=response.status,
            retry_after=retry_after(response.headers),
            request_id=response.headers.get("x-request-id", ""),
        )


def wire_tags(message: Message) -> list[dict[str, str]]:
    """``metadata`` and ``tags`` as one list of ``{"name", "value"}`` pairs, the shape
    Resend and Sendr take: each metadata entry as itself, each tag as ``{tag: "true"}``
    (tag names are unique, so the webhook's tag object keeps every one)."""
    pairs = [
        {"name": key, "value": value} for key, value in (message.get("metadata") or {}).items()
    ]
    pairs += [{"name": tag, "value": "true"} for tag in message.get("tags") or []]
    return pairs


def attachment_filename(attachment: Attachment, index: int) -> str:
    """The attachment's filename, or a made-up one for APIs that require a name.

    Django allows a ``MIMEBase`` attachment without a filename; APIs such as Sendr and
    Emitlo reject one, so it becomes ``attachment-<n><extension of its type>``.
    """
    filename = attachment.get("filename")
    if filename:
        return str(filename)
    extension = mimetypes.guess_extension(str(attachment.get("content_type") or "")) or ".bin"
    return f"attachment-{index + 1}{extension}"


def error_object(body: Any) -> dict[str, Any] | None:
    """The error object of a JSON error body, or None if it has no string ``code``.

    Reads both envelopes that APIs in this family use: flat
    ``{"code": ..., "message": ..., ...}`` and nested ``{"error": {"code": ..., ...}}``
    (the nested one wins when a body somehow has both).
    """
    if not isinstance(body, dict):
        return None
    inner = body.get("error")
    if isinstance(inner, dict) and isinstance(inner.get("code"), str) and inner["code"]:
        return inner
    if isinstance(body.get("code"), str) and body["code"]:
        return body
    return None


#: The longest wait an API may ask for that is honoured as given; longer ones are cut.
MAX_RETRY_AFTER = 3600.0
#: A reset value above this is a Unix time (some APIs send an epoch), not a duration.
_EPOCH_FLOOR = 1e9


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait, from ``Retry-After`` (seconds or HTTP date) or ``ratelimit-reset``.

    A value that is a Unix time is read as one; every wait is at most MAX_RETRY_AFTER.
    """
    for name in ("retry-after", "ratelimit-reset", "x-ratelimit-reset"):
        value = headers.get(name)
        if not value:
            continue
        try:
            seconds = float(value)
        except ValueError:
            if name != "retry-after":
                continue
            try:  # an HTTP date
                seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
            except (ValueError, TypeError, OverflowError):
                continue
        if math.isnan(seconds):
            continue
        if seconds > _EPOCH_FLOOR:
            seconds -= time.time()
        return min(max(0.0, seconds), MAX_RETRY_AFTER)
    return None
