"""Claiming due emails: the one way a worker takes rows, on every database.

In one transaction: the due rows among the task's ids are read with a row lock
(``FOR UPDATE SKIP LOCKED`` where the database has it, so rows another worker is
claiming right now are left to it; SQLite takes its single write lock first), the
other members of their batches are brought in (a batch is claimed whole or not at all),
the suppression list is read once for every recipient of the claim, each group's
suppressed recipients are left out, its quota booked and its requests planned, and one
UPDATE writes the lease with each row's attempt count, units, day and batch key (emails
sent to fewer recipients than asked get their narrowed payload written too). Either all
of that commits or none of it. The HTTP requests come after the commit; no lock is held
during them.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from django.db import connections, router, transaction
from django.utils import timezone

from .. import sql, suppression
from ..conf import MailapiSettings, get_settings
from ..models import UNSETTLED, OutboundEmail, Status
from .deliver import Delivery, suppression_wanted
from .lease import Lease
from .record import record_narrowed

#: Written on every claimed row, each with its own values.
_PLANNED = ["attempts", "quota_units", "quota_day", "batch_key"]


@dataclass
class Claim:
    """What one claim took: its lease and a delivery per (mailer, org, provider)."""

    lease: Lease | None
    deliveries: list[Delivery] = field(default_factory=list)

    @property
    def rows(self) -> list[OutboundEmail]:
        return sorted((row for d in self.deliveries for row in d.rows), key=lambda r: r.pk)

    def send(self) -> dict[str, int]:
        outcomes: Counter[str] = Counter()
        for delivery in self.deliveries:
            outcomes.update(delivery.send())
        return dict(outcomes)


def lease_margin(conf: MailapiSettings) -> float:
    """Renew a lease with less than this left: half of it, and never less than one
    request's timeout plus five seconds of clock difference between hosts."""
    return max(conf.LEASE_SECONDS / 2, conf.TIMEOUT + 5)


def _lock(using: str) -> None:
    """On SQLite, take the database's write lock now (one writer at a time): the rows
    read next cannot be claimed by anyone else before this transaction ends."""
    connection = connections[using]
    if connection.vendor == "sqlite":
        table = connection.ops.quote_name(OutboundEmail._meta.db_table)
        with connection.cursor() as cursor:
            cursor.execute(f"UPDATE {table} SET id = id WHERE 0 = 1")  # noqa: S608


def claim(
    ids: Sequence[int], now: dt.datetime | None = None, lease_seconds: int | None = None
) -> Claim:
    """Claim the due emails among ``ids`` (and their batch mates) and plan their sending."""
    now = now or timezone.now()
    conf = get_settings()
    seconds = lease_seconds if lease_seconds is not None else conf.LEASE_SECONDS
    token = uuid.uuid4().hex
    until = now + dt.timedelta(seconds=seconds)
    using = router.db_for_write(OutboundEmail)
    features = connections[using].features
    with transaction.atomic(using=using):
        _lock(using)
        manager = OutboundEmail.objects.using(using)
        locked = manager.select_for_update(skip_locked=features.has_select_for_update_skip_locked)
        rows = list(locked.due(now).filter(pk__in=list(ids)).order_by("pk"))
        rows = _whole_batches(rows, locked, manager, now)
        if not rows:
            return Claim(None)
        lease = Lease(
            token, until, [r.pk for r in rows], seconds=seconds, margin=lease_margin(conf)
        )
        for row in rows:
            row.status, row.lease_token, row.leased_until = Status.SENDING, token, until
            row.updated_at = now
            row.attempts += 1
        groups: dict[tuple[str, str, str], list[OutboundEmail]] = defaultdict(list)
        for row in rows:
            groups[(row.mailer, row.org, row.provider)].append(row)
        # One query for the whole claim, before any batch is planned: new batches are
        # formed from payloads that no longer name a suppressed recipient.
        blocked = suppression.lookup(suppression_wanted(rows))
        deliveries = []
        for (mailer, _org, _provider), group in groups.items():
            delivery = Delivery(get_settings(mailer), group, lease)
            delivery.prepare(blocked)
            deliveries.append(delivery)
        sql.update_each(
            OutboundEmail,
            _PLANNED,
            {row.pk: [getattr(row, name) for name in _PLANNED] for row in rows},
            {"status": Status.SENDING, "lease_token": token, "leased_until": until,
             "updated_at": now},
        )  # fmt: skip
        record_narrowed([pair for d in deliveries for pair in d.narrowed], now)
    return Claim(lease, deliveries)


def _whole_batches(
    rows: list[OutboundEmail], locked: object, manager: object, now: dt.datetime
) -> list[OutboundEmail]:
    """``rows`` with the other members of their batches, dropping any batch that cannot
    be claimed whole (a member is locked by another claim, failed, or leased)."""
    keys = {row.batch_key for row in rows if row.batch_key}
    if not keys:
        return rows
    taken = {row.pk for row in rows}
    mates = list(
        locked.waiting(now)  # type: ignore[attr-defined]
        .filter(batch_key__in=keys)
        .exclude(pk__in=taken)
        .order_by("pk")
    )
    rows = sorted(rows + mates, key=lambda r: r.pk)
    taken.update(row.pk for row in mates)
    members = manager.filter(  # type: ignore[attr-defined]
        batch_key__in=keys, status__in=UNSETTLED
    ).values_list("batch_key", "pk")
    broken = {key for key, pk in members if pk not in taken}
    return [row for row in rows if row.batch_key not in broken]


def process(ids: Sequence[int]) -> dict[str, int]:
    """Send the due emails among ``ids``. Returns a count per outcome."""
    return claim(ids).send()
