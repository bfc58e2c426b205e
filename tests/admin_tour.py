"""A morning on call, as data: what the admin-tour screenshots and browser tests show.

Six orgs, a week of sent mail (usage counters too, for the chart), failures of several
codes, a deferred backlog, and one email that failed nine times on a 429 before its
retries ran out: the one the tour opens.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.utils import timezone

from django_mailapi.models import OrgQuota, OutboundEmail, Period, Status, UsageCounter
from tests.factories import fail, make_email, payload

ORGS = ("acme", "globex", "initech", "umbrella", "hooli", "stark")
HTML = (
    "<h1 style='font-family:sans-serif'>Your order has shipped</h1>"
    "<p>Hello Dana, order <b>#4411</b> left our warehouse today.</p>"
    "<p><a href='https://shop.example/orders/4411'>Track it</a></p>"
    "<img src='https://tracker.example/open.gif' alt=''>"
    "<script>document.body.innerHTML = 'scripts run'</script>"
)


def seed_tour(now: dt.datetime | None = None, **target_fields: Any) -> OutboundEmail:
    """Create the tour's rows; return the email that ran out of retries."""
    now = (now or timezone.now()).replace(microsecond=0)
    midnight = now.astimezone(dt.timezone.utc).replace(hour=0, minute=0, second=0)

    def ago(delta: dt.timedelta) -> dt.datetime:
        # Never before today's UTC midnight: the home page counts "today", and a test
        # run just after midnight must find the failures it seeded there.
        return max(now - delta, midnight)

    OrgQuota.objects.create(org="acme", daily_limit=60, monthly_limit=1500)
    OrgQuota.objects.create(org="globex", daily_limit=40)
    OrgQuota.objects.create(org="initech", paused=True)
    today = now.date()
    for days_back in range(7):
        day = today - dt.timedelta(days=days_back)
        for i, org in enumerate(ORGS):
            sent = 10 + (days_back * 7 + i * 5) % 37
            UsageCounter.objects.create(
                org=org, period=Period.DAY, period_start=day, units_sent=sent, units_failed=i % 3
            )
    month_start = today.replace(day=1)
    for org in ORGS:
        UsageCounter.objects.create(
            org=org, period=Period.MONTH, period_start=month_start, units_sent=400
        )
    for minutes in range(0, 120, 9):
        org = ORGS[minutes % len(ORGS)]
        make_email(
            org=org,
            to=f"customer{minutes}@{org}.test",
            subject=f"Receipt {minutes}",
            status=Status.SENT,
            created_at=ago(dt.timedelta(minutes=minutes)),
        )
    for hours, org in enumerate(("globex", "globex", "hooli")):
        make_email(
            org=org,
            to=f"list{hours}@{org}.test",
            subject="Newsletter (over the daily quota)",
            status=Status.DEFERRED,
            next_attempt_at=now - dt.timedelta(minutes=3 + hours),
            last_error_code="daily_quota_exceeded",
            created_at=ago(dt.timedelta(hours=hours + 1)),
        )
    failures = [
        ("acme", "invoices@acme.test", "Invoice #4411", "invalid_from_address", 422),
        ("globex", "ann@globex.test", "Password reset", "validation_error", 403),
        ("initech", "tps@initech.test", "TPS reports", "security_error", 451),
        ("hooli", "gavin@hooli.test", "Your order has shipped", "invalid_attachment", 422),
        ("stark", "pepper@stark.test", "Board minutes", "application_error", 500),
    ]
    for minutes, (org, to, subject, code, status) in enumerate(failures, start=1):
        at = ago(dt.timedelta(minutes=minutes * 11))
        email = make_email(org=org, to=to, subject=subject, created_at=at)
        fail(email, code, status, created_at=at)
    start = ago(dt.timedelta(minutes=40))
    fields: dict[str, Any] = {
        "org": "umbrella",
        "to": "dana@umbrella.test",
        "subject": "Your order has shipped",
        "status": Status.FAILED,
        "attempts": 9,
        "created_at": start,
        "payload": payload(
            "dana@umbrella.test",
            "Your order has shipped",
            html=HTML,
            text="Hello Dana,\n\norder #4411 left our warehouse today. " + "Track it. " * 30,
        ),
        **target_fields,
    }
    target = make_email(**fields)
    for attempt in range(1, 10):
        fail(
            target,
            "rate_limit_exceeded",
            429,
            attempt=attempt,
            will_retry=True,
            created_at=min(start + dt.timedelta(minutes=attempt * 3), now),
        )
    fail(
        target,
        "retries_exhausted",
        None,
        attempt=9,
        created_at=min(start + dt.timedelta(minutes=30), now),
    )
    return target
