"""Wire dialects of the sandbox provider.

The server (``server.py``) owns everything that is the same for every API: HTTP framing,
keep-alive, rate limiting, fault injection, idempotency bookkeeping, the magic recipient
addresses and the in-memory store. A dialect owns what one API says on the wire: its
paths, how a client authenticates, how a send request is validated, and the shape of its
success and error bodies.

To teach the sandbox another API, write a class with the same attributes and methods as
:class:`ResendDialect` and pass an instance as ``SandboxServer(dialect=...)``. Validation
methods raise :class:`DialectError` carrying the finished :class:`Reply`; the server never
builds a body itself, it asks the dialect through :meth:`ResendDialect.problem`.

Plain Python on purpose: no Django import anywhere in this package's server side.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Any, Protocol

from django_mailapi.errors.base import Catalog
from django_mailapi.errors.emitlo import CATALOG as EMITLO_CATALOG
from django_mailapi.errors.generic import CATALOG as GENERIC_CATALOG
from django_mailapi.errors.resend import CATALOG as RESEND_CATALOG
from django_mailapi.errors.sendr import CATALOG as SENDR_CATALOG

__all__ = [
    "DIALECTS",
    "Dialect",
    "DialectError",
    "EmitloDialect",
    "GenericDialect",
    "Problem",
    "Reply",
    "ResendDialect",
    "SendrDialect",
    "dialect_for",
    "parse_address",
]


@dataclass
class Reply:
    """One HTTP answer: status, a JSON-able body (``None`` for no body) and extra headers."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class DialectError(Exception):
    """Raised by a dialect when a request must be answered with an error reply."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.status, reply.body)
        self.reply = reply


class Problem(Enum):
    """The situations the server itself detects; each dialect words them its own way."""

    MISSING_API_KEY = "missing_api_key"
    INVALID_API_KEY = "invalid_api_key"
    MISSING_USER_AGENT = "missing_user_agent"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    INVALID_JSON = "invalid_json"
    INVALID_REQUEST = "invalid_request"
    RATE_LIMITED = "rate_limited"
    #: Fault injection (``fail_rate``): the provider fell over.
    INTERNAL_ERROR = "internal_error"
    #: ``flaky+N@`` recipients: a transient failure that goes away on retry.
    FLAKY = "flaky"
    INVALID_IDEMPOTENCY_KEY = "invalid_idempotency_key"
    IDEMPOTENCY_MISMATCH = "idempotency_mismatch"
    IDEMPOTENCY_IN_PROGRESS = "idempotency_in_progress"
    UNKNOWN_MAGIC_CODE = "unknown_magic_code"


class Dialect(Protocol):
    """What the server asks of a wire dialect. :class:`ResendDialect` is the example.

    ``headers`` arguments always have lower-case names. Methods that check a request
    raise :class:`DialectError` with the reply to send.
    """

    #: Short name shown in the start-up line, e.g. ``"resend"``.
    name: str
    #: Path of the single-send and batch endpoints (the only API paths served).
    send_path: str
    batch_path: str
    #: Advertised in ``ratelimit-limit`` on 429s the sandbox did not rate limit itself.
    advertised_rate_limit: int
    #: Put before the UUID of every email id the server makes up (``"em_"`` for Sendr).
    id_prefix: str

    def problem(self, problem: Problem, detail: str | None = None) -> Reply:
        """The error reply for a situation the server detected."""
        ...

    def catalog_error(self, code: str, status: int | None = None) -> Reply:
        """The documented error ``code`` (for ``<code>[+<status>]@fail.sandbox.test``)."""
        ...

    def error_message(self, reply: Reply) -> str:
        """The human message of an error reply (a permissive batch's per-item errors)."""
        ...

    def rate_limit_headers(
        self, limit: int, remaining: int, reset: int, retry_after: int | None = None
    ) -> dict[str, str]: ...

    def authenticate(self, headers: Mapping[str, str], expected_key: str | None) -> str:
        """The caller's API key; used to scope rate limits and idempotency keys."""
        ...

    def idempotency_key(self, headers: Mapping[str, str]) -> str | None: ...

    def batch_permissive(self, headers: Mapping[str, str]) -> bool: ...

    def split_batch(self, body: object) -> list[object]: ...

    def validate_email(self, payload: object, *, in_batch: bool = False) -> dict[str, Any]: ...

    def recipients(self, payload: Mapping[str, Any]) -> list[str]:
        """Every bare recipient address, so the server can spot the magic ones."""
        ...

    def sent(self, email_id: str, payload: Mapping[str, Any] | None = None) -> Reply:
        """The success reply for one stored email (``payload`` as validated)."""
        ...

    def batch_sent(
        self, email_ids: list[str], errors: list[tuple[int, str]], *, permissive: bool
    ) -> Reply: ...


# A bare address: something@something, no spaces or angle brackets. Deliberately loose:
# the sandbox checks the shape Resend documents, not RFC 5322.
_ADDR = r"[^\s<>@,;]+@[^\s<>@,;]+"
_BARE_RE = re.compile(rf"^(?P<addr>{_ADDR})$")
_NAMED_RE = re.compile(rf"^(?P<name>[^<>]*)<(?P<addr>{_ADDR})>$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_-]{1,256}$")

_ADDRESS_HINT = (
    "The email address needs to follow the `email@example.com` or "
    "`Name <email@example.com>` format."
)


def parse_address(value: object) -> str | None:
    """The bare address of ``addr`` or ``Name <addr>``; ``None`` if it is neither."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    match = _BARE_RE.match(text) or _NAMED_RE.match(text)
    return match.group("addr") if match else None


def _as_list(value: object) -> list[object]:
    if isinstance(value, list):
        return value
    return [value]


def _missing(value: object) -> bool:
    return value is None or value == "" or value == []


class ResendDialect:
    """Resend's wire format: ``POST /emails``, ``POST /emails/batch``, Resend error bodies.

    Error bodies are ``{"statusCode": 422, "name": "validation_error", "message": "..."}``;
    the messages come from the Resend error catalog unless the situation needs a more
    precise one (which field is missing, which address is malformed).
    """

    name = "resend"
    send_path = "/emails"
    batch_path = "/emails/batch"
    max_recipients = 50
    max_batch = 100
    max_idempotency_key = 256
    #: Prefix of the email ids the server makes up (Resend's ids are bare UUIDs).
    id_prefix = ""
    #: Resend's documented default rate (req/s); advertised on 429s when the sandbox
    #: itself does not rate limit (a magic ``rate_limit_exceeded@`` address).
    advertised_rate_limit = 5

    #: What each server-detected problem is called in Resend's error catalog.
    _PROBLEMS: Mapping[Problem, tuple[str, int]] = {
        Problem.MISSING_API_KEY: ("missing_api_key", 401),
        Problem.INVALID_API_KEY: ("invalid_api_key", 403),
        Problem.MISSING_USER_AGENT: ("validation_error", 403),
        Problem.NOT_FOUND: ("not_found", 404),
        Problem.METHOD_NOT_ALLOWED: ("method_not_allowed", 405),
        Problem.INVALID_JSON: ("validation_error", 400),
        Problem.INVALID_REQUEST: ("validation_error", 422),
        Problem.RATE_LIMITED: ("rate_limit_exceeded", 429),
        Problem.INTERNAL_ERROR: ("internal_server_error", 500),
        Problem.FLAKY: ("application_error", 500),
        Problem.INVALID_IDEMPOTENCY_KEY: ("invalid_idempotency_key", 400),
        Problem.IDEMPOTENCY_MISMATCH: ("invalid_idempotent_request", 409),
        Problem.IDEMPOTENCY_IN_PROGRESS: ("concurrent_idempotent_requests", 409),
        Problem.UNKNOWN_MAGIC_CODE: ("validation_error", 422),
    }

    #: Messages for problems whose catalog entry is about something else (the catalog's
    #: 403 validation_error is about unverified domains, not a missing User-Agent).
    _DEFAULT_DETAILS: Mapping[Problem, str] = {
        Problem.MISSING_USER_AGENT: (
            "API requests must include a `User-Agent` header. "
            "Set one identifying your application and try again."
        ),
        Problem.INVALID_JSON: "The request body must be valid JSON.",
        Problem.INVALID_REQUEST: "We found an error with one or more fields in the request.",
    }

    def __init__(self, catalog: Catalog | None = None) -> None:
        self.catalog = catalog if catalog is not None else RESEND_CATALOG

    # -- error bodies ---------------------------------------------------------------

    def error(self, code: str, status: int | None = None, message: str | None = None) -> Reply:
        """A Resend error reply; status and message default to the catalog's."""
        spec = self.catalog.get(code, status)
        if spec is not None and status is not None and spec.http_status != status:
            spec = None  # the code exists, but not at this status: don't borrow its text
        if status is None:
            status = spec.http_status if spec is not None and spec.http_status else 500
        if message is None:
            message = spec.message if spec is not None else code.replace("_", " ").capitalize()
        return Reply(status, {"statusCode": status, "name": code, "message": message})

    def problem(self, problem: Problem, detail: str | None = None) -> Reply:
        code, status = self._PROBLEMS[problem]
        return self.error(code, status, detail or self._DEFAULT_DETAILS.get(problem))

    def catalog_error(self, code: str, status: int | None = None) -> Reply:
        """The documented error ``code`` (at ``status``), for magic fail addresses.

        Unknown codes, statuses the code is not documented with, and codes documented
        without an HTTP status answer 422 ``validation_error`` saying so.
        """
        spec = self.catalog.get(code, status)
        if spec is None:
            return self.problem(
                Problem.UNKNOWN_MAGIC_CODE,
                f"The error code `{code}` is unknown to the sandbox ({self.name} catalog).",
            )
        if status is not None and spec.http_status != status:
            return self.problem(
                Problem.UNKNOWN_MAGIC_CODE,
                f"The error code `{code}` is not documented with HTTP status {status}.",
            )
        if spec.http_status is None:
            return self.problem(
                Problem.UNKNOWN_MAGIC_CODE,
                f"The error code `{code}` has no HTTP status, so the sandbox cannot answer it.",
            )
        return self.error(spec.code, spec.http_status, spec.message)

    def error_message(self, reply: Reply) -> str:
        """The human message of an error reply, for a permissive batch's ``errors`` list."""
        message = reply.body.get("message") if isinstance(reply.body, dict) else None
        return message if isinstance(message, str) else f"HTTP {reply.status}"

    def rate_limit_headers(
        self, limit: int, remaining: int, reset: int, retry_after: int | None = None
    ) -> dict[str, str]:
        headers = {
            "ratelimit-limit": str(limit),
            "ratelimit-remaining": str(max(remaining, 0)),
            "ratelimit-reset": str(max(reset, 0)),
        }
        if retry_after is not None:
            headers["retry-after"] = str(retry_after)
        return headers

    # -- request headers ------------------------------------------------------------

    def authenticate(self, headers: Mapping[str, str], expected_key: str | None) -> str:
        """The caller's API key; raises for a missing or wrong key or a missing User-Agent.

        ``headers`` has lower-case names.
        """
        auth = headers.get("authorization", "").strip()
        scheme, _, key = auth.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise DialectError(self.problem(Problem.MISSING_API_KEY))
        if not headers.get("user-agent", "").strip():
            raise DialectError(self.problem(Problem.MISSING_USER_AGENT))
        if expected_key is not None and key != expected_key:
            raise DialectError(self.problem(Problem.INVALID_API_KEY))
        return key

    def idempotency_key(self, headers: Mapping[str, str]) -> str | None:
        if "idempotency-key" not in headers:
            return None
        key = headers["idempotency-key"]
        if not 1 <= len(key) <= self.max_idempotency_key:
            raise DialectError(self.problem(Problem.INVALID_IDEMPOTENCY_KEY))
        return key

    def batch_permissive(self, headers: Mapping[str, str]) -> bool:
        mode = headers.get("x-batch-validation", "strict").strip().lower() or "strict"
        if mode not in ("strict", "permissive"):
            raise DialectError(
                self.problem(
                    Problem.INVALID_REQUEST,
                    "The `x-batch-validation` header must be `strict` or `permissive`.",
                )
            )
        return mode == "permissive"

    # -- bodies ---------------------------------------------------------------------

    def split_batch(self, body: object) -> list[object]:
        """The items of a batch body; raises if it is not a list of 1..max_batch items."""
        if not isinstance(body, list):
            raise DialectError(
                self.problem(Problem.INVALID_REQUEST, "The batch body must be a JSON array.")
            )
        if not body:
            raise DialectError(
                self.problem(Problem.INVALID_REQUEST, "The batch must contain at least one email.")
            )
        if len(body) > self.max_batch:
            raise DialectError(
                self.problem(
                    Problem.INVALID_REQUEST,
                    f"Too many emails in the batch: {len(body)} given, "
                    f"at most {self.max_batch} are allowed.",
                )
            )
        return body

    def validate_email(self, payload: object, *, in_batch: bool = False) -> dict[str, Any]:
        """Check one send request as Resend does; return it, or raise DialectError."""
        if not isinstance(payload, dict):
            what = "Each email in a batch" if in_batch else "The request body"
            raise DialectError(
                self.problem(Problem.INVALID_REQUEST, f"{what} must be a JSON object.")
            )

        missing = [name for name in ("from", "to", "subject") if _missing(payload.get(name))]
        if missing:
            names = ", ".join(f"`{name}`" for name in missing)
            noun = "field" if len(missing) == 1 else "fields"
            raise DialectError(
                self.error("missing_required_field", 422, f"Missing {names} {noun}.")
            )

        if parse_address(payload["from"]) is None:
            raise DialectError(
                self.error("invalid_from_address", 422, f"Invalid `from` field. {_ADDRESS_HINT}")
            )

        for name in ("to", "cc", "bcc", "reply_to"):
            if name in payload and payload[name] is not None:
                self._check_addresses(name, payload[name])
        if len(_as_list(payload["to"])) > self.max_recipients:
            raise DialectError(
                self._invalid(
                    f"Too many recipients in the `to` field: at most {self.max_recipients} "
                    "are allowed."
                )
            )

        if not isinstance(payload["subject"], str):
            raise DialectError(self._invalid("The `subject` field must be a string."))
        for name in ("html", "text"):
            if payload.get(name) is not None and not isinstance(payload[name], str):
                raise DialectError(self._invalid(f"The `{name}` field must be a string."))
        if payload.get("headers") is not None and not isinstance(payload["headers"], dict):
            raise DialectError(self._invalid("The `headers` field must be an object."))
        self._check_tags(payload.get("tags"))

        if "attachments" in payload and payload["attachments"] is not None:
            if in_batch:
                raise DialectError(
                    self._invalid("The `attachments` field is not supported for batch emails.")
                )
            self._check_attachments(payload["attachments"])
        return payload

    def recipients(self, payload: Mapping[str, Any]) -> list[str]:
        """Every bare address in ``to``, ``cc`` and ``bcc``, in that order."""
        found: list[str] = []
        for name in ("to", "cc", "bcc"):
            for value in _as_list(payload.get(name)):
                address = parse_address(value)
                if address is not None:
                    found.append(address)
        return found

    # -- success bodies -------------------------------------------------------------

    def sent(self, email_id: str, payload: Mapping[str, Any] | None = None) -> Reply:
        return Reply(200, {"id": email_id})

    def batch_sent(
        self, email_ids: list[str], errors: list[tuple[int, str]], *, permissive: bool
    ) -> Reply:
        body: dict[str, Any] = {"data": [{"id": email_id} for email_id in email_ids]}
        if permissive:
            body["errors"] = [{"index": index, "message": message} for index, message in errors]
        return Reply(200, body)

    # -- helpers --------------------------------------------------------------------

    def _invalid(self, message: str) -> Reply:
        return self.problem(Problem.INVALID_REQUEST, message)

    def _check_addresses(self, name: str, value: object) -> None:
        for item in _as_list(value):
            if parse_address(item) is None:
                raise DialectError(self._invalid(f"Invalid `{name}` field. {_ADDRESS_HINT}"))

    def _check_tags(self, tags: object) -> None:
        if tags is None:
            return
        message = (
            "Invalid `tags` field. Tags are a list of `{name, value}` objects whose name and "
            "value use only ASCII letters, numbers, underscores or dashes (at most 256 chars)."
        )
        if not isinstance(tags, list):
            raise DialectError(self._invalid(message))
        for tag in tags:
            if not isinstance(tag, dict) or not _TAG_RE.match(str(tag.get("name", ""))):
                raise DialectError(self._invalid(message))
            value = tag.get("value")
            if value is not None and not _TAG_RE.match(str(value)):
                raise DialectError(self._invalid(message))

    def _check_attachments(self, attachments: object) -> None:
        if not isinstance(attachments, list):
            raise DialectError(self._invalid("The `attachments` field must be a list."))
        for attachment in attachments:
            if not isinstance(attachment, dict) or (
                _missing(attachment.get("content")) and _missing(attachment.get("path"))
            ):
                raise DialectError(self.error("invalid_attachment", 422))


# -- the other built-in APIs ----------------------------------------------------------------


def _bearer(headers: Mapping[str, str]) -> str | None:
    scheme, _, key = headers.get("authorization", "").strip().partition(" ")
    key = key.strip()
    return key if scheme.lower() == "bearer" and key else None


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


class _EnvelopeDialect(ResendDialect):
    """Resend's request handling with another API's error envelope and wording.

    Subclasses set ``_PROBLEMS`` in their own catalog's codes, ``_RENAMED`` for the
    codes Resend's validation uses that their API calls something else, and write
    :meth:`envelope`. They do not insist on a User-Agent, which only Resend is said to.
    """

    _RENAMED: Mapping[str, str] = {}

    def envelope(self, status: int, code: str, message: str, details: Any) -> Reply:
        raise NotImplementedError

    def error(
        self,
        code: str,
        status: int | None = None,
        message: str | None = None,
        details: Any = None,
    ) -> Reply:
        code = self._RENAMED.get(code, code)
        plain = super().error(code, status, message)
        return self.envelope(plain.status, code, plain.body["message"], details)

    def authenticate(self, headers: Mapping[str, str], expected_key: str | None) -> str:
        key = _bearer(headers)
        if key is None:
            raise DialectError(self.problem(Problem.MISSING_API_KEY))
        if expected_key is not None and key != expected_key:
            raise DialectError(self.problem(Problem.INVALID_API_KEY))
        return key

    def error_message(self, reply: Reply) -> str:
        body: dict[str, Any] = reply.body if isinstance(reply.body, dict) else {}
        nested = body.get("error")
        inner: dict[str, Any] = nested if isinstance(nested, dict) else body
        message = inner.get("message")
        return message if isinstance(message, str) else f"HTTP {reply.status}"


class SendrDialect(_EnvelopeDialect):
    """Sendr: ``POST /emails`` and ``POST /emails/batch`` under the base URL.

    Requests are checked against the send-email schema of Sendr's OpenAPI spec
    (``to`` bare addresses, ``reply_to`` one string, ``X-*`` headers only, HTML 5 MB
    and text 1 MB). Errors use the flat envelope of Sendr's error page
    (``{"statusCode", "code", "message", "details"}``), or with ``envelope="nested"``
    the spec's ``{"error": {"code", "message", "details"}}``. A batch is
    ``{"emails": [...]}`` whose top-level ``from`` and ``subject`` fill in for items that
    lack them; it always answers item by item (``errors: [{index, error}]``).
    Idempotency keys come in the ``idempotency-key`` header. Email ids start ``em_``.
    """

    name = "sendr"
    send_path = "/emails"
    batch_path = "/emails/batch"
    max_to = 50
    max_batch = 100
    max_html = 5 * 1024 * 1024
    max_text = 1024 * 1024
    id_prefix = "em_"
    #: 100 requests per 10 seconds per key.
    advertised_rate_limit = 10

    _PROBLEMS: Mapping[Problem, tuple[str, int]] = {
        Problem.MISSING_API_KEY: ("unauthorized", 401),
        Problem.INVALID_API_KEY: ("unauthorized", 401),
        Problem.MISSING_USER_AGENT: ("unauthorized", 401),
        Problem.NOT_FOUND: ("not_found", 404),
        Problem.METHOD_NOT_ALLOWED: ("method_not_allowed", 405),
        Problem.INVALID_JSON: ("validation_error", 422),
        Problem.INVALID_REQUEST: ("validation_error", 422),
        Problem.RATE_LIMITED: ("rate_limited", 429),
        Problem.INTERNAL_ERROR: ("internal_error", 500),
        Problem.FLAKY: ("internal_error", 500),
        Problem.INVALID_IDEMPOTENCY_KEY: ("validation_error", 422),
        # Sendr documents no idempotency conflicts; these are the sandbox's wording.
        Problem.IDEMPOTENCY_MISMATCH: ("idempotency_key_reused", 409),
        Problem.IDEMPOTENCY_IN_PROGRESS: ("idempotency_key_in_use", 409),
        Problem.UNKNOWN_MAGIC_CODE: ("validation_error", 422),
    }
    _DEFAULT_DETAILS: Mapping[Problem, str] = {
        Problem.INVALID_JSON: "The request body must be valid JSON.",
        Problem.INVALID_REQUEST: "Request validation failed",
        Problem.INVALID_IDEMPOTENCY_KEY: "The idempotency-key header must be 1-256 characters.",
    }
    _RENAMED: Mapping[str, str] = {
        "missing_required_field": "validation_error",
        "invalid_from_address": "validation_error",
        "invalid_attachment": "validation_error",
    }

    def __init__(self, catalog: Catalog | None = None, *, envelope: str = "flat") -> None:
        if envelope not in ("flat", "nested"):
            raise ValueError(f"envelope must be 'flat' or 'nested', not {envelope!r}")
        super().__init__(catalog if catalog is not None else SENDR_CATALOG)
        self.envelope_style = envelope

    def envelope(self, status: int, code: str, message: str, details: Any) -> Reply:
        if self.envelope_style == "nested":
            inner: dict[str, Any] = {"code": code, "message": message}
            if details:
                inner["details"] = details
            return Reply(status, {"error": inner})
        return Reply(
            status,
            {"statusCode": status, "code": code, "message": message, "details": details or {}},
        )

    def batch_permissive(self, headers: Mapping[str, str]) -> bool:
        return True

    def split_batch(self, body: object) -> list[object]:
        emails = body.get("emails") if isinstance(body, dict) else None
        if not isinstance(emails, list) or not 1 <= len(emails) <= self.max_batch:
            raise DialectError(
                self._fields([("/emails", f"Expected an array of 1 to {self.max_batch} emails")])
            )
        assert isinstance(body, dict)
        defaults = {k: body[k] for k in ("from", "subject") if k in body}
        return [{**defaults, **item} if isinstance(item, dict) else item for item in emails]

    def validate_email(self, payload: object, *, in_batch: bool = False) -> dict[str, Any]:
        if not isinstance(payload, dict):
            raise DialectError(self._fields([("", "Expected object")]))
        problems: list[tuple[str, str]] = []
        if parse_address(payload.get("from")) is None:
            problems.append(("/from", "Expected 'Name <email@example.com>' or an email address"))
        to = payload.get("to")
        if _missing(to) or any(
            not isinstance(a, str) or not _BARE_RE.match(a) for a in _as_list(to)
        ):
            problems.append(("/to", "Expected email address or array of email addresses"))
        elif len(_as_list(to)) > self.max_to:
            problems.append(("/to", f"Expected at most {self.max_to} addresses"))
        for name in ("cc", "bcc"):
            if name in payload and any(parse_address(a) is None for a in _as_list(payload[name])):
                problems.append((f"/{name}", "Expected string or array of strings"))
        if "reply_to" in payload and parse_address(payload["reply_to"]) is None:
            problems.append(("/reply_to", "Expected string"))
        templated = "template_id" in payload
        subject = payload.get("subject")
        if not templated and (not isinstance(subject, str) or not subject):
            problems.append(("/subject", "Required"))
        for name, limit in (("html", self.max_html), ("text", self.max_text)):
            value = payload.get(name)
            if value is not None and (not isinstance(value, str) or len(value) > limit):
                problems.append((f"/{name}", f"Expected string of at most {limit} characters"))
        if not templated and payload.get("html") is None and payload.get("text") is None:
            problems.append(("/html", "Either html or text is required"))
        headers = payload.get("headers")
        if headers is not None:
            if in_batch:
                problems.append(("/headers", "Not allowed in a batch"))
            elif not isinstance(headers, dict):
                problems.append(("/headers", "Expected object"))
            else:
                for header, value in headers.items():
                    if not re.match(r"^X-[a-zA-Z0-9-]+$", header) or not isinstance(value, str):
                        problems.append((f"/headers/{header}", "Only X-* headers are accepted"))
        attachments = payload.get("attachments")
        if attachments is not None:
            if not isinstance(attachments, list):
                problems.append(("/attachments", "Expected array"))
            else:
                for i, item in enumerate(attachments):
                    for field_name in ("filename", "content"):
                        if not isinstance(item, dict) or not isinstance(item.get(field_name), str):
                            problems.append((f"/attachments/{i}/{field_name}", "Required"))
        if problems:
            raise DialectError(self._fields(problems))
        return payload

    def _fields(self, problems: list[tuple[str, str]]) -> Reply:
        details = {"errors": [{"path": path, "message": text} for path, text in problems]}
        return self.error("validation_error", 422, "Request validation failed", details)

    def sent(self, email_id: str, payload: Mapping[str, Any] | None = None) -> Reply:
        payload = payload or {}
        return Reply(
            200,
            {
                "id": email_id,
                "from": payload.get("from", ""),
                "to": [str(a) for a in _as_list(payload.get("to", []))],
                "subject": payload.get("subject", ""),
                "status": "queued",
                "created_at": _now_iso(),
            },
        )

    def batch_sent(
        self, email_ids: list[str], errors: list[tuple[int, str]], *, permissive: bool
    ) -> Reply:
        body: dict[str, Any] = {"data": [{"id": i, "status": "queued"} for i in email_ids]}
        if errors:
            body["errors"] = [{"index": index, "error": message} for index, message in errors]
        return Reply(200, body)


class GenericDialect(_EnvelopeDialect):
    """The generic API (seed 003): Resend's requests, its own error envelope.

    Errors are ``{"code", "message", "details", "request_id"}``, and the request id is
    also sent as ``X-Request-Id``. Everything else (paths, validation, batch, 24-hour
    idempotency keys) is Resend's, as the ``generic`` provider sends by default.
    """

    name = "generic"
    #: The seed page gives no rate; 10 is a placeholder for 429 headers.
    advertised_rate_limit = 10

    _PROBLEMS: Mapping[Problem, tuple[str, int]] = {
        Problem.MISSING_API_KEY: ("missing_api_key", 401),
        Problem.INVALID_API_KEY: ("invalid_api_key", 401),
        Problem.MISSING_USER_AGENT: ("invalid_request", 400),
        Problem.NOT_FOUND: ("resource_not_found", 404),
        Problem.METHOD_NOT_ALLOWED: ("method_not_allowed", 405),
        Problem.INVALID_JSON: ("invalid_request", 400),
        Problem.INVALID_REQUEST: ("validation_error", 422),
        Problem.RATE_LIMITED: ("rate_limit_exceeded", 429),
        Problem.INTERNAL_ERROR: ("internal_error", 500),
        Problem.FLAKY: ("service_unavailable", 503),
        Problem.INVALID_IDEMPOTENCY_KEY: ("invalid_request", 400),
        Problem.IDEMPOTENCY_MISMATCH: ("resource_conflict", 409),
        Problem.IDEMPOTENCY_IN_PROGRESS: ("resource_conflict", 409),
        Problem.UNKNOWN_MAGIC_CODE: ("validation_error", 422),
    }
    _DEFAULT_DETAILS: Mapping[Problem, str] = {
        Problem.INVALID_JSON: "Request is malformed or unparseable",
        Problem.INVALID_REQUEST: "One or more fields failed validation",
    }
    _RENAMED: Mapping[str, str] = {
        "invalid_from_address": "validation_error",
        "invalid_attachment": "validation_error",
    }

    def __init__(self, catalog: Catalog | None = None) -> None:
        super().__init__(catalog if catalog is not None else GENERIC_CATALOG)

    def envelope(self, status: int, code: str, message: str, details: Any) -> Reply:
        request_id = f"req_{uuid.uuid4().hex[:20]}"
        body = {
            "code": code,
            "message": message,
            "details": details if details is not None else [],
            "request_id": request_id,
        }
        return Reply(status, body, {"x-request-id": request_id})


class EmitloDialect(_EnvelopeDialect):
    """Emitlo: ``POST /messages``, one recipient per message, answers 202.

    The body is ``from_email``, ``from_name``, ``to_email``, ``to_name``, ``subject``
    (at most 998 characters), ``body`` (HTML), ``reply_to`` and ``attachments[{filename,
    content, content_type}]``. Errors are ``{"status": "error", "error": {"code",
    "message", "details"}}`` with upper-case codes and Laravel-style details
    (``{"field": ["problem", ...]}``); a magic address's code is matched without case
    (``validation_error@fail.sandbox.test`` answers ``VALIDATION_ERROR``). Emitlo
    documents no idempotency header, so keys are ignored and a repeated request is
    stored again; its batch endpoint is not modelled (404).
    """

    name = "emitlo"
    send_path = "/messages"
    batch_path = "/messages/batch"
    max_subject = 998
    max_filename = 255
    max_attachment = 10 * 1024 * 1024
    max_message = 25 * 1024 * 1024
    #: A per-minute limit in reality; 1 per second as a stand-in.
    advertised_rate_limit = 1

    _PROBLEMS: Mapping[Problem, tuple[str, int]] = {
        Problem.MISSING_API_KEY: ("UNAUTHENTICATED", 401),
        Problem.INVALID_API_KEY: ("UNAUTHENTICATED", 401),
        Problem.MISSING_USER_AGENT: ("UNAUTHENTICATED", 401),
        Problem.NOT_FOUND: ("NOT_FOUND", 404),
        Problem.METHOD_NOT_ALLOWED: ("METHOD_NOT_ALLOWED", 405),
        Problem.INVALID_JSON: ("VALIDATION_ERROR", 422),
        Problem.INVALID_REQUEST: ("VALIDATION_ERROR", 422),
        Problem.RATE_LIMITED: ("RATE_LIMITED", 429),
        Problem.INTERNAL_ERROR: ("INTERNAL_ERROR", 500),
        Problem.FLAKY: ("INTERNAL_ERROR", 500),
        Problem.INVALID_IDEMPOTENCY_KEY: ("VALIDATION_ERROR", 422),
        Problem.IDEMPOTENCY_MISMATCH: ("CONFLICT", 409),
        Problem.IDEMPOTENCY_IN_PROGRESS: ("CONFLICT", 409),
        Problem.UNKNOWN_MAGIC_CODE: ("VALIDATION_ERROR", 422),
    }
    _DEFAULT_DETAILS: Mapping[Problem, str] = {
        Problem.NOT_FOUND: "The requested resource does not exist.",
        Problem.INVALID_JSON: "The request body must be valid JSON.",
        Problem.INVALID_REQUEST: "The given data was invalid.",
    }

    def __init__(self, catalog: Catalog | None = None) -> None:
        super().__init__(catalog if catalog is not None else EMITLO_CATALOG)

    def envelope(self, status: int, code: str, message: str, details: Any) -> Reply:
        error: dict[str, Any] = {"code": code, "message": message}
        if details:
            error["details"] = details
        return Reply(status, {"status": "error", "error": error})

    def catalog_error(self, code: str, status: int | None = None) -> Reply:
        return super().catalog_error(code.upper(), status)

    def idempotency_key(self, headers: Mapping[str, str]) -> str | None:
        return None

    def batch_permissive(self, headers: Mapping[str, str]) -> bool:
        return False

    def split_batch(self, body: object) -> list[object]:
        raise DialectError(
            self.problem(Problem.NOT_FOUND, "The sandbox does not model Emitlo's batch endpoint.")
        )

    def validate_email(self, payload: object, *, in_batch: bool = False) -> dict[str, Any]:
        if not isinstance(payload, dict):
            raise DialectError(self._fields({"body": ["The request body must be an object."]}))
        problems: dict[str, list[str]] = {}

        def bad(field_name: str, text: str) -> None:
            problems.setdefault(field_name, []).append(text)

        for name in ("from_email", "to_email", "subject", "body"):
            if _missing(payload.get(name)):
                bad(name, f"The {name} field is required.")
        for name in ("from_email", "to_email", "reply_to"):
            value = payload.get(name)
            if not _missing(value) and (not isinstance(value, str) or not _BARE_RE.match(value)):
                bad(name, f"The {name} must be a valid email address.")
        subject = payload.get("subject")
        if isinstance(subject, str) and len(subject) > self.max_subject:
            bad("subject", f"The subject may not be greater than {self.max_subject} characters.")
        for name in ("subject", "body", "from_name", "to_name"):
            value = payload.get(name)
            if value is not None and not isinstance(value, str):
                bad(name, f"The {name} must be a string.")
        attachments = payload.get("attachments")
        total = len(str(payload.get("body") or "").encode("utf-8"))
        if attachments is not None and not isinstance(attachments, list):
            bad("attachments", "The attachments must be an array.")
        for i, item in enumerate(attachments if isinstance(attachments, list) else []):
            item = item if isinstance(item, dict) else {}
            for name in ("filename", "content", "content_type"):
                if _missing(item.get(name)) or not isinstance(item.get(name), str):
                    bad(f"attachments.{i}.{name}", f"The attachments.{i}.{name} field is required.")
            filename = item.get("filename")
            if isinstance(filename, str) and len(filename) > self.max_filename:
                bad(
                    f"attachments.{i}.filename",
                    f"The attachments.{i}.filename may not be greater than "
                    f"{self.max_filename} characters.",
                )
            size = len(str(item.get("content") or "")) * 3 // 4
            if size > self.max_attachment:
                raise DialectError(
                    self.error(
                        "ATTACHMENT_TOO_LARGE",
                        422,
                        f'Attachment "{filename}" exceeds the maximum size of 10 MB.',
                    )
                )
            total += size
        if problems:
            raise DialectError(self._fields(problems))
        if total > self.max_message:
            raise DialectError(self.error("MESSAGE_TOO_LARGE", 422))
        return payload

    def _fields(self, problems: dict[str, list[str]]) -> Reply:
        first = next(iter(problems.values()))[0]
        return self.error("VALIDATION_ERROR", 422, first, problems)

    def recipients(self, payload: Mapping[str, Any]) -> list[str]:
        address = parse_address(payload.get("to_email"))
        return [address] if address is not None else []

    def sent(self, email_id: str, payload: Mapping[str, Any] | None = None) -> Reply:
        return Reply(202, {"status": "success", "data": {"message_id": email_id}})


#: The dialect of each built-in provider, by provider name.
DIALECTS: dict[str, type[ResendDialect]] = {
    "resend": ResendDialect,
    "sendr": SendrDialect,
    "emitlo": EmitloDialect,
    "generic": GenericDialect,
}


def dialect_for(provider: str | None) -> Dialect:
    """A fresh dialect for a built-in provider name (``None`` means Resend)."""
    name = provider or "resend"
    try:
        return DIALECTS[name]()
    except KeyError:
        raise ValueError(f"The sandbox speaks {', '.join(DIALECTS)}; not {name!r}.") from None
