"""Is mail flowing? The figures ``mailapi_status`` and the health check report.

Every query is served by an index, so reading them stays fast on an outbox of millions
of rows: the statuses are counted per provider through the (provider, status) index
(the providers found by a loose index scan), the oldest due email is the first entry of
the waiting and leased partial indexes, the last hour's failures are a range of the
failed sends' created_at index, and the last delivery event the first entry of the
events' received_at index.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .models import CLAIMABLE, DeliveryEvent, FailedSend, OutboundEmail, Status

#: Most providers the statuses are counted over (one index range each).
PROVIDERS_LIMIT = 1000
#: The failures window.
LAST_HOUR = dt.timedelta(hours=1)

#: Keys of ``--format json``, in this order (SPEC §13).
JSON_KEYS = ("statuses", "oldest_due_seconds", "failures_last_hour", "last_event_at")


@dataclass(frozen=True)
class StatusReport:
    """What ``mailapi_status`` reports, read at ``now``."""

    #: Emails per status, every status present (0 when none), in Status order.
    statuses: Mapping[str, int]
    #: Whole seconds the longest-waiting due email has waited; None when none is due.
    oldest_due_seconds: int | None
    #: Failed attempts in the hour before ``now``, by error code, most frequent first.
    failures_last_hour: Mapping[str, int]
    #: When the latest delivery event was received; None when there is none.
    last_event_at: dt.datetime | None

    @classmethod
    def read(cls, now: dt.datetime) -> StatusReport:
        return cls(
            statuses=count_statuses(),
            oldest_due_seconds=oldest_due_seconds(now),
            failures_last_hour=failures_since(now - LAST_HOUR),
            last_event_at=(
                DeliveryEvent.objects.order_by("-received_at", "-id")
                .values_list("received_at", flat=True)
                .first()
            ),
        )

    def as_json(self) -> dict[str, Any]:
        values = {
            "statuses": dict(self.statuses),
            "oldest_due_seconds": self.oldest_due_seconds,
            "failures_last_hour": dict(self.failures_last_hour),
            "last_event_at": self.last_event_at,
        }
        return {key: values[key] for key in JSON_KEYS}


def count_statuses() -> dict[str, int]:
    """Emails per status, each count an index-only range of (provider, status)."""
    emails = OutboundEmail.objects.all()
    # "" too: a row refused before a provider was known would have none.
    providers = ["", *emails.distinct_values("provider", PROVIDERS_LIMIT)]
    return {
        status.value: emails.filter(provider__in=providers, status=status).count()
        for status in Status
    }


def oldest_due_seconds(now: dt.datetime) -> int | None:
    """How long the longest-waiting due email has waited: a waiting email since its
    next attempt fell due, a leased one since its lease ran out (its worker is gone)."""
    emails = OutboundEmail.objects.order_by()
    since = [
        emails.filter(status__in=CLAIMABLE, next_attempt_at__lte=now)
        .order_by("next_attempt_at")
        .values_list("next_attempt_at", flat=True)
        .first(),
        emails.filter(status=Status.SENDING, leased_until__lt=now)
        .order_by("leased_until")
        .values_list("leased_until", flat=True)
        .first(),
    ]
    found = [moment for moment in since if moment is not None]
    if not found:
        return None
    return int((now - min(found)).total_seconds())


def failures_since(start: dt.datetime) -> dict[str, int]:
    """Failed attempts since ``start`` by error code, most frequent first."""
    rows = FailedSend.objects.filter(created_at__gte=start).count_by("error_code")
    return dict(sorted(rows.items(), key=lambda row: (-row[1], row[0])))
