"""The sandbox provider: a loopback HTTP server that speaks an email API's wire format.

It is what the demo and the test suite send to. It stores what it accepts, and it can be
told to misbehave, so retries, idempotency and rate limiting are tested against real
HTTP rather than a mock:

* ``<code>@fail.sandbox.test`` answers with that documented error (status and body);
  ``<code>+<status>@fail.sandbox.test`` picks one status of a code documented with several.
* ``flaky+N@<any domain>`` answers 500 for the first N requests carrying it (counted per
  idempotency key when one is sent, else per address), then succeeds.
* ``slow+MS@<any domain>`` waits MS milliseconds (at most 30 s) before answering.
* ``rate_limit`` (requests per second, sliding window per API key) answers 429 over it.
* ``fail_rate`` makes that fraction of sends answer 500 or drop the connection unanswered.
* ``schema`` (a JSON Schema, or the path of one) checks every email, sent alone or in a
  batch, as a real API spends time on each; one that fails answers the dialect's 422
  validation error. It needs the ``jsonschema`` package, imported only then.
* With ``webhook_url`` and ``webhook_secret``, every accepted email is followed by signed
  delivery events of the dialect's provider, posted to that (loopback) URL from a
  background thread: delivered by default, and what ``bounced@``, ``soft-bounced@``,
  ``complained@``, ``delayed@``, ``failed@``, ``suppressed@`` or ``silent@`` ask for
  (see ``webhooks.py``).

Other processes (the demo, a Celery worker under test) read and steer it over HTTP:
``GET /_sandbox/emails``, ``GET /_sandbox/stats``, ``POST /_sandbox/wait``,
``POST /_sandbox/reset``, ``GET|POST /_sandbox/config``, ``GET /_sandbox/webhooks`` (the
events posted) and ``GET /_sandbox/health``; these need no API key.

Standard library only (``jsonschema`` for the schema option alone), and no Django: the
server must start without settings.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import ipaddress
import json
import math
import random
import socket
import socketserver
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from os import PathLike
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from django_mailapi.sandbox.dialects import Dialect, DialectError, Problem, Reply, dialect_for
from django_mailapi.sandbox.webhooks import BUILDERS, WebhookSender, loopback_url

__all__ = ["FAIL_DOMAIN", "SandboxServer", "run"]

#: Recipients at this domain make the sandbox answer with the error named by the local part.
FAIL_DOMAIN = "fail.sandbox.test"
#: ``slow+MS@`` never waits longer than this.
MAX_SLOW_MS = 30_000
#: How long an idempotency key's first successful response is replayed.
IDEMPOTENCY_RETENTION = 24 * 60 * 60
#: Longest one ``POST /_sandbox/wait`` may block.
MAX_WAIT_SECONDS = 300.0
#: Idle keep-alive connections are closed after this many seconds.
IDLE_TIMEOUT = 60.0

_CONTROL_PREFIX = "/_sandbox"


class _Dropped:
    """Marker reply: close the connection without answering."""


_DROP = _Dropped()


# -- magic recipients -------------------------------------------------------------------


@dataclass
class _Magic:
    """What the magic addresses among one email's recipients ask for."""

    fail: tuple[str, int | None] | None = None
    flaky: list[tuple[str, int]] = field(default_factory=list)
    slow_ms: int = 0


def _scan_magic(addresses: list[str]) -> _Magic:
    magic = _Magic()
    for address in addresses:
        local, _, domain = address.lower().rpartition("@")
        parts = local.split("+")
        if domain == FAIL_DOMAIN:
            if magic.fail is None:
                status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
                magic.fail = (parts[0], status)
        elif len(parts) > 1 and parts[1].isdigit():
            if parts[0] == "flaky":
                magic.flaky.append((address.lower(), int(parts[1])))
            elif parts[0] == "slow":
                magic.slow_ms = max(magic.slow_ms, min(int(parts[1]), MAX_SLOW_MS))
    return magic


# -- state --------------------------------------------------------------------------------


@dataclass
class _Stats:
    requests: int = 0
    accepted: int = 0
    errors_by_status: dict[str, int] = field(default_factory=dict)
    rate_limited: int = 0
    replays: int = 0
    resets: int = 0
    slowed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "accepted": self.accepted,
            "errors_by_status": dict(self.errors_by_status),
            "rate_limited": self.rate_limited,
            "replays": self.replays,
            "resets": self.resets,
            "slowed": self.slowed,
        }


def _canonical(request: tuple[str, bool, object]) -> str:
    return json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass
class _IdempotencyEntry:
    #: SHA-256 of the request as sent: path, batch mode and body bytes.
    digest: str
    #: The parsed request, compared key-order-blind when a retry's bytes differ.
    request: tuple[str, bool, object]
    created_at: float
    #: None while the first request with this key is still being processed.
    reply: Reply | None = None

    def expired(self, now: float) -> bool:
        # A key still in progress never expires: its request has not answered yet.
        return self.reply is not None and now - self.created_at >= IDEMPOTENCY_RETENTION


@dataclass
class _Window:
    capacity: int
    seconds: float


def _window_for(rate: float) -> _Window:
    # A whole number of requests per window: 5/s is 5 per second, 0.5/s is 1 per 2 s.
    if rate >= 1:
        return _Window(int(rate), 1.0)
    return _Window(1, 1.0 / rate)


class _RateLimiter:
    """Sliding window of request times per API key. Callers hold the server's lock."""

    def __init__(self) -> None:
        self._hits: dict[str, deque[float]] = {}

    def clear(self) -> None:
        self._hits.clear()

    def _trimmed(self, key: str, window: _Window, now: float) -> deque[float]:
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - window.seconds:
            hits.popleft()
        return hits

    def hit(self, key: str, rate: float, now: float) -> tuple[bool, int, int, int]:
        """Record a request if it fits: (allowed, limit, remaining, reset seconds)."""
        window = _window_for(rate)
        hits = self._trimmed(key, window, now)
        allowed = len(hits) < window.capacity
        if allowed:
            hits.append(now)
        return (allowed, *self._state(hits, window, now))

    def peek(self, key: str, rate: float, now: float) -> tuple[int, int, int]:
        window = _window_for(rate)
        return self._state(self._trimmed(key, window, now), window, now)

    @staticmethod
    def _state(hits: deque[float], window: _Window, now: float) -> tuple[int, int, int]:
        reset = math.ceil(hits[0] + window.seconds - now) if hits else 0
        return window.capacity, window.capacity - len(hits), reset


# -- schema checks ------------------------------------------------------------------------


class _SchemaCheck:
    """Checks each email against a JSON Schema (``SandboxServer(schema=...)``).

    ``jsonschema`` is imported here, and only here: the sandbox runs without it unless
    a schema is asked for.
    """

    def __init__(self, schema: Mapping[str, Any] | str | PathLike[str]) -> None:
        try:
            import jsonschema
        except ImportError:
            raise ImportError(
                "The sandbox's schema option needs the jsonschema package "
                "(pip install jsonschema); the sandbox runs without it otherwise."
            ) from None
        if isinstance(schema, Mapping):
            document: Any = dict(schema)
            self.source = "<dict>"
        else:
            path = Path(schema)
            try:
                document = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as error:
                raise ValueError(f"The schema file {path} is not JSON: {error}") from None
            self.source = str(path)
        if not isinstance(document, dict):
            raise ValueError(f"The schema ({self.source}) must be a JSON object.")
        cls = jsonschema.validators.validator_for(document)
        try:
            cls.check_schema(document)
        except jsonschema.SchemaError as error:
            raise ValueError(
                f"The schema ({self.source}) is not a valid JSON Schema: {error.message}"
            ) from None
        self._validator = cls(document)
        self._best_match = jsonschema.exceptions.best_match

    def problem(self, payload: object) -> str | None:
        """What is wrong with ``payload`` (one message, the most relevant), or None."""
        error = self._best_match(self._validator.iter_errors(payload))
        if error is None:
            return None
        where = "".join(
            f"[{part}]" if isinstance(part, int) else f".{part}" for part in error.absolute_path
        )
        return f"`{where.lstrip('.') or '(the email)'}` does not match the schema: {error.message}"


# -- the server --------------------------------------------------------------------------


def _loopback_host(host: str) -> str:
    if host == "localhost":
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        address = None
    if address is None or not address.is_loopback:
        raise ValueError(
            f"The sandbox provider binds loopback addresses only (127.0.0.1, ::1, "
            f"localhost); refusing {host!r}."
        )
    return str(address)


class SandboxServer:
    """An in-memory fake email API on loopback, served from a daemon thread.

    >>> with SandboxServer() as sandbox:
    ...     requests.post(f"{sandbox.url}/emails", ...)
    ...     sandbox.emails[0]["payload"]["subject"]

    ``rate_limit`` (requests per second per API key, ``None`` for no limit) and
    ``fail_rate`` (0.0 to 1.0) can be changed while it runs, by attribute or through
    ``POST /_sandbox/config``. ``seed`` makes fault injection repeatable. With ``api_key``
    set, any other bearer key is refused with 403; without it, any key is accepted.
    ``schema`` (a JSON Schema as a dict, or a path to one) checks every email the way a
    real API validates what it receives; it needs ``jsonschema``.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        rate_limit: float | None = None,
        fail_rate: float = 0.0,
        seed: int | None = None,
        api_key: str | None = None,
        dialect: Dialect | None = None,
        provider: str | None = None,
        verbose: bool = False,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        schema: Mapping[str, Any] | str | PathLike[str] | None = None,
    ) -> None:
        self.host = _loopback_host(host)
        self._schema = _SchemaCheck(schema) if schema is not None else None
        self.port = port
        self.seed = seed
        self.api_key = api_key
        # ``provider`` names a built-in dialect ("resend", "sendr", ...); ``dialect`` wins.
        self.dialect: Dialect = dialect if dialect is not None else dialect_for(provider)
        self.verbose = verbose
        self.rate_limit = rate_limit
        self.fail_rate = fail_rate

        self._lock = threading.Lock()
        #: Notified whenever emails are stored (and on reset and stop).
        self._arrived = threading.Condition(self._lock)
        self._emails: list[dict[str, Any]] = []
        self._stats = _Stats()
        self._idempotency: dict[tuple[str, str], _IdempotencyEntry] = {}
        self._flaky_counts: dict[tuple[str, ...], int] = {}
        self._limiter = _RateLimiter()
        self._rng = random.Random(seed)
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._sender: WebhookSender | None = None
        self.webhook_url = webhook_url
        self.webhook_secret = webhook_secret

    # -- knobs ----------------------------------------------------------------------

    @property
    def rate_limit(self) -> float | None:
        return self._rate_limit

    @rate_limit.setter
    def rate_limit(self, value: float | None) -> None:
        if value is not None and (isinstance(value, bool) or not value > 0):
            raise ValueError(f"rate_limit must be a positive number or None, not {value!r}")
        self._rate_limit = None if value is None else float(value)

    @property
    def fail_rate(self) -> float:
        return self._fail_rate

    @fail_rate.setter
    def fail_rate(self, value: float) -> None:
        if isinstance(value, bool) or not 0.0 <= value <= 1.0:
            raise ValueError(f"fail_rate must be between 0.0 and 1.0, not {value!r}")
        self._fail_rate = float(value)

    @property
    def webhook_url(self) -> str | None:
        """Where delivery events are posted (loopback only); None = no events."""
        return self._webhook_url

    @webhook_url.setter
    def webhook_url(self, value: str | None) -> None:
        self._webhook_url = loopback_url(value) if value else None

    # -- delivery events ------------------------------------------------------------

    @property
    def webhook_log(self) -> list[dict[str, Any]]:
        """Every delivery event posted (or given up on), oldest first: ``{"event_id",
        "type", "email_id", "recipient", "status" (the answer's, None when none came),
        "attempts"}``."""
        return self._sender.log if self._sender is not None else []

    def wait_for_webhooks(self, timeout: float = 30.0) -> bool:
        """Block until every event due so far has been posted (or given up on)."""
        return self._sender.wait_idle(timeout) if self._sender is not None else True

    def _post_events(self, records: list[dict[str, Any]]) -> None:
        url, secret = self.webhook_url, self.webhook_secret
        builder = BUILDERS.get(self.dialect.name)
        if not url or not secret or builder is None:
            return
        with self._lock:
            sender = self._sender
            if sender is None or (sender.url, sender.secret) != (url, secret):
                if sender is not None:
                    sender.stop()
                sender = self._sender = WebhookSender(url, secret)
        events = [
            event
            for record in records
            for recipient in self.dialect.recipients(record["payload"])
            for event in builder(record["id"], record["payload"], recipient)
        ]
        sender.post(events)

    # -- lifecycle ------------------------------------------------------------------

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> SandboxServer:
        """Bind (port 0 picks a free port) and serve from a daemon thread."""
        if self._httpd is not None:
            raise RuntimeError("This sandbox server is already started.")
        self._stopping.clear()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self._httpd = _HTTPServer((self.host, self.port), self, family)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},  # also how long stop() waits
            name=f"mailapi-sandbox-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close open connections and wake any ``slow+`` sleepers."""
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        self._stopping.set()
        with self._arrived:
            self._arrived.notify_all()
        httpd.shutdown()
        httpd.server_close()
        httpd.close_connections()
        if thread is not None:
            thread.join(timeout=5)
        self._httpd = None
        self._thread = None
        if self._sender is not None:
            self._sender.stop()
            self._sender = None

    def serve_forever(self) -> None:
        """Start if needed, then block until :meth:`stop` or Ctrl-C."""
        if self._httpd is None:
            self.start()
        thread = self._thread
        try:
            while thread is not None and thread.is_alive():
                thread.join(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- store ----------------------------------------------------------------------

    @property
    def emails(self) -> list[dict[str, Any]]:
        """A copy of every stored email, oldest first.

        Each is ``{"id", "idempotency_key", "received_at" (ISO 8601, UTC), "payload",
        "headers" (the request's, names in lower case, without Authorization), "batch"}``.
        """
        with self._lock:
            return copy.deepcopy(self._emails)

    @property
    def stats(self) -> dict[str, Any]:
        """A copy of the counters.

        ``requests`` (API requests, control endpoints excluded), ``accepted`` (emails
        stored), ``errors_by_status`` (status as a string, like the JSON endpoint, to a
        count), ``rate_limited`` (429s sent by the rate limiter), ``replays`` (idempotent
        replays), ``resets`` (connections dropped by fault injection) and ``slowed``
        (requests that waited for a ``slow+`` address).
        """
        with self._lock:
            return self._stats.as_dict()

    def config(self) -> dict[str, Any]:
        return {"rate_limit": self.rate_limit, "fail_rate": self.fail_rate}

    def wait_for(self, accepted: int, timeout: float) -> tuple[bool, dict[str, Any]]:
        """Block until the sandbox holds ``accepted`` emails or ``timeout`` seconds pass.

        Returns whether it got there, and the counters at that moment. Waiting this way
        answers the moment the last email is stored, where polling ``stats`` would add
        its interval and load the machine it measures.
        """
        with self._arrived:
            reached = self._arrived.wait_for(
                lambda: self._stats.accepted >= accepted or self._stopping.is_set(),
                timeout=max(0.0, timeout),
            )
            return bool(reached) and self._stats.accepted >= accepted, self._stats.as_dict()

    def reset(self) -> None:
        """Forget stored emails, counters, idempotency keys, flaky counts and rate windows."""
        with self._lock:
            self._emails.clear()
            self._stats = _Stats()
            self._idempotency.clear()
            self._flaky_counts.clear()
            self._limiter.clear()
            self._rng = random.Random(self.seed)
            self._arrived.notify_all()
            if self._sender is not None:
                self._sender.clear()

    # -- request handling (called from handler threads) -----------------------------

    def respond(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> Reply | _Dropped:
        """Answer one request. ``headers`` has lower-case names."""
        if path == _CONTROL_PREFIX or path.startswith(_CONTROL_PREFIX + "/"):
            return self._control(method, path, body)

        with self._lock:
            self._stats.requests += 1
        outcome = self._api(method, path, headers, body)
        if isinstance(outcome, _Dropped):
            with self._lock:
                self._stats.resets += 1
            return outcome

        if not outcome.ok:
            with self._lock:
                key = str(outcome.status)
                errors = self._stats.errors_by_status
                errors[key] = errors.get(key, 0) + 1
        if outcome.status == 429 and "retry-after" not in outcome.headers:
            outcome.headers.update(self._advertised_429_headers())
        elif self.rate_limit is not None and "ratelimit-limit" not in outcome.headers:
            # Answers given before (or without) authenticating still show the window.
            try:
                api_key = self.dialect.authenticate(headers, None)
            except DialectError:
                api_key = ""
            outcome.headers.update(self._peek_rate_headers(api_key))
        return outcome

    def _api(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> Reply | _Dropped:
        dialect = self.dialect
        if path not in (dialect.send_path, dialect.batch_path):
            return dialect.problem(Problem.NOT_FOUND)
        if method != "POST":
            not_allowed = dialect.problem(Problem.METHOD_NOT_ALLOWED)
            not_allowed.headers["allow"] = "POST"
            return not_allowed

        # Faults come first, as from a load balancer in front of the API: nothing is stored.
        fault = self._roll_fault()
        if fault == "drop":
            return _DROP
        if fault == "error":
            return dialect.problem(Problem.INTERNAL_ERROR)

        try:
            api_key = dialect.authenticate(headers, self.api_key)
            limited = self._rate_limit_hit(api_key)
            if limited is not None:
                return limited
            rate_headers = self._peek_rate_headers(api_key)
            idempotency_key = dialect.idempotency_key(headers)
            permissive = dialect.batch_permissive(headers) if path == dialect.batch_path else False
        except DialectError as error:
            return error.reply

        if not body.strip():
            return dialect.problem(Problem.INVALID_JSON, "The request body is empty.")
        try:
            data = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return dialect.problem(Problem.INVALID_JSON)

        claim = self._claim_idempotency(api_key, idempotency_key, (path, permissive, data), body)
        if isinstance(claim, Reply):
            return claim
        reply: Reply | None = None
        try:
            reply = self._send(
                _SendContext(api_key, idempotency_key, dict(headers)),
                data,
                batch=path == dialect.batch_path,
                permissive=permissive,
            )
        finally:
            self._settle_idempotency(claim, reply)
        reply.headers.update(rate_headers)
        return reply

    def _send(self, context: _SendContext, data: object, *, batch: bool, permissive: bool) -> Reply:
        try:
            if batch:
                return self._send_batch(context, data, permissive=permissive)
            return self._send_one(context, data)
        except DialectError as error:
            return error.reply

    def _send_one(self, context: _SendContext, data: object) -> Reply:
        payload = self._validate(data, in_batch=False)
        magic = _scan_magic(self.dialect.recipients(payload))
        self._sleep(magic.slow_ms)
        if magic.fail is not None:
            return self.dialect.catalog_error(*magic.fail)
        if self._still_flaky(context, [magic]):
            return self.dialect.problem(Problem.FLAKY)
        (email_id,) = self._store(context, [payload], batch=False)
        return self.dialect.sent(email_id, payload)

    def _send_batch(self, context: _SendContext, data: object, *, permissive: bool) -> Reply:
        dialect = self.dialect
        items = dialect.split_batch(data)
        accepted: list[tuple[int, dict[str, Any]]] = []
        failed: list[tuple[int, Reply]] = []
        magics: list[_Magic] = []
        for index, item in enumerate(items):
            try:
                payload = self._validate(item, in_batch=True)
            except DialectError as error:
                failed.append((index, error.reply))
                continue
            magic = _scan_magic(dialect.recipients(payload))
            magics.append(magic)
            if magic.fail is not None:
                failed.append((index, dialect.catalog_error(*magic.fail)))
            else:
                accepted.append((index, payload))

        self._sleep(max((magic.slow_ms for magic in magics), default=0))
        if failed and not permissive:
            return failed[0][1]
        # A flaky address is a server-side hiccup: it fails the whole request, not an item.
        if self._still_flaky(context, magics):
            return dialect.problem(Problem.FLAKY)
        email_ids = self._store(context, [payload for _, payload in accepted], batch=True)
        errors = [(index, dialect.error_message(reply)) for index, reply in failed]
        return dialect.batch_sent(email_ids, errors, permissive=permissive)

    # -- pieces -------------------------------------------------------------------------

    def _validate(self, payload: object, *, in_batch: bool) -> dict[str, Any]:
        """The dialect's own checks (its documented error codes), then the schema's."""
        checked = self.dialect.validate_email(payload, in_batch=in_batch)
        if self._schema is not None:
            problem = self._schema.problem(payload)
            if problem is not None:
                raise DialectError(self.dialect.problem(Problem.INVALID_REQUEST, problem))
        return checked

    def _roll_fault(self) -> str | None:
        if self.fail_rate <= 0:
            return None
        with self._lock:
            if self._rng.random() >= self.fail_rate:
                return None
            return "error" if self._rng.random() < 0.5 else "drop"

    def _rate_limit_hit(self, api_key: str) -> Reply | None:
        rate = self.rate_limit
        if rate is None:
            return None
        with self._lock:
            allowed, limit, remaining, reset = self._limiter.hit(api_key, rate, time.monotonic())
            if allowed:
                return None
            self._stats.rate_limited += 1
        reply = self.dialect.problem(Problem.RATE_LIMITED)
        reset = max(reset, 1)
        reply.headers.update(self.dialect.rate_limit_headers(limit, remaining, reset, reset))
        return reply

    def _peek_rate_headers(self, api_key: str) -> dict[str, str]:
        rate = self.rate_limit
        if rate is None:
            return {}
        with self._lock:
            limit, remaining, reset = self._limiter.peek(api_key, rate, time.monotonic())
        return self.dialect.rate_limit_headers(limit, remaining, reset)

    def _advertised_429_headers(self) -> dict[str, str]:
        rate = self.rate_limit
        limit = _window_for(rate).capacity if rate else self.dialect.advertised_rate_limit
        return self.dialect.rate_limit_headers(limit, 0, 1, retry_after=1)

    def _claim_idempotency(
        self,
        api_key: str,
        key: str | None,
        request: tuple[str, bool, object],
        body: bytes,
    ) -> tuple[str, str] | Reply | None:
        """Reserve ``key`` for this request, or the reply to give instead.

        ``request`` is (path, batch mode, parsed body). Returns the store key to settle
        afterwards, ``None`` when no key was sent, or a reply: the replayed first success,
        or a 409. A retry matches when its bytes are the same, or else when its JSON is
        the same with keys in any order.
        """
        if key is None:
            return None
        path, permissive, _data = request
        digest = hashlib.sha256(f"{path}\n{permissive}\n".encode() + body).hexdigest()
        store_key = (api_key, key)
        now = time.time()
        with self._lock:
            entry = self._idempotency.get(store_key)
            if entry is not None and entry.expired(now):
                entry = None
            if entry is None:
                self._idempotency[store_key] = _IdempotencyEntry(digest, request, now)
                return store_key
            if entry.digest != digest and _canonical(entry.request) != _canonical(request):
                return self.dialect.problem(Problem.IDEMPOTENCY_MISMATCH)
            if entry.reply is None:
                return self.dialect.problem(Problem.IDEMPOTENCY_IN_PROGRESS)
            self._stats.replays += 1
            return Reply(entry.reply.status, copy.deepcopy(entry.reply.body))

    def _settle_idempotency(self, claim: tuple[str, str] | None, reply: Reply | None) -> None:
        # Only a key's first success is kept for replay; after an error the key is free.
        if claim is None:
            return
        with self._lock:
            if reply is not None and reply.ok:
                entry = self._idempotency[claim]
                entry.reply = Reply(reply.status, copy.deepcopy(reply.body))
            else:
                self._idempotency.pop(claim, None)

    def _still_flaky(self, context: _SendContext, magics: list[_Magic]) -> bool:
        flaky = False
        with self._lock:
            for magic in magics:
                for address, failures in magic.flaky:
                    scope: tuple[str, ...] = (
                        (context.api_key, "key", context.idempotency_key, address)
                        if context.idempotency_key is not None
                        else (context.api_key, "address", address)
                    )
                    seen = self._flaky_counts.get(scope, 0)
                    self._flaky_counts[scope] = seen + 1
                    flaky = flaky or seen < failures
        return flaky

    def _sleep(self, milliseconds: int) -> None:
        if milliseconds <= 0:
            return
        with self._lock:
            self._stats.slowed += 1
        self._stopping.wait(milliseconds / 1000)

    def _store(
        self, context: _SendContext, payloads: list[dict[str, Any]], *, batch: bool
    ) -> list[str]:
        received_at = datetime.now(timezone.utc).isoformat()
        headers = {
            name: value
            for name, value in context.headers.items()
            if name.lower() != "authorization"
        }
        records: list[dict[str, Any]] = [
            {
                "id": f"{self.dialect.id_prefix}{uuid.uuid4()}",
                "idempotency_key": context.idempotency_key,
                "received_at": received_at,
                "payload": payload,  # parsed for this request alone; read out as copies
                "headers": dict(headers),
                "batch": batch,
            }
            for payload in payloads
        ]
        with self._lock:
            self._emails.extend(records)
            self._stats.accepted += len(records)
            self._arrived.notify_all()
        self._post_events(records)
        return [record["id"] for record in records]

    # -- control endpoints ----------------------------------------------------------

    def _control(self, method: str, path: str, body: bytes) -> Reply:
        routes: dict[str, dict[str, Callable[[bytes], Reply]]] = {
            "/_sandbox/emails": {"GET": lambda _: Reply(200, {"emails": self.emails})},
            "/_sandbox/stats": {"GET": lambda _: Reply(200, self.stats)},
            "/_sandbox/reset": {"POST": self._control_reset},
            "/_sandbox/wait": {"POST": self._control_wait},
            "/_sandbox/config": {
                "GET": lambda _: Reply(200, self.config()),
                "POST": self._control_config,
            },
            "/_sandbox/health": {"GET": lambda _: Reply(200, {"ok": True})},
            "/_sandbox/webhooks": {"GET": lambda _: Reply(200, {"events": self.webhook_log})},
        }
        handlers = routes.get(path)
        if handlers is None:
            return self.dialect.problem(Problem.NOT_FOUND)
        handler = handlers.get(method)
        if handler is None:
            reply = self.dialect.problem(Problem.METHOD_NOT_ALLOWED)
            reply.headers["allow"] = ", ".join(handlers)
            return reply
        return handler(body)

    def _control_reset(self, body: bytes) -> Reply:
        self.reset()
        return Reply(200, {"ok": True})

    def _control_wait(self, body: bytes) -> Reply:
        try:
            ask = json.loads(body.decode("utf-8")) if body else {}
        except (UnicodeDecodeError, json.JSONDecodeError):
            return self.dialect.problem(Problem.INVALID_JSON)
        accepted = ask.get("accepted") if isinstance(ask, dict) else None
        timeout = ask.get("timeout", 30) if isinstance(ask, dict) else None
        if (
            not isinstance(accepted, int)
            or isinstance(accepted, bool)
            or accepted < 0
            or not isinstance(timeout, (int, float))
            or isinstance(timeout, bool)
            or not 0 <= timeout <= MAX_WAIT_SECONDS
        ):
            return self.dialect.problem(
                Problem.INVALID_REQUEST,
                "The wait body must be a JSON object with `accepted` (a count of 0 or more) "
                f"and optionally `timeout` (0 to {MAX_WAIT_SECONDS:.0f} seconds, default 30).",
            )
        reached, stats = self.wait_for(accepted, float(timeout))
        return Reply(200, {"reached": reached, **stats})

    def _control_config(self, body: bytes) -> Reply:
        try:
            changes = json.loads(body.decode("utf-8")) if body else {}
        except (UnicodeDecodeError, json.JSONDecodeError):
            return self.dialect.problem(Problem.INVALID_JSON)
        if not isinstance(changes, dict) or set(changes) - {"rate_limit", "fail_rate"}:
            return self.dialect.problem(
                Problem.INVALID_REQUEST,
                "The config body must be a JSON object with `rate_limit` and/or `fail_rate`.",
            )
        previous = self.config()
        try:
            if "rate_limit" in changes:
                self.rate_limit = changes["rate_limit"]
            if "fail_rate" in changes:
                self.fail_rate = changes["fail_rate"]
        except (TypeError, ValueError) as error:
            self.rate_limit, self.fail_rate = previous["rate_limit"], previous["fail_rate"]
            return self.dialect.problem(Problem.INVALID_REQUEST, str(error))
        return Reply(200, self.config())


@dataclass
class _SendContext:
    api_key: str
    idempotency_key: str | None
    headers: dict[str, str]


# -- HTTP plumbing --------------------------------------------------------------------


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], sandbox: SandboxServer, family: int) -> None:
        self.address_family = family
        self.sandbox = sandbox
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the FQDN of the host, which can stall on DNS.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def track(self, connection: socket.socket, open_: bool) -> None:
        with self._connections_lock:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up (timeouts, dropped keep-alives) is not the server's error.
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; without TCP_NODELAY the body would wait
    # for the client's delayed ACK (about 40 ms on Linux loopback) on every request.
    disable_nagle_algorithm = True
    server_version = "mailapi-sandbox"
    timeout = IDLE_TIMEOUT
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.sandbox.verbose:
            super().log_message(format, *args)

    def _dispatch(self) -> None:
        sandbox = self.server.sandbox
        try:
            body = self._read_body()
        except ValueError as error:
            self.close_connection = True
            self._write(sandbox.dialect.problem(Problem.INVALID_JSON, str(error)))
            return
        path = urlsplit(self.path).path.rstrip("/") or "/"
        headers = {name.lower(): value for name, value in self.headers.items()}
        outcome = sandbox.respond(self.command, path, headers, body)
        if isinstance(outcome, _Dropped):
            # Read the whole request, then hang up without a word.
            self.close_connection = True
            return
        self._write(outcome)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            return b""
        try:
            length = int(length_header)
        except ValueError:
            raise ValueError("The Content-Length header is not a number.") from None
        if length < 0:
            raise ValueError("The Content-Length header is negative.")
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            line = self.rfile.readline(65537).split(b";", 1)[0].strip()
            try:
                size = int(line, 16)
            except ValueError:
                raise ValueError("Malformed chunked request body.") from None
            if size == 0:
                while self.rfile.readline(65537).strip():  # trailers
                    pass
                return b"".join(chunks)
            chunks.append(self.rfile.read(size))
            self.rfile.readline(65537)  # the CRLF after each chunk

    def _write(self, reply: Reply) -> None:
        payload = b"" if reply.body is None else json.dumps(reply.body).encode("utf-8")
        self.send_response(reply.status)
        if reply.body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)


# -- command line -------------------------------------------------------------------------


def _print_line(line: str) -> None:
    print(line, flush=True)


def run(
    host: str = "127.0.0.1",
    port: int = 8025,
    *,
    rate_limit: float | None = None,
    fail_rate: float = 0.0,
    seed: int | None = None,
    api_key: str | None = None,
    verbose: bool = False,
    announce: Callable[[str], None] = _print_line,
    provider: str = "resend",
    webhook_url: str | None = None,
    webhook_secret: str | None = None,
    schema: str | None = None,
) -> None:
    """Serve until Ctrl-C, announcing the URL in one line (the CLI and the command)."""
    sandbox = SandboxServer(
        host,
        port,
        rate_limit=rate_limit,
        fail_rate=fail_rate,
        seed=seed,
        api_key=api_key,
        provider=provider,
        verbose=verbose,
        webhook_url=webhook_url,
        webhook_secret=webhook_secret,
        schema=schema,
    ).start()
    announce(f"Sandbox provider ({sandbox.dialect.name}) listening on {sandbox.url}")
    if schema is not None:
        announce(f"Every email is checked against the schema in {schema}")
    if sandbox.webhook_url:
        announce(f"Delivery events go to {sandbox.webhook_url}")
    sandbox.serve_forever()
