"""Deleting old rows: finished emails, their failures, and usage counters of past periods.

What goes, for ``older_than`` days (the cutoff is now minus that many days):

- emails that are ``sent`` or ``cancelled`` and were last changed before the cutoff, with
  their FailedSend rows (the foreign key cascades);
- FailedSend rows created before the cutoff whose email is ``sent``, ``cancelled`` or
  ``failed``. A failed email itself is kept (someone may still retry it; it keeps its last
  error code); cancel it to have it purged;
- UsageCounter rows whose period ended before the cutoff's UTC day;
- delivery events: those of the emails deleted (the foreign key cascades), and events
  that never found their email, received before the cutoff (the email they name was
  never sent from here, or was purged before they came).

Emails that are ``queued``, ``sending`` or ``deferred`` and their failures are never
touched. Rows go in batches of ``batch_size`` ids per DELETE so no statement holds locks
on a large part of a table for long; every batch re-applies the whole filter, so a row
that changed state since it was picked is left alone.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.db import router, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from .models import DeliveryEvent, FailedSend, OutboundEmail, Period, Status, UsageCounter
from .quota import day_start, month_start

#: Emails that are done with and may be deleted once old enough.
FINISHED = (Status.SENT, Status.CANCELLED)
#: Emails whose failure records may go once old enough.
SETTLED = (Status.SENT, Status.CANCELLED, Status.FAILED)


@dataclass(frozen=True)
class PurgeCounts:
    emails: int
    failed_sends: int
    usage_counters: int
    delivery_events: int = 0


def cutoff_for(older_than_days: int, now: dt.datetime | None = None) -> dt.datetime:
    if older_than_days < 0:
        raise ValueError("older_than_days must not be negative")
    return (now or timezone.now()) - dt.timedelta(days=older_than_days)


def old_emails(cutoff: dt.datetime) -> QuerySet[OutboundEmail]:
    return OutboundEmail.objects.filter(status__in=FINISHED, updated_at__lt=cutoff)


def old_failures(cutoff: dt.datetime) -> QuerySet[FailedSend]:
    """Failures that outlive the emails purged with them: old, of a settled email."""
    return FailedSend.objects.filter(created_at__lt=cutoff, email__status__in=SETTLED)


def old_unmatched_events(cutoff: dt.datetime) -> QuerySet[DeliveryEvent]:
    """Events that found no email and were received before the cutoff."""
    return DeliveryEvent.objects.filter(email__isnull=True, received_at__lt=cutoff)


def old_counters(cutoff: dt.datetime) -> QuerySet[UsageCounter]:
    """Counters whose period ended by the cutoff's UTC day (a day ends at next midnight)."""
    day = day_start(cutoff)
    return UsageCounter.objects.filter(
        Q(period=Period.DAY, period_start__lt=day)
        | Q(period=Period.MONTH, period_start__lt=month_start(cutoff))
    )


def _delete_in_batches(queryset: QuerySet[Any], batch_size: int) -> dict[str, int]:
    """Delete ``queryset`` ``batch_size`` ids at a time; return the counts per model label.

    Ids are read, and each batch deleted in a transaction, on the database the router
    picks for writing the model.
    """
    using = router.db_for_write(queryset.model)
    queryset = queryset.using(using)
    deleted: dict[str, int] = {}
    after: Any = None
    while True:
        # Each batch starts after the last one's ids, so no batch reads past the index
        # entries of rows the earlier ones deleted (they stay until a vacuum).
        pending = queryset if after is None else queryset.filter(pk__gt=after)
        ids = list(pending.order_by("pk").values_list("pk", flat=True)[:batch_size])
        if not ids:
            return deleted
        after = ids[-1]
        with transaction.atomic(using=using):
            # Only the ids: the collector reads the rows it deletes, and needs no more of
            # them to cascade (to failed sends and delivery events, and from those to
            # the suppressions that name an event, which are kept without it).
            _total, per_model = queryset.filter(pk__in=ids).only("pk").delete()
        for label, count in per_model.items():
            deleted[label] = deleted.get(label, 0) + count


def purge(
    older_than_days: int,
    *,
    dry_run: bool = False,
    now: dt.datetime | None = None,
    batch_size: int = 1000,
) -> PurgeCounts:
    """Delete what is older than ``older_than_days`` (see the module docstring)."""
    cutoff = cutoff_for(older_than_days, now)
    emails, failures, counters = old_emails(cutoff), old_failures(cutoff), old_counters(cutoff)
    unmatched = old_unmatched_events(cutoff)
    if dry_run:
        cascaded = FailedSend.objects.filter(email__in=emails).count()
        standalone = failures.exclude(email__in=emails).count()
        events = DeliveryEvent.objects.filter(email__in=emails).count() + unmatched.count()
        return PurgeCounts(emails.count(), cascaded + standalone, counters.count(), events)
    by_email = _delete_in_batches(emails, batch_size)
    by_failure = _delete_in_batches(failures, batch_size)
    by_counter = _delete_in_batches(counters, batch_size)
    by_event = _delete_in_batches(unmatched, batch_size)
    failed_label, event_label = FailedSend._meta.label, DeliveryEvent._meta.label
    return PurgeCounts(
        emails=by_email.get(OutboundEmail._meta.label, 0),
        failed_sends=by_email.get(failed_label, 0) + by_failure.get(failed_label, 0),
        usage_counters=by_counter.get(UsageCounter._meta.label, 0),
        delivery_events=by_email.get(event_label, 0) + by_event.get(event_label, 0),
    )
