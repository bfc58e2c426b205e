"""EmailBackend: EmailMessage -> outbox rows -> Celery dispatch after commit."""

from __future__ import annotations

import base64
import datetime as dt
import functools
import logging
import re
import uuid
from collections.abc import Iterable, Iterator, Sequence
from email.message import Message as MIMEMessage
from email.utils import parseaddr
from types import SimpleNamespace
from typing import Any

from django.core.exceptions import ValidationError
from django.core.mail import EmailMessage
from django.core.mail.backends.base import BaseEmailBackend
from django.core.validators import validate_email
from django.db import router, transaction
from django.utils import timezone

from . import signals, sql
from .conf import DEFAULTS, MailapiSettings, get_settings
from .dispatch import TASK_BYTES, dispatch, schedule
from .exceptions import (
    ImproperlyConfigured,
    InvalidMessage,
    MailapiError,
    QuotaExceeded,
    SendError,
    UnsupportedFeature,
)
from .message import Attachment, Message, payload_bytes
from .models import OutboundEmail, Status
from .outbox import record_rejected
from .outbox.batching import batch_size
from .providers import get_provider, resolve_provider_class
from .providers.base import Provider
from .quota import check_enqueue, resolve_org

logger = logging.getLogger("django_mailapi")

#: Headers Django shows for display only, or that we carry in their own field.
_DISPLAY_HEADERS = {"to", "cc", "from", "reply-to"}


def _check_header_text(value: str, what: str) -> str:
    if "\r" in value or "\n" in value or "\x00" in value:
        raise InvalidMessage(
            f"{what} contains a line break or NUL: refusing possible header injection.",
            code="header_injection",
        )
    return value


def _check_body(value: str) -> str:
    if "\x00" in value:
        raise InvalidMessage(
            "The body contains NUL characters, which email cannot carry.",
            code="invalid_content",
        )
    return value


def _visible(value: object) -> str:
    """Text safe to store in any database (NUL is refused by PostgreSQL)."""
    return str(value).replace("\x00", "\ufffd")


#: A bare ASCII address with nothing for parseaddr to take apart: dot-separated atoms of
#: letters, digits and ``_%+-`` on each side of one "@" (no name, quotes or comments).
_BARE_ADDRESS = re.compile(r"[\w%+-]+(?:\.[\w%+-]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\Z", re.ASCII)


@functools.lru_cache(maxsize=4096)
def _is_valid_address(text: str) -> bool:
    # Cached: a project sends from a few addresses and often to the same ones. parseaddr
    # (pure Python) is the costliest step of serializing a message, and a bare address
    # comes out of it unchanged, so it is only called for anything else.
    try:
        addr = text if _BARE_ADDRESS.match(text) else parseaddr(text)[1]
        validate_email(addr)
    except (ValidationError, RecursionError):  # deeply nested comments exhaust parseaddr
        return False
    return True


def split_addresses(value: str) -> list[str]:
    """A header's comma-separated addresses, keeping commas inside quotes, angle
    brackets and comments (``"Doe, John" <j@example.com>`` is one address)."""
    parts: list[str] = []
    current: list[str] = []
    quoted, escaped, depth = False, False, 0
    for char in value:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif not quoted and char in "(<":
            depth += 1
        elif not quoted and char in ")>":
            depth = max(0, depth - 1)
        elif char == "," and not quoted and not depth:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return [part.strip() for part in parts if part.strip()]


def _address(value: Any, code: str, what: str) -> str:
    text = _check_header_text(str(value), what)
    if not _is_valid_address(text):
        raise InvalidMessage(f"{what} {text!r} is not a valid email address.", code=code)
    return text


def _addresses(values: Sequence[Any], code: str, what: str) -> list[str]:
    return [_address(v, code, what) for v in values]


def _attachment(item: Any, provider: str) -> Attachment:
    if isinstance(item, MIMEMessage):  # MIMEBase, or Django 6.1's MIMEPart
        if item.is_multipart():
            raise UnsupportedFeature("multipart MIME attachments", provider)
        raw = item.get_payload(decode=True)
        content = raw if isinstance(raw, bytes) else b""
        cid = item.get("Content-ID")
        return _attachment_dict(
            item.get_filename(),
            content,
            item.get_content_type(),
            cid.strip().strip("<>") if cid else None,
        )
    filename, content, mimetype = item
    if isinstance(content, str):
        content = content.encode("utf-8")
    if isinstance(content, EmailMessage):
        content = content.message().as_bytes()
    elif isinstance(content, MIMEMessage):  # message/rfc822 given as an email.message.Message
        content = content.as_bytes()
    if not isinstance(content, bytes):
        raise InvalidMessage(
            f"The attachment {filename!r} has content of type {type(content).__name__}; "
            "give it as str, bytes or an email message.",
            code="invalid_content",
        )
    return _attachment_dict(filename, content, mimetype or "application/octet-stream", None)


def _attachment_dict(
    filename: str | None, content: bytes, content_type: str, content_id: str | None
) -> Attachment:
    if filename is not None:
        _check_header_text(filename, "An attachment's filename")
    if content_id is not None:
        _check_header_text(content_id, "An attachment's Content-ID")
    _check_header_text(content_type, "An attachment's content type")
    return {
        "filename": filename,
        "content": base64.b64encode(content).decode("ascii"),
        "content_type": content_type,
        "content_id": content_id,
        "size": len(content),
    }


def serialize_message(message: EmailMessage, provider: str = "") -> Message:
    """``message`` as the JSON-safe, provider-neutral ``Message`` (see message.py)."""
    headers = {str(k): str(v) for k, v in (message.extra_headers or {}).items()}
    for name, value in headers.items():
        _check_header_text(name, "A header name")
        _check_header_text(value, f"The {name} header")
    lowered = {k.lower(): v for k, v in headers.items()}
    from_email = lowered.get("from") or message.from_email
    if not from_email:
        raise InvalidMessage("The message has no from address.", code="invalid_from_address")
    reply_to = list(message.reply_to)
    if "reply-to" in lowered and not reply_to:
        reply_to = split_addresses(lowered["reply-to"])
    to, cc, bcc = list(message.to), list(message.cc), list(message.bcc)
    if not (to or cc or bcc):
        raise InvalidMessage("The message has no recipients.", code="invalid_recipient")

    text: str | None = None
    html: str | None = None
    body = message.body or ""
    if message.content_subtype == "html":
        html = _check_body(str(body))
    else:
        text = _check_body(str(body))
    for alternative in getattr(message, "alternatives", None) or []:
        content, mimetype = alternative[0], alternative[1]
        if mimetype == "text/html" and html is None:
            html = _check_body(content if isinstance(content, str) else content.decode("utf-8"))
        else:
            raise UnsupportedFeature(f"a {mimetype} alternative part", provider or "API")

    payload: Message = {
        "from": _address(from_email, "invalid_from_address", "The from address"),
        "to": _addresses(to, "invalid_recipient", "Recipient"),
        "cc": _addresses(cc, "invalid_recipient", "Cc recipient"),
        "bcc": _addresses(bcc, "invalid_recipient", "Bcc recipient"),
        "reply_to": _addresses(reply_to, "invalid_recipient", "Reply-To address"),
        "subject": _check_header_text(str(message.subject or ""), "The subject"),
        "text": text,
        "html": html,
        "headers": {k: v for k, v in headers.items() if k.lower() not in _DISPLAY_HEADERS},
        "attachments": [_attachment(a, provider) for a in message.attachments],
    }
    tags = _tags(getattr(message, "tags", None))
    if tags:
        payload["tags"] = tags
    metadata = _metadata(getattr(message, "metadata", None))
    if metadata:
        payload["metadata"] = metadata
    return payload


#: What Resend and Sendr accept in a tag's name and value: the common ground.
_TAG = re.compile(r"[A-Za-z0-9_-]{1,256}\Z")


def _tags(value: Any) -> list[str]:
    """``message.tags``, checked: a list of short ASCII labels."""
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise InvalidMessage(
            f"message.tags must be a list of strings, not {type(value).__name__}.",
            code="invalid_tags",
        )
    for tag in value:
        if not isinstance(tag, str) or not _TAG.match(tag):
            raise InvalidMessage(
                f"The tag {tag!r} is not 1 to 256 ASCII letters, digits, _ or -.",
                code="invalid_tags",
            )
    return list(dict.fromkeys(value))


def _metadata(value: Any) -> dict[str, str]:
    """``message.metadata``, checked: string keys (labels) to string values."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidMessage(
            f"message.metadata must be a dict, not {type(value).__name__}.",
            code="invalid_metadata",
        )
    for key, item in value.items():
        if not isinstance(key, str) or not _TAG.match(key):
            raise InvalidMessage(
                f"The metadata key {key!r} is not 1 to 256 ASCII letters, digits, _ or -.",
                code="invalid_metadata",
            )
        if not isinstance(item, str):
            raise InvalidMessage(
                f"The metadata value of {key!r} is a {type(item).__name__}, not a string.",
                code="invalid_metadata",
            )
        _check_header_text(item, f"The metadata value of {key!r}")
    return dict(value)


#: How far ahead ``message.send_at`` may be.
MAX_SCHEDULE = dt.timedelta(days=365)


def send_at_of(message: Any, now: dt.datetime) -> dt.datetime | None:
    """``message.send_at``, checked: an aware datetime at most a year ahead (or None)."""
    value = getattr(message, "send_at", None)
    if value is None:
        return None
    if not isinstance(value, dt.datetime) or timezone.is_naive(value):
        raise InvalidMessage(
            f"message.send_at must be a timezone-aware datetime, not {value!r}.",
            code="invalid_send_at",
        )
    if value - now > MAX_SCHEDULE:
        raise InvalidMessage(
            f"message.send_at is {value.isoformat()}, more than a year ahead.",
            code="invalid_send_at",
        )
    return value


#: Options that only shape what the web process writes. Every other option is read
#: again by the workers, from MAILAPI or the row's MAILERS alias.
ENQUEUE_ONLY = frozenset({"DEFAULT_ORG", "ORG_RESOLVER", "CHECK_QUOTA_ON_ENQUEUE"})


class EmailBackend(BaseEmailBackend):
    """Writes each message to the outbox; Celery workers send it to the API.

    Keyword arguments (Django 6.1 ``MAILERS`` OPTIONS, or ``get_connection(...)``)
    override ``MAILAPI`` keys of the same name. The workers read their settings again
    from ``MAILAPI`` (or the ``MAILERS`` alias the email was sent through), never from
    the web process; so an option a worker would not see (say ``provider`` or
    ``api_key`` passed to ``get_connection()`` alone) is refused with
    ``ImproperlyConfigured`` rather than have the email sent with another
    configuration, and another provider's key.
    """

    def __init__(self, fail_silently: bool = False, **kwargs: Any) -> None:
        options = {k: kwargs.pop(k) for k in list(kwargs) if k.upper() in DEFAULTS}
        alias = kwargs.pop("alias", None)
        # Django 6.1 wants backends that support fail_silently to keep it themselves.
        super().__init__(**kwargs)
        self.fail_silently = fail_silently
        self.mailer = str(alias or getattr(self, "alias", "") or "")
        self.conf = (
            MailapiSettings(options, mailer=self.mailer) if options else get_settings(self.mailer)
        )
        if options:
            self._refuse_unseen(options)

    def _refuse_unseen(self, options: dict[str, Any]) -> None:
        worker = get_settings(self.mailer)
        unseen = sorted(
            key
            for key in (name.upper() for name in options)
            if key not in ENQUEUE_ONLY and self.conf.get(key) != worker.get(key)
        )
        if unseen:
            where = (
                f"settings.MAILERS[{self.mailer!r}]['OPTIONS']"
                if self.mailer
                else ("settings.MAILAPI")
            )
            raise ImproperlyConfigured(
                f"EmailBackend option(s) {', '.join(unseen)} differ from what the Celery "
                f"workers will read ({where}): the workers would send these emails with "
                "another configuration, and another provider's API key. Put the options "
                "in MAILAPI, or (Django 6.1) in a MAILERS entry's OPTIONS and send through "
                "that alias.",
                code="configuration_error",
            )

    def send_messages(self, email_messages: Sequence[EmailMessage]) -> int:
        if not email_messages:
            return 0
        conf = self.conf
        # Configuration errors are raised whatever fail_silently says.
        provider_class = resolve_provider_class(conf.PROVIDER)
        provider = provider_class.name
        if not conf.API_KEY and conf.API_KEY_RESOLVER is None:
            raise ImproperlyConfigured(
                "MAILAPI['API_KEY'] is not set; see the mailapi.E001 system check.",
                code="configuration_error",
            )
        now = timezone.now()
        # Every message is checked and serialized before anything is written, so a bad
        # one refuses the whole call (fail_silently=False) with nothing queued.
        parts: list[tuple[str, Message]] = []
        #: Per part: the message it came from, its send_at, the recipients it replaced.
        extras: list[tuple[EmailMessage, dt.datetime | None, str]] = []
        rejected: list[tuple[OutboundEmail, MailapiError]] = []
        accepted = 0
        # Checks what the API can never accept (sizes, a `to`), as the worker will again.
        checker = get_provider(
            provider_class, api_key="", base_url=conf.BASE_URL, timeout=conf.TIMEOUT
        )
        # Read once per call, not once per message (each read merges settings.MAILAPI).
        override = conf.OVERRIDE_RECIPIENTS
        for message in email_messages:
            message.mailapi_id = None  # type: ignore[attr-defined]
            try:
                org = resolve_org(message, conf)
                send_at = send_at_of(message, now)
                original, payloads = self._parts(message, checker, override)
                # One row per part: APIs that take one recipient per call (Emitlo) split.
                parts.extend((org, part) for part in payloads)
                extras.extend((message, send_at, original) for _ in payloads)
                accepted += 1
            except MailapiError as exc:
                if not self.fail_silently:
                    raise
                rejected.append(self._rejected_row(message, provider, exc, now))
        if rejected:
            record_rejected(rejected)
        if not parts:
            return 0
        chunks: Iterable[Sequence[tuple[str, Message]]]
        chunks = task_chunks(parts, provider_class, conf)
        if conf.CHECK_QUOTA_ON_ENQUEUE:
            chunks = list(chunks)
            try:
                check_enqueue(
                    [
                        SimpleNamespace(org=org, recipient_count=_recipient_count(part))
                        for chunk in chunks
                        for org, part in chunk
                    ],
                    conf,
                    now,
                )
            except QuotaExceeded:
                # With fail_silently the caller asked not to hear about it: queue the
                # emails anyway and the worker defers them like any over-quota email.
                if not self.fail_silently:
                    raise
        # One transaction and one task per chunk: outside transaction.atomic() the first
        # emails are on their way while the rest are still being written. Inside it,
        # every chunk waits for the caller's commit, as the whole call does.
        using = router.db_for_write(OutboundEmail)
        offset = 0
        for chunk in chunks:
            mine = extras[offset : offset + len(chunk)]
            offset += len(chunk)
            values = [
                self._row_values(org, provider, now, part, send_at, original)
                for (org, part), (_message, send_at, original) in zip(chunk, mine, strict=True)
            ]
            with transaction.atomic(using=using):
                pks = sql.insert_rows(OutboundEmail, ROW_FIELDS, values, key="idempotency_key")
                if signals.message_queued.has_listeners(OutboundEmail):
                    signals.message_queued.send(
                        sender=OutboundEmail, emails=_instances(pks, values, using)
                    )
                timing = [(pk, send_at) for pk, (_m, send_at, _o) in zip(pks, mine, strict=True)]
                transaction.on_commit(functools.partial(_publish, timing, conf, now), using=using)
            for pk, (message, _send_at, _original) in zip(pks, mine, strict=True):
                if getattr(message, "mailapi_id", None) is None:
                    message.mailapi_id = pk  # type: ignore[attr-defined]
        return accepted

    @staticmethod
    def _parts(
        message: EmailMessage, checker: Provider, override: list[str] | None = None
    ) -> tuple[str, list[Message]]:
        """The outbox payloads for ``message``, each checked as the provider will check it,
        and (with OVERRIDE_RECIPIENTS) the recipients the override replaced.

        Whatever the input, this raises nothing but ``InvalidMessage`` (or another
        ``MailapiError`` with a code): a message Python's email package cannot take
        apart is refused like any other bad message, never a traceback.
        """
        original = ""
        try:
            payload = serialize_message(message, checker.name)
            if override:
                asked = (*payload["to"], *payload["cc"], *payload["bcc"])
                original = ", ".join(dict.fromkeys(asked))
                payload = {**payload, "to": list(override), "cc": [], "bcc": []}
            parts = type(checker).split(payload)
            for part in parts:
                checker.validate(part)
        except SendError as exc:  # validate's local codes: too large, too many, no `to`
            raise InvalidMessage(exc.message, code=exc.code) from None
        except MailapiError:
            raise
        except Exception as exc:
            raise InvalidMessage(
                f"The message could not be read ({type(exc).__name__}: {str(exc)[:200]}).",
                code="invalid_content",
            ) from None
        return original, parts

    def _row_values(
        self,
        org: str,
        provider: str,
        now: dt.datetime,
        payload: Message,
        send_at: dt.datetime | None = None,
        original: str = "",
    ) -> tuple[Any, ...]:
        """A new row's values, field by field as ROW_FIELDS names them."""
        recipients = payload["to"] + payload["cc"] + payload["bcc"]
        return (
            org,
            provider,
            self.mailer,
            f"mailapi/{org}/{uuid.uuid4().hex}",
            payload,
            payload["from"][:320],
            ", ".join(recipients),
            len(recipients),
            payload_bytes(payload),
            payload["subject"],
            payload.get("tags", []),
            payload.get("metadata", {}),
            send_at,
            original,
            max(now, send_at) if send_at else now,
            now,
            now,
        )

    def _rejected_row(
        self, message: EmailMessage, provider: str, error: MailapiError, now: Any
    ) -> tuple[OutboundEmail, MailapiError]:
        """A failed row for a message we could not accept (``fail_silently=True``)."""
        org = resolve_org(message, self.conf)
        recipients = [_visible(a) for a in (*message.to, *message.cc, *message.bcc)]
        row = OutboundEmail(
            org=org,
            provider=provider,
            mailer=self.mailer,
            status=Status.FAILED,
            idempotency_key=f"mailapi/{org}/{uuid.uuid4().hex}",
            payload=None,
            from_email=_visible(message.from_email or "")[:320],
            recipients=", ".join(recipients),
            recipient_count=len(recipients),
            subject=_visible(message.subject or ""),
            last_error_code=error.code,
            created_at=now,
            updated_at=now,
        )
        return row, error


#: The fields a new row's values give (``EmailBackend._row_values``), in that order;
#: the others take their defaults.
ROW_FIELDS = (
    "org",
    "provider",
    "mailer",
    "idempotency_key",
    "payload",
    "from_email",
    "recipients",
    "recipient_count",
    "payload_bytes",
    "subject",
    "tags",
    "metadata",
    "send_at",
    "original_recipients",
    "next_attempt_at",
    "created_at",
    "updated_at",
)


def _instances(
    pks: Sequence[int], values: Sequence[Sequence[Any]], using: str
) -> list[OutboundEmail]:
    """The rows just written, as model instances (for message_queued's receivers only)."""
    rows = []
    for pk, row in zip(pks, values, strict=True):
        email = OutboundEmail(pk=pk, **dict(zip(ROW_FIELDS, row, strict=True)))
        email._state.adding, email._state.db = False, using
        rows.append(email)
    return rows


def _publish(
    rows: Sequence[tuple[int, dt.datetime | None]], conf: MailapiSettings, now: dt.datetime
) -> None:
    """After commit, given (pk, send_at) pairs: a task for the rows due now; for
    scheduled ones, a delayed task per send time when the wait is short enough
    (MAX_ETA_SECONDS), else the sweeper's."""
    due = [pk for pk, send_at in rows if not send_at or send_at <= now]
    if due:
        dispatch(due, conf, len(due))
    later: dict[dt.datetime, list[int]] = {}
    for pk, send_at in rows:
        if send_at and send_at > now:
            later.setdefault(send_at, []).append(pk)
    for when, pks in later.items():
        schedule(pks, conf, (when - timezone.now()).total_seconds())


def _recipient_count(payload: Message) -> int:
    return len(payload["to"]) + len(payload["cc"]) + len(payload["bcc"])


#: Most emails in one Celery task, and in one of the backend's transactions. A worker
#: claims, reserves and records a task's emails in bulk and sends them in batches of
#: BATCH_SIZE where the provider has a batch endpoint: ten full batches here.
TASK_SIZE = 1000
#: Most API requests one task may take: an email that will travel in a batch of N counts
#: 1/N, one sent alone counts 1. A task of single sends therefore holds 100 emails, so its
#: leases are not held longer than that many requests take.
TASK_REQUESTS = 100
#: Most emails in a call's first task; each next task may hold twice as many.
FIRST_TASK_SIZE = 100


def task_chunks(
    parts: Sequence[tuple[str, Message]],
    provider_class: type[Provider],
    conf: MailapiSettings,
) -> Iterator[Sequence[tuple[str, Message]]]:
    """Split (org, payload) pairs into tasks of at most TASK_SIZE emails, TASK_REQUESTS
    requests (counted as the worker will send them: batches per org, in this order) and
    TASK_BYTES of payload (so a worker never holds more than that in memory for a task).

    The first task holds at most FIRST_TASK_SIZE emails and each next one at most twice
    the one before, so a worker starts on the first emails while the rest are written.
    A provider that overrides ``can_batch`` (not ``batchable``) is counted as sending
    every email alone, the safe side.
    """
    size = batch_size(provider_class, conf)
    judged = provider_class.can_batch is Provider.can_batch
    start, requests, most, total = 0, 0, FIRST_TASK_SIZE, 0
    filled: dict[str, int] = {}  # org -> emails in its batches so far, in this chunk
    for index, (org, payload) in enumerate(parts):
        batched = size > 1 and judged and provider_class.batchable(payload)
        cost = 1 if not batched or filled.get(org, 0) % size == 0 else 0
        weight = payload_bytes(payload)
        if index > start and (
            index - start >= most or requests + cost > TASK_REQUESTS or total + weight > TASK_BYTES
        ):
            yield parts[start:index]
            start, requests, filled, total = index, 0, {}, 0
            most = min(2 * most, TASK_SIZE)
            cost = 1
        requests += cost
        total += weight
        if batched:
            filled[org] = filled.get(org, 0) + 1
    if start < len(parts):
        yield parts[start:]
