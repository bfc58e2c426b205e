"""Signed delivery events from the sandbox, as its dialect's provider would post them.

With a webhook URL and secret, the sandbox reports what "happened" to every email it
accepted, per recipient, chosen by the recipient's local part (before any ``+label``,
as Resend's test addresses ``delivered@resend.dev``, ``bounced@…`` work):

=========================================  ============================================
recipient                                  events posted
=========================================  ============================================
anything else                              delivered
``bounced@…`` (or ``bounce@…``)            a hard bounce
``soft-bounced@…`` (or ``soft-bounce@…``)  a soft bounce
``complained@…`` (or ``complain@…``)       delivered, then a spam complaint
``delayed@…``                              delivery delayed, then delivered
``failed@…``                               failed (Resend's ``email.failed``,
                                           ``reached_daily_quota``)
``suppressed@…``                           suppressed (Resend's ``email.suppressed``,
                                           ``previous_bounce``)
``silent@…``                               nothing
=========================================  ============================================

An event the dialect's provider does not have is left out: Sendr reports no delays,
failures or suppressions, Emitlo no failures or suppressions (its delay is
``deferred``). Signatures are each provider's: Svix headers and a ``whsec_`` secret for
Resend, a hex HMAC-SHA256 of the body for Sendr (``x-sendry-signature``) and Emitlo
(``X-Emitlo-Signature: sha256=…``, with ``X-Emitlo-Delivery-Id``).

Events go out from one background thread, in order, each retried (with the same event
id, as Svix does) after connection errors, 429 and 5xx answers, ``attempts`` times at
most. The URL must be on loopback, like the sandbox itself.

Standard library only, and no Django.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import ipaddress
import json
import queue
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

__all__ = ["SCENARIOS", "WebhookSender", "loopback_url", "scenario_for", "sign_svix"]

#: Local part -> the normalized events posted for that recipient, in order.
SCENARIOS: dict[str, tuple[str, ...]] = {
    "": ("delivered",),
    "bounced": ("bounced:hard",),
    "soft-bounced": ("bounced:soft",),
    "complained": ("delivered", "complained"),
    "delayed": ("delivery_delayed", "delivered"),
    "failed": ("failed",),
    "suppressed": ("suppressed",),
    "silent": (),
}
_ALIASES = {"bounce": "bounced", "soft-bounce": "soft-bounced", "complain": "complained"}


def scenario_for(address: str) -> tuple[str, ...]:
    """The events a recipient address asks for (``SCENARIOS``)."""
    local = address.lower().rpartition("@")[0].split("+", 1)[0]
    local = _ALIASES.get(local, local)
    return SCENARIOS.get(local, SCENARIOS[""])


def loopback_url(url: str) -> str:
    """``url`` if it is http(s) on a loopback host, else ``ValueError``."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if parts.scheme not in ("http", "https") or not loopback:
        raise ValueError(
            f"The sandbox posts webhooks to loopback URLs only (http://127.0.0.1:…); "
            f"refusing {url!r}."
        )
    return url


def sign_svix(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """A Svix ``v1,<signature>`` of ``body`` (the secret is ``whsec_<base64>``)."""
    encoded = secret.removeprefix("whsec_")
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("A Resend (Svix) webhook secret is whsec_ and base64.") from None
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def _hex(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Event:
    """One event to post: its dialect's JSON body and how to sign it."""

    event_id: str
    kind: str
    email_id: str
    recipient: str
    body: dict[str, Any]
    #: (secret, event id, body bytes, unix time) -> headers.
    sign: Callable[[str, str, bytes, int], dict[str, str]]
    log: dict[str, Any] = field(default_factory=dict)


# -- what each provider posts --------------------------------------------------------------

_BOUNCE_TEXT = {
    "hard": ("550 5.1.1", "The email account that you tried to reach does not exist."),
    "soft": ("452 4.2.2", "The email account that you tried to reach is over quota."),
}


def _resend_events(email_id: str, payload: Mapping[str, Any], recipient: str) -> list[Event]:
    events = []
    for step in scenario_for(recipient):
        kind, _, bounce = step.partition(":")
        data: dict[str, Any] = {
            "email_id": email_id,
            "created_at": _now(),
            "from": payload.get("from", ""),
            "to": [recipient],
            "subject": payload.get("subject", ""),
        }
        if kind == "bounced":
            code, text = _BOUNCE_TEXT[bounce]
            data["bounce"] = {
                "type": "Permanent" if bounce == "hard" else "Transient",
                "subType": "General" if bounce == "hard" else "MailboxFull",
                "message": text,
                "diagnosticCode": [f"smtp; {code} {text}"],
            }
        elif kind == "failed":
            data["failed"] = {"reason": "reached_daily_quota"}
        elif kind == "suppressed":
            data["suppressed"] = {
                "reason": "previous_bounce",
                "type": "OnAccountSuppressionList",
                "message": "The address is on the suppression list after an earlier bounce.",
            }
        body = {"type": f"email.{kind}", "created_at": _now(), "data": data}
        events.append(Event(f"msg_{uuid.uuid4().hex}", kind, email_id, recipient, body, _svix))
    return events


def _svix(secret: str, event_id: str, body: bytes, now: int) -> dict[str, str]:
    return {
        "svix-id": event_id,
        "svix-timestamp": str(now),
        "svix-signature": sign_svix(secret, event_id, now, body),
    }


def _sendr_events(email_id: str, payload: Mapping[str, Any], recipient: str) -> list[Event]:
    events = []
    for step in scenario_for(recipient):
        kind, _, bounce = step.partition(":")
        if kind not in ("delivered", "bounced", "complained"):
            continue  # Sendr reports no delays, failures or suppressions
        data: dict[str, Any] = {
            "email_id": email_id,
            "to": [recipient],
            "subject": payload.get("subject", ""),
        }
        if kind == "bounced":
            data["bounce"] = {"type": bounce, "message": " ".join(_BOUNCE_TEXT[bounce])}
        event_id = f"evt_{uuid.uuid4().hex}"
        body = {"id": event_id, "type": f"email.{kind}", "created_at": _now(), "data": data}
        events.append(Event(event_id, kind, email_id, recipient, body, _sendr_signature))
    return events


def _sendr_signature(secret: str, event_id: str, body: bytes, now: int) -> dict[str, str]:
    return {"x-sendry-signature": _hex(secret, body)}


_EMITLO_TYPES = {
    "delivered": "delivered",
    "delivery_delayed": "deferred",
    "bounced:hard": "hard_bounced",
    "bounced:soft": "soft_bounced",
    "complained": "complained",
}


def _emitlo_events(email_id: str, payload: Mapping[str, Any], recipient: str) -> list[Event]:
    events = []
    for step in scenario_for(recipient):
        name = _EMITLO_TYPES.get(step)
        if name is None:
            continue  # Emitlo reports no failures or suppressions
        data: dict[str, Any] = {
            "message_id": email_id,
            "to_email": recipient,
            "subject": payload.get("subject", ""),
        }
        if step.startswith("bounced:"):
            code, text = _BOUNCE_TEXT[step.partition(":")[2]]
            data["dsn_status"] = code.split()[1]
            data["reason"] = f"{code} {text}"
        body = {"event_type": name, "timestamp": _now(), "data": data}
        kind = step.partition(":")[0]
        events.append(Event(str(uuid.uuid4()), kind, email_id, recipient, body, _emitlo))
    return events


def _emitlo(secret: str, event_id: str, body: bytes, now: int) -> dict[str, str]:
    event = json.loads(body)["event_type"]
    return {
        "X-Emitlo-Signature": f"sha256={_hex(secret, body)}",
        "X-Emitlo-Event": event,
        "X-Emitlo-Delivery-Id": event_id,
    }


#: Dialect name -> the events of one accepted email for one recipient.
BUILDERS: dict[str, Callable[[str, Mapping[str, Any], str], list[Event]]] = {
    "resend": _resend_events,
    "generic": _resend_events,
    "sendr": _sendr_events,
    "emitlo": _emitlo_events,
}


# -- the sender -------------------------------------------------------------------------------


class WebhookSender:
    """Posts events to one URL from a daemon thread, in order, with bounded retries."""

    def __init__(
        self,
        url: str,
        secret: str,
        *,
        attempts: int = 4,
        backoff: float = 0.2,
        timeout: float = 5.0,
    ) -> None:
        self.url = loopback_url(url)
        if not secret:
            raise ValueError("A webhook secret is needed to sign the events.")
        self.secret = secret
        self.attempts = attempts
        self.backoff = backoff
        self.timeout = timeout
        self._queue: queue.Queue[Event | None] = queue.Queue()
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)
        self._log: list[dict[str, Any]] = []
        self._pending = 0
        self._stopping = threading.Event()
        # No proxy: the URL is on loopback, whatever HTTP_PROXY says.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self._thread = threading.Thread(target=self._run, name="mailapi-sandbox-webhooks")
        self._thread.daemon = True
        self._thread.start()

    def post(self, events: list[Event]) -> None:
        with self._lock:
            self._pending += len(events)
        for event in events:
            self._queue.put(event)

    @property
    def log(self) -> list[dict[str, Any]]:
        """One entry per event posted (or given up on), oldest first."""
        with self._lock:
            return [dict(entry) for entry in self._log]

    def clear(self) -> None:
        with self._lock:
            self._log.clear()

    def wait_idle(self, timeout: float) -> bool:
        """Block until every event handed in so far is posted or given up on."""
        with self._done:
            return self._done.wait_for(lambda: self._pending == 0, timeout=timeout)

    def stop(self) -> None:
        self._stopping.set()
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            event = self._queue.get()
            if event is None:
                return
            entry = self._deliver(event)
            with self._done:
                self._log.append(entry)
                self._pending -= 1
                self._done.notify_all()

    def _deliver(self, event: Event) -> dict[str, Any]:
        body = json.dumps(event.body).encode()
        entry: dict[str, Any] = {
            "event_id": event.event_id,
            "type": event.kind,
            "email_id": event.email_id,
            "recipient": event.recipient,
            "status": None,
            "attempts": 0,
        }
        for attempt in range(1, self.attempts + 1):
            if self._stopping.is_set():
                break
            entry["attempts"] = attempt
            # Signed again for each attempt, as Svix does: same id, a fresh timestamp.
            headers = event.sign(self.secret, event.event_id, body, int(time.time()))
            # self.url passed loopback_url(): http(s) on loopback, no other scheme.
            request = urllib.request.Request(  # noqa: S310
                self.url,
                data=body,
                method="POST",
                headers={"Content-Type": "application/json", **headers},
            )
            try:
                with self._opener.open(request, timeout=self.timeout) as response:
                    entry["status"] = response.status
                    return entry
            except urllib.error.HTTPError as error:
                entry["status"] = error.code
                with contextlib.suppress(OSError):
                    error.close()
                if error.code < 500 and error.code != 429:
                    return entry  # refused: another try would be refused too
            except (OSError, ValueError):
                entry["status"] = None
            self._stopping.wait(self.backoff * 2 ** (attempt - 1))
        return entry
