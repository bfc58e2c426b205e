"""The Mail API home: is mail flowing? Figures for the app index page, one query each.

Each figure is one query over a range of an index, so the page stays quick on an
outbox of millions of rows: today's emails are a range of the created_at index, the
backlog is the waiting partial index (it holds only queued and deferred rows), the
oldest due email is that index's first entry, and the last day's failures are a range
of the failed sends' created_at index.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import urlencode

from django.db.models import Count, Max
from django.urls import reverse
from django.utils import timezone

from .. import errors
from ..models import CLAIMABLE, FailedSend, OutboundEmail, Status
from .base import code_link, first_sentence, http_status_label, status_badge

#: The failures window.
LAST_DAY = dt.timedelta(hours=24)
#: Most error codes the home page lists.
CODES_SHOWN = 10


def changelist(model: str, **params: str) -> str:
    url = reverse(f"admin:django_mailapi_{model}_changelist")
    return f"{url}?{urlencode(params)}" if params else url


def today_by_status(midnight: dt.datetime) -> list[dict[str, Any]]:
    """Emails created since ``midnight`` (UTC), per status, every status shown."""
    rows = OutboundEmail.objects.filter(created_at__gte=midnight).count_by("status")
    return [
        {
            "badge": status_badge(status.value),
            "count": rows.get(status.value, 0),
            "url": changelist("outboundemail", status__exact=status.value, created="today"),
        }
        for status in Status
    ]


def backlog(now: dt.datetime) -> dict[str, Any]:
    """Queued and deferred emails (due or not), and how long the oldest due one waited."""
    counts = OutboundEmail.objects.filter(status__in=CLAIMABLE).count_by("status")
    oldest = (
        OutboundEmail.objects.filter(status__in=CLAIMABLE, next_attempt_at__lte=now)
        .order_by("next_attempt_at")
        .values_list("next_attempt_at", flat=True)
        .first()
    )
    return {
        "queued": counts.get(Status.QUEUED, 0),
        "deferred": counts.get(Status.DEFERRED, 0),
        "queued_url": changelist("outboundemail", status__exact=Status.QUEUED),
        "deferred_url": changelist("outboundemail", status__exact=Status.DEFERRED),
        "oldest_due": None if oldest is None else age(now - oldest),
    }


def age(delta: dt.timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} days"


def failures_by_code(since: dt.datetime) -> list[dict[str, Any]]:
    """Failed attempts since ``since`` by (catalog, code, HTTP status), most first."""
    rows = (
        FailedSend.objects.filter(created_at__gte=since)
        .order_by()
        .values("source", "error_code", "http_status")
        .annotate(n=Count("id"), last=Max("created_at"))
        .order_by("-n", "error_code")[:CODES_SHOWN]
    )
    return [
        {
            "code": code_link(row["source"], row["error_code"]),
            "http_status": http_status_label(row["http_status"]),
            "count": row["n"],
            "last": row["last"],
            "action": first_sentence(
                errors.suggested_action(row["source"], row["error_code"], row["http_status"]),
                120,
            ),
            "url": changelist("failedsend", error_code=row["error_code"]),
        }
        for row in rows
    ]


def health(now: dt.datetime | None = None) -> dict[str, Any]:
    """Everything the Mail API home shows, read at ``now``."""
    now = now or timezone.now()
    midnight = now.astimezone(dt.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    return {
        "today": midnight,
        "by_status": today_by_status(midnight),
        "backlog": backlog(now),
        "failures": failures_by_code(now - LAST_DAY),
        "failures_url": changelist("failedsend"),
        "chart_url": reverse("admin:django_mailapi_orgquota_usage_chart"),
        "reference_url": reverse("admin:django_mailapi_error_reference"),
    }
