"""The suppression list: addresses that are never mailed again, and the worker's check.

An address with a :class:`~django_mailapi.models.Suppression` row for an email's org, or
for every org (``org`` null), is left out of that email (SPEC §11):

- **Rows come** from delivery events (``record_event``, per ``SUPPRESS_ON``: a hard
  bounce for every org, a complaint for the complaining email's org, a provider-side
  suppression as the bounce or complaint it names), and by hand (``add``: the command
  ``mailapi_suppress`` and the admin). Adding is idempotent: the unique constraints
  keep one row per (org, address), and a replayed event adds nothing.
- **The worker checks** just before sending, not the web request: a bounce can arrive
  between ``send_mail`` and the send. ``lookup`` asks the database once for every
  recipient of a whole claim (one indexed query however many emails and recipients),
  and ``narrow`` takes the suppressed recipients out of one payload in memory.

Addresses are compared bare and lower-case (``normalize``): ``"Ann <Ann@Example.org>"``
is ``ann@example.org``.
"""

from __future__ import annotations

import datetime as dt
import email.utils
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import connections, models, router
from django.utils import timezone

from .conf import get_settings
from .message import Message
from .models import DeliveryEvent, EventType, Suppression, SuppressionReason

#: Addresses per query and per INSERT when many are looked up or added at once.
CHUNK = 5000
#: Reasons a person may give by hand; the others come from delivery events.
BY_HAND = (SuppressionReason.MANUAL, SuppressionReason.UNSUBSCRIBE)


def normalize(address: str) -> str:
    """The bare address, lower-case: what the list stores and compares."""
    text = address.strip()
    if "<" in text or '"' in text or "(" in text:
        text = email.utils.parseaddr(text)[1] or text
    return text.lower()


def is_address(address: str) -> bool:
    """Whether ``address`` (already normalized) is an email address Django accepts."""
    try:
        validate_email(address)
    except ValidationError:
        return False
    return True


# --- the worker's check ------------------------------------------------------------------
@dataclass(frozen=True)
class Blocked:
    """The suppression rows one claim's recipients meet: (org or None, address) -> row."""

    rows: dict[tuple[str | None, str], tuple[int, str]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.rows)

    def find(self, org: str, address: str) -> tuple[int, str] | None:
        """(row id, reason) of the row that stops ``org`` mailing ``address``, or None."""
        bare = normalize(address)
        return self.rows.get((org, bare)) or self.rows.get((None, bare))


def lookup(wanted: Iterable[tuple[str, Iterable[str]]]) -> Blocked:
    """The rows that stop any of ``wanted``: (org, recipients) pairs, one per email.

    One query (per ``CHUNK`` distinct addresses), served by the address index.
    """
    orgs: set[str] = set()
    addresses: set[str] = set()
    for org, recipients in wanted:
        orgs.add(org)
        addresses.update(normalize(address) for address in recipients)
    if not addresses:
        return Blocked()
    using = router.db_for_read(Suppression)
    ordered, scopes = sorted(addresses), sorted(orgs)
    rows: dict[tuple[str | None, str], tuple[int, str]] = {}
    for start in range(0, len(ordered), CHUNK):
        chunk = ordered[start : start + CHUNK]
        for scope, address, pk, reason in _rows_for(chunk, scopes, using):
            rows[(scope, address)] = (pk, reason)
    return Blocked(rows)


def _rows_for(
    addresses: list[str], orgs: list[str], using: str
) -> Iterable[tuple[str | None, str, int, str]]:
    """(org, address, id, reason) of the rows for any of ``addresses`` that apply to
    any of ``orgs``."""
    connection = connections[using]
    if connection.vendor != "postgresql":
        return (
            Suppression.objects.using(using)
            .filter(address__in=addresses)
            .filter(models.Q(org__isnull=True) | models.Q(org__in=orgs))
            .order_by()
            .values_list("org", "address", "pk", "reason")
        )
    # Two array parameters instead of one placeholder per address: the ORM's IN list
    # of a thousand took three times as long to build as PostgreSQL took to answer.
    quote = connection.ops.quote_name
    meta = Suppression._meta
    columns = []
    for name in ("org", "address", "id", "reason"):
        field = meta.get_field(name)
        assert isinstance(field, models.Field)
        columns.append(quote(str(field.column)))
    org, address, pk, reason = columns
    sql = (
        f"SELECT {org}, {address}, {pk}, {reason} FROM {quote(meta.db_table)}"  # noqa: S608
        f" WHERE {address} = ANY(%s) AND ({org} IS NULL OR {org} = ANY(%s))"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [addresses, orgs])
        return list(cursor.fetchall())


def recipients_of(payload: Message) -> list[str]:
    return [*payload["to"], *payload["cc"], *payload["bcc"]]


@dataclass(frozen=True)
class LeftOut:
    """A recipient taken out of an email, and the row that took it out."""

    part: str
    address: str
    suppression_id: int
    reason: str

    def as_json(self) -> dict[str, Any]:
        return {
            "part": self.part,
            "address": self.address,
            "suppression_id": self.suppression_id,
            "reason": self.reason,
        }


def narrow(payload: Message, org: str, blocked: Blocked) -> tuple[Message, list[LeftOut]]:
    """``payload`` without its suppressed recipients, and who was left out.

    The payload is returned as it is (the same object) when nobody is left out.
    """
    if not blocked:
        return payload, []
    left_out: list[LeftOut] = []
    kept: dict[str, list[str]] = {}
    parts = {"to": payload["to"], "cc": payload["cc"], "bcc": payload["bcc"]}
    for part, addresses in parts.items():
        kept[part] = []
        for address in addresses:
            found = blocked.find(org, address)
            if found is None:
                kept[part].append(address)
            else:
                left_out.append(LeftOut(part, address, found[0], found[1]))
    if not left_out:
        return payload, []
    narrowed: Message = {**payload, "to": kept["to"], "cc": kept["cc"], "bcc": kept["bcc"]}
    return narrowed, left_out


def describe(left_out: Sequence[LeftOut]) -> str:
    """``"ann@example.org (hard_bounce), bob@example.org (complaint)"``."""
    return ", ".join(f"{item.address} ({item.reason})" for item in left_out)


# --- rows from delivery events -------------------------------------------------------------
def _scope(event: DeliveryEvent, suppress_on: frozenset[str]) -> tuple[str, str | None] | None:
    """(reason, org or None for every org) of the row an event calls for, or None."""
    if event.type == EventType.BOUNCED:
        if event.details.get("bounce_type") != "hard" or "hard_bounce" not in suppress_on:
            return None
        return SuppressionReason.HARD_BOUNCE, None
    if event.type == EventType.COMPLAINED:
        reason: str = SuppressionReason.COMPLAINT
    elif event.type == EventType.SUPPRESSED:
        # The provider refused the address after its own bounce or complaint (Resend's
        # previous_bounce / previous_complaint); its list belongs to its account, which
        # may be one org's, so the row is for the email's org.
        said = str(event.details.get("reason") or "").lower()
        complaint = "complain" in said
        reason = SuppressionReason.COMPLAINT if complaint else SuppressionReason.HARD_BOUNCE
    else:
        return None
    if reason not in suppress_on or not event.email_id or not event.org:
        return None  # an unmatched event is looked at again when it is matched
    return reason, event.org


def record_event(event: DeliveryEvent, using: str) -> int:
    """Add the rows a stored delivery event calls for; returns how many were new.

    Called where events are stored (``events.receive``) and again when an event is
    matched to its email (its org is known from then on). Idempotent: an address
    already suppressed in that scope keeps its row, so duplicates and replays add
    nothing.
    """
    scope = _scope(event, get_settings().SUPPRESS_ON)
    if scope is None:
        return 0
    reason, org = scope
    addresses = [a for a in dict.fromkeys(normalize(r) for r in event.recipients) if "@" in a]
    raw_type = str(event.details.get("raw_type") or event.type)
    note = f"{event.provider} {raw_type} event"
    when = event.received_at
    return add(addresses, org=org, reason=reason, note=note, event=event, now=when, using=using)


# --- rows by hand --------------------------------------------------------------------------
def _scoped(org: str | None, using: str) -> models.QuerySet[Suppression]:
    rows = Suppression.objects.using(using)
    return rows.filter(org__isnull=True) if org is None else rows.filter(org=org)


def existing(addresses: Sequence[str], org: str | None, using: str | None = None) -> set[str]:
    """Those of ``addresses`` (normalized) that already have a row in ``org``'s scope."""
    using = using or router.db_for_read(Suppression)
    found: set[str] = set()
    for start in range(0, len(addresses), CHUNK):
        chunk = addresses[start : start + CHUNK]
        rows = _scoped(org, using).filter(address__in=chunk)
        found.update(rows.values_list("address", flat=True))
    return found


def add(
    addresses: Iterable[str],
    *,
    org: str | None,
    reason: str,
    note: str = "",
    event: DeliveryEvent | None = None,
    now: dt.datetime | None = None,
    using: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Suppress ``addresses`` for ``org`` (None: every org); returns how many rows are new.

    Addresses are normalized; one already suppressed in that scope keeps its row. Rows
    go in ``CHUNK`` at a time; ``progress`` is told how many addresses each chunk held.
    """
    using = using or router.db_for_write(Suppression)
    now = now or timezone.now()
    wanted = list(dict.fromkeys(normalize(a) for a in addresses))
    added = 0
    for start in range(0, len(wanted), CHUNK):
        chunk = wanted[start : start + CHUNK]
        there = existing(chunk, org, using)
        new = [
            Suppression(
                org=org, address=address, reason=reason, event=event, note=note, created_at=now
            )
            for address in chunk
            if address not in there
        ]
        # A row added meanwhile by someone else meets the unique constraint and is skipped.
        Suppression.objects.using(using).bulk_create(new, ignore_conflicts=True)
        added += len(new)
        if progress is not None:
            progress(len(chunk))
    return added


def remove(addresses: Iterable[str], *, org: str | None) -> list[str]:
    """Take ``addresses`` off ``org``'s scope (None: the every-org rows); returns the
    normalized addresses whose rows were deleted."""
    using = router.db_for_write(Suppression)
    wanted = list(dict.fromkeys(normalize(a) for a in addresses))
    removed: list[str] = []
    for start in range(0, len(wanted), CHUNK):
        rows = _scoped(org, using).filter(address__in=wanted[start : start + CHUNK])
        found = set(rows.values_list("address", flat=True))
        rows.delete()
        removed += [address for address in wanted[start : start + CHUNK] if address in found]
    return removed


def rows_for(recipients: Iterable[str], org: str) -> dict[str, Suppression]:
    """Address (normalized) -> the row that stops ``org`` mailing it, for the admin."""
    wanted = list(dict.fromkeys(normalize(a) for a in recipients))
    if not wanted:
        return {}
    found: dict[str, Suppression] = {}
    rows = Suppression.objects.applying_to(org).filter(address__in=wanted)
    # An org's own row is named before an every-org one.
    for row in rows.order_by(models.F("org").asc(nulls_last=True), "pk"):
        found.setdefault(row.address, row)
    return found
