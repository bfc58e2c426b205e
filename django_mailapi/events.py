"""Delivery events in: stored once, matched to their email, applied to it.

A provider reports what happened after it accepted an email (``webhooks.py`` verifies
and parses the request; this module records the result):

- **Stored once.** ``(provider, provider_event_id)`` is unique in the database, so a
  redelivery (Svix resends the same ``svix-id``), a manual replay or the same event
  posted 50 times at once inserts one row; the others meet the constraint and are
  counted as duplicates.
- **Matched by the API's id.** An event is tied to the email whose
  ``provider_message_id`` it names. The webhook can outrun the worker that records that
  id, so an event that finds no email is kept unmatched and ``match_sent`` picks it up
  when the send is recorded. The two sides never miss each other: the webhook commits
  its event before it looks for the email a second time, and the worker commits the
  email's id before it looks for events; the event's ``email`` is then set by a
  conditional ``UPDATE … WHERE email_id IS NULL``, so only one side applies it.
- **Applied.** ``OutboundEmail.delivery_status`` is recomputed from all of the email's
  events (``delivery_status``: per recipient, never backwards; across recipients, the
  worst wins) under a lock on the email's row, taken before the event is written and
  held for those few statements, and a bounce, complaint, failure or suppression writes
  a ``FailedSend`` with a local code.
- **Suppressed.** A hard bounce, complaint or provider-side suppression adds its address
  to the suppression list (``suppression.record_event``, per ``SUPPRESS_ON``) in the same
  transaction: when the event is stored, and for a complaint, which needs the email's
  org, when it is matched.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, models, router, transaction

from . import signals, suppression
from .models import DeliveryEvent, DeliveryStatus, EventType, FailedSend, OutboundEmail
from .providers.base import DeliveryReport

logger = logging.getLogger("django_mailapi")

#: The delivery status each event type stands for; other types leave it alone.
STATUS_OF_TYPE: dict[str, str] = {
    EventType.DELIVERED: DeliveryStatus.DELIVERED,
    EventType.DELIVERY_DELAYED: DeliveryStatus.DELIVERY_DELAYED,
    EventType.SUPPRESSED: DeliveryStatus.SUPPRESSED,
    EventType.FAILED: DeliveryStatus.FAILED,
    EventType.BOUNCED: DeliveryStatus.BOUNCED,
    EventType.COMPLAINED: DeliveryStatus.COMPLAINED,
}

#: For one recipient: what may follow what. A delay is provisional, so delivery (or any
#: outcome) replaces it; an outcome is never replaced by a lesser one that arrives late.
RECIPIENT_RANK: dict[str, int] = {
    "": 0,
    "delivery_delayed": 1,
    "delivered": 2,
    "suppressed": 3,
    "failed": 4,
    "bounced": 5,
    "complained": 6,
}

#: Across an email's recipients the worst wins (SPEC): one still delayed while the
#: others were delivered leaves the email delayed.
EMAIL_RANK: dict[str, int] = {
    "": 0,
    "delivered": 1,
    "delivery_delayed": 2,
    "suppressed": 3,
    "failed": 4,
    "bounced": 5,
    "complained": 6,
}

#: The event types that are a failed send too, and their code in the "mailapi" catalog.
FAILURE_CODES: dict[str, str] = {
    EventType.COMPLAINED: "complaint",
    EventType.FAILED: "delivery_failed",
    EventType.SUPPRESSED: "suppressed",
}

#: Recipients kept on one event row; a provider listing more is cut short.
MAX_RECIPIENTS = 100


def delivery_status(events: Iterable[tuple[str, str]]) -> str:
    """The delivery status of an email from its events' (type, recipient) pairs.

    Each recipient keeps the highest-ranked status its events reached
    (``RECIPIENT_RANK``), so arrival order does not matter; the email takes the worst
    of its recipients' (``EMAIL_RANK``). An event naming no recipient applies to every
    recipient the others name.
    """
    by_address: dict[str, str] = {}
    general: list[str] = []
    for kind, recipient in events:
        status = STATUS_OF_TYPE.get(kind)
        if status is None:
            continue
        addresses = _addresses(recipient)
        if not addresses:
            general.append(status)
        for address in addresses:
            by_address[address] = _higher(by_address.get(address, ""), status)
    for status in general:
        for address in list(by_address) or [""]:
            by_address[address] = _higher(by_address.get(address, ""), status)
    return max(by_address.values(), key=EMAIL_RANK.__getitem__, default="")


def _higher(current: str, new: str) -> str:
    return new if RECIPIENT_RANK[new] > RECIPIENT_RANK[current] else current


def _addresses(recipient: str) -> list[str]:
    found = []
    for item in recipient.split(", "):
        bare = email.utils.parseaddr(item)[1] or item.strip()
        if bare:
            found.append(bare.lower())
    return found


def failure_code(kind: str, details: dict[str, Any]) -> str | None:
    """The local failure code of an event, or None when it is not a failure."""
    if kind == EventType.BOUNCED:
        return "hard_bounce" if details.get("bounce_type") == "hard" else "soft_bounce"
    return FAILURE_CODES.get(kind)


@dataclass
class Received:
    """What became of one request's events."""

    stored: int = 0
    duplicates: int = 0
    matched: int = 0


def receive(provider: str, reports: Sequence[DeliveryReport], now: dt.datetime) -> Received:
    """Store each report once, match it to its email and apply it."""
    using = router.db_for_write(DeliveryEvent)
    result = Received()
    for report in reports:
        event = _event(provider, report, now)
        found = _email_for(provider, event.provider_message_id, using)
        if found is not None:
            event.email_id, event.org = found
        try:
            with transaction.atomic(using=using):
                # The email before the event (see _email_row), and the event before the
                # rows it calls for.
                email = _email_row(found[0], event.type, using) if found else None
                event.save(using=using, force_insert=True)
                if email is not None:
                    _apply(event, email, using)
                suppression.record_event(event, using)
        except IntegrityError:
            if not _stored(provider, event.provider_event_id, using):
                raise
            result.duplicates += 1
            continue
        result.stored += 1
        if email is None and event.provider_message_id:
            # Looked for again now the event is committed: a worker that recorded the id
            # in between found no event, so this side must find the email.
            found = _email_for(provider, event.provider_message_id, using)
            if found is not None:
                email = _match(event, found, using)
        if email is not None:
            result.matched += 1
        signals.delivery_event.send(sender=DeliveryEvent, event=event, email=email)
    return result


def match_sent(rows: Sequence[OutboundEmail]) -> int:
    """Match events that arrived before these emails' sends were recorded.

    Called by the outbox once a delivery has recorded its API ids: one indexed query for
    all of ``rows`` (the unmatched events are few), then a conditional update per event
    found. Returns how many events it matched.
    """
    wanted: dict[str, dict[str, OutboundEmail]] = defaultdict(dict)
    for row in rows:
        if row.provider_message_id:
            wanted[row.provider][row.provider_message_id] = row
    if not wanted:
        return 0
    using = router.db_for_write(DeliveryEvent)
    where = models.Q()
    for provider, by_id in wanted.items():
        where |= models.Q(provider=provider, provider_message_id__in=list(by_id))

    def found() -> Iterator[tuple[DeliveryEvent, tuple[int, str]]]:
        events = DeliveryEvent.objects.using(using).unmatched().filter(where)
        for event in events.order_by("occurred_at", "id"):
            row = wanted[event.provider][event.provider_message_id]
            yield event, (row.pk, row.org)

    return _match_all(found, using)


#: How far back the sweeper looks for events a worker left unmatched. A worker records
#: a send seconds after the API took it, and the events that outran it came before.
STRANDED_WINDOW = dt.timedelta(hours=1)


def stranded_events(now: dt.datetime, limit: int = 1000) -> models.QuerySet[DeliveryEvent]:
    """Unmatched events of the last hour whose email now has its API id recorded, each
    with ``found_id`` and ``found_org``: the events a worker that recorded the id died
    before looking up. Read through the partial index of unmatched events by arrival,
    then one probe of the outbox's message-id index per event."""
    using = router.db_for_write(DeliveryEvent)
    sent_as = (
        OutboundEmail.objects.using(using)
        .filter(
            provider=models.OuterRef("provider"),
            provider_message_id=models.OuterRef("provider_message_id"),
            provider_message_id__gt="",
        )
        .order_by()
    )
    return (
        DeliveryEvent.objects.using(using)
        .unmatched()
        .filter(received_at__gte=now - STRANDED_WINDOW, provider_message_id__gt="")
        .annotate(
            found_id=models.Subquery(sent_as.values("pk")[:1]),
            found_org=models.Subquery(sent_as.values("org")[:1]),
        )
        .filter(found_id__isnull=False)
        .order_by("occurred_at", "id")[:limit]
    )


def match_stranded(now: dt.datetime, limit: int = 1000) -> int:
    """Match the events ``stranded_events`` finds. Called by the sweeper; the events of
    emails sent by others than this outbox stay unmatched and are not looked at again
    after an hour. Returns how many events it matched."""
    using = router.db_for_write(DeliveryEvent)

    def found() -> Iterator[tuple[DeliveryEvent, tuple[int, str]]]:
        for event in stranded_events(now, limit):
            yield event, (event.found_id, event.found_org)  # type: ignore[attr-defined]

    return _match_all(found, using)


def _match_all(
    found: Callable[[], Iterator[tuple[DeliveryEvent, tuple[int, str]]]], using: str
) -> int:
    """Match each (event, (email id, org)) that ``found`` yields. Returns how many."""
    matched = 0
    try:
        for event, email_and_org in found():
            email = _match(event, email_and_org, using)
            if email is not None:
                matched += 1
                signals.delivery_event.send(sender=DeliveryEvent, event=event, email=email)
    except Exception:
        # The sends are recorded already; an event left unmatched is better than a
        # worker that fails after the API accepted its emails (the sweeper tries again).
        logger.exception("django-mailapi: could not match delivery events to sent emails")
    return matched


# --- pieces ------------------------------------------------------------------------------
def _event(provider: str, report: DeliveryReport, now: dt.datetime) -> DeliveryEvent:
    event_id = report.event_id
    if len(event_id) > 255:  # keep it unique rather than cut it
        event_id = "sha256:" + hashlib.sha256(event_id.encode()).hexdigest()
    kind = report.type if report.type in EventType.values else EventType.UNKNOWN
    return DeliveryEvent(
        provider=provider,
        provider_event_id=event_id,
        provider_message_id=report.message_id[:255],
        type=kind,
        recipient=", ".join(report.recipients[:MAX_RECIPIENTS]),
        occurred_at=report.occurred_at or now,
        received_at=now,
        details=report.details,
    )


def _email_for(provider: str, message_id: str, using: str) -> tuple[int, str] | None:
    """(id, org) of the email the API knows as ``message_id``."""
    if not message_id:
        return None
    found = (
        OutboundEmail.objects.using(using)
        .filter(provider=provider, provider_message_id=message_id)
        .order_by()
        .values_list("pk", "org")[:1]
    )
    return next(iter(found), None)


def _stored(provider: str, event_id: str, using: str) -> bool:
    found: bool = (
        DeliveryEvent.objects.using(using)
        .filter(provider=provider, provider_event_id=event_id)
        .exists()
    )
    return found


def _match(event: DeliveryEvent, found: tuple[int, str], using: str) -> OutboundEmail | None:
    """Tie an unmatched event to its email and apply it, unless the other side did."""
    email_id, org = found
    with transaction.atomic(using=using):
        email = _email_row(email_id, event.type, using)  # the email first, as receive does
        won = (
            DeliveryEvent.objects.using(using)
            .filter(pk=event.pk, email__isnull=True)
            .update(email_id=email_id, org=org)
        )
        if not won:
            return None
        event.email_id, event.org = email_id, org
        suppression.record_event(event, using)
        _apply(event, email, using)
        return email


def _email_row(email_id: int, kind: str, using: str) -> OutboundEmail:
    """The email an event of type ``kind`` is applied to, locked if the event changes it.

    The lock makes concurrent events of one email apply one after the other, each seeing
    the others' rows. It is taken before the event is written, because MySQL and MariaDB
    check a new row's foreign key (a shared lock on the email) before its unique key:
    two events of one email written first and locked for update second each held the
    email shared and asked for it exclusively, a deadlock, and a redelivered event waiting
    for its first copy's key did the same. Locked first, they queue on the email instead.
    """
    emails = OutboundEmail.objects.using(using).defer("payload")
    if kind in STATUS_OF_TYPE:
        emails = emails.select_for_update()
    email: OutboundEmail = emails.get(pk=email_id)
    return email


def _apply(event: DeliveryEvent, email: OutboundEmail, using: str) -> None:
    """The event's effect on its email (from ``_email_row``, in the same transaction)."""
    if event.type not in STATUS_OF_TYPE:
        return
    seen = (
        DeliveryEvent.objects.using(using)
        .filter(email_id=email.pk, type__in=list(STATUS_OF_TYPE))
        .values_list("type", "recipient")
    )
    status = delivery_status(seen)
    if status != email.delivery_status:
        OutboundEmail.objects.using(using).filter(pk=email.pk).update(delivery_status=status)
        email.delivery_status = status
    code = failure_code(event.type, event.details)
    if code is not None:
        _failure(event, email, code).save(using=using, force_insert=True)


def _failure(event: DeliveryEvent, email: OutboundEmail, code: str) -> FailedSend:
    details = event.details
    reason = str(details.get("reason") or "")
    raw_type = str(details.get("raw_type") or event.type)
    said = reason or f"{event.provider} reported {raw_type}"
    message = f"{event.recipient}: {said}" if event.recipient else said
    return FailedSend(
        email=email,
        org=email.org,
        provider=email.provider,
        source="mailapi",
        error_code=code,
        message=message[:2000],
        details={
            "event_id": event.provider_event_id,
            "event_type": raw_type,
            "recipients": event.recipients,
            **{k: v for k, v in details.items() if k not in ("raw_type", "subject", "tags")},
        },
        attempt=email.attempts,
        will_retry=False,
        created_at=event.received_at,
    )
