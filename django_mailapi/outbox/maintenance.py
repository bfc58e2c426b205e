"""What people and beat do to the outbox: sweep, retry now, cancel.

Each change is one UPDATE that carries its own precondition (the statuses it applies
to), so a row a worker moved on in the meantime is left as the worker left it.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Iterable

from django.db import router, transaction
from django.db.models import Q
from django.utils import timezone

from .. import events
from ..conf import get_settings
from ..dispatch import dispatch
from ..models import CANCELLABLE, CLAIMABLE, RETRYABLE, OutboundEmail, OutboundEmailQuerySet

logger = logging.getLogger("django_mailapi")


def sweep(now: dt.datetime | None = None, limit: int = 10_000) -> int:
    """Dispatch due rows whose task seems lost. Returns how many were dispatched."""
    now = now or timezone.now()
    conf = get_settings()
    grace = dt.timedelta(seconds=conf.SWEEP_AFTER_SECONDS)
    # Events a worker left unmatched when it died after recording its sends.
    events.match_stranded(now)
    rows = list(
        OutboundEmail.objects.stranded(now, grace)
        .order_by("next_attempt_at")
        .values_list("pk", "mailer", "payload_bytes")[:limit]
    )
    if not rows:
        return 0
    # Don't sweep the same rows again until another grace period has passed; a row a
    # worker rescheduled in the meantime keeps its own time.
    OutboundEmail.objects.filter(
        pk__in=[pk for pk, _, _ in rows],
        status__in=CLAIMABLE,
        next_attempt_at__lte=now - grace,
    ).update(next_attempt_at=now)
    return _dispatch_by_mailer(rows)


def _dispatch_by_mailer(rows: Iterable[tuple[int, str, int]]) -> int:
    """Publish (pk, mailer, payload_bytes) rows, per mailer, in tasks bounded by size."""
    by_mailer: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for pk, mailer, weight in rows:
        by_mailer[mailer].append((pk, weight))
    return sum(
        dispatch([pk for pk, _ in items], get_settings(mailer), weights=[w for _, w in items])
        for mailer, items in by_mailer.items()
    )


def retry_now(queryset: OutboundEmailQuerySet) -> int:
    """Re-queue failed, deferred or stuck-queued emails and dispatch them now.

    An email in doubt that travelled in a batch is re-queued with its whole batch: the
    batch is only ever sent again whole, under its key.
    """
    now = timezone.now()
    using = router.db_for_write(OutboundEmail)
    with transaction.atomic(using=using):
        picked = queryset.using(using).filter(status__in=RETRYABLE, payload__isnull=False)
        keys = set(picked.in_doubt().exclude(batch_key="").values_list("batch_key", flat=True))
        wanted = Q(pk__in=picked.values("pk"))
        if keys:
            wanted |= Q(batch_key__in=keys)
        rows = list(
            OutboundEmail.objects.using(using)
            .select_for_update()
            .filter(wanted, status__in=RETRYABLE, payload__isnull=False)
            .values_list("pk", "mailer", "payload_bytes")
        )
        if not rows:
            return 0
        changed = (
            OutboundEmail.objects.using(using)
            .filter(pk__in=[pk for pk, _, _ in rows])
            .retry_now(now)
        )
    transaction.on_commit(lambda: _dispatch_by_mailer(rows), using=using)
    return changed


def cancel(queryset: OutboundEmailQuerySet) -> int:
    """Cancel emails that have not been sent yet.

    An email in doubt that travelled in a batch is left alone: its batch must go again
    whole under its key, and the API may already have it.
    """
    now = timezone.now()
    held = queryset.filter(status__in=CANCELLABLE).in_doubt().exclude(batch_key="")
    skipped = held.count()
    if skipped:
        logger.warning(
            "django-mailapi: %d email(s) not cancelled: each travelled in a batch the API "
            "may already have accepted, and a batch is only ever sent again whole.",
            skipped,
        )
    return queryset.exclude(pk__in=held.values("pk")).cancel(now)
