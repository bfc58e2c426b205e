"""The suppression list end to end, on PostgreSQL or MariaDB with a real Celery worker.

send_mail -> a real worker -> the sandbox, which reports a hard bounce with a signed
webhook to a running Django server (pytest-django's live_server) -> the address is
suppressed for every org. Then new emails to the same address, alone, with another
recipient and inside a batch of 100, go through the same worker: the API never sees
the address again, and each email's records say what happened.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.core import mail
from django.core.mail import EmailMessage

from django_mailapi.backend import EmailBackend
from django_mailapi.models import FailedSend, OutboundEmail, Status, Suppression
from tests.helpers import provider_worker, wait_for
from tests.webhook_helpers import SECRET

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.urls("tests.urls_webhooks"),
    pytest.mark.services,
]

BOUNCED = "bounced@example.org"


@pytest.fixture
def live(worker_env, tmp_path_factory, live_server, settings, server_db) -> Iterator[Any]:
    """A Resend sandbox whose events reach the live server, and a worker sending to it."""
    with provider_worker("resend", worker_env, tmp_path_factory.mktemp("suppress")) as (
        sandbox,
        _worker,
        queue,
    ):
        settings.EMAIL_BACKEND = "django_mailapi.backend.EmailBackend"
        settings.MAILAPI = {
            **settings.MAILAPI,
            "PROVIDER": "resend",
            "BASE_URL": sandbox.url,
            "QUEUE": queue,
            "WEBHOOK_SECRET": SECRET,
        }
        sandbox.webhook_secret = SECRET
        sandbox.webhook_url = f"{live_server.url}/mailapi/webhooks/resend/"
        yield sandbox
        sandbox.wait_for_webhooks(30)  # nothing left to post to a server about to stop


def settled() -> bool:
    busy = OutboundEmail.objects.exclude(status__in=[Status.SENT, Status.FAILED])
    return not busy.exists()


def addresses_sent(sandbox: Any) -> list[str]:
    return [
        address.lower()
        for email in sandbox.emails
        for part in ("to", "cc", "bcc")
        for address in email["payload"].get(part) or []
    ]


@pytest.fixture
def bounced(live) -> Any:
    """The sandbox, once a first email to BOUNCED went out and hard-bounced."""
    sandbox = live
    mail.send_mail("Welcome", "Hi", "Shop <shop@example.com>", [BOUNCED])
    first = OutboundEmail.objects.get()
    wait_for(lambda: Suppression.objects.exists(), 60)

    row = Suppression.objects.get()
    assert (row.org, row.address, row.reason) == (None, BOUNCED, "hard_bounce")
    assert row.event is not None and row.event.email_id == first.pk
    assert addresses_sent(sandbox) == [BOUNCED]
    return sandbox


def test_after_a_hard_bounce_an_email_to_the_address_alone_fails_locally(bounced):
    mail.send_mail("Again", "Hi", "shop@example.com", ["Bounced <Bounced@Example.org>"])
    alone = OutboundEmail.objects.latest("pk")
    wait_for(settled, 60)

    assert addresses_sent(bounced) == [BOUNCED]  # the API never saw it again
    alone.refresh_from_db()
    assert (alone.status, alone.last_error_code) == (Status.FAILED, "recipient_suppressed")
    (failure,) = alone.failures.all()
    assert (failure.error_code, failure.will_retry, failure.http_status) == (
        "recipient_suppressed",
        False,
        None,
    )
    assert alone.quota_units == 0


def test_after_a_hard_bounce_the_other_recipient_gets_the_email(bounced):
    mail.send_mail("Both", "Hi", "shop@example.com", [BOUNCED, "ann@example.org"])
    both = OutboundEmail.objects.latest("pk")
    wait_for(settled, 60)

    assert addresses_sent(bounced) == [BOUNCED, "ann@example.org"]
    both.refresh_from_db()
    assert both.status == Status.SENT
    assert both.payload["to"] == ["ann@example.org"]
    assert (both.recipient_count, both.quota_units) == (1, 1)
    (failure,) = both.failures.all()
    assert (failure.error_code, failure.will_retry) == ("recipient_suppressed", False)
    assert failure.message == (
        "Left out 1 suppressed recipient: bounced@example.org (hard_bounce); sent to the other 1."
    )


def test_after_a_hard_bounce_a_batch_of_100_goes_without_the_address(bounced):
    batch = [
        EmailMessage("Digest", "Hi", "shop@example.com", [BOUNCED if n == 42 else f"u{n}@x.test"])
        for n in range(100)
    ]
    assert EmailBackend().send_messages(batch) == 100
    wait_for(settled, 90)

    assert addresses_sent(bounced).count(BOUNCED) == 1  # the first email's
    assert len(bounced.emails) == 1 + 99
    members = list(OutboundEmail.objects.filter(subject="Digest").order_by("pk"))
    suppressed = members.pop(42)
    assert (suppressed.status, suppressed.last_error_code, suppressed.batch_key) == (
        Status.FAILED,
        "recipient_suppressed",
        "",
    )
    assert {m.status for m in members} == {Status.SENT}
    (key,) = {m.batch_key for m in members}  # one request, not held up by the suppressed one
    assert [e["idempotency_key"] for e in bounced.emails].count(key) == 99
    (failure,) = FailedSend.objects.filter(error_code="recipient_suppressed")
    assert (failure.email_id, failure.will_retry) == (suppressed.pk, False)


def test_a_complaint_from_the_sandbox_stops_that_org_only(live):
    sandbox = live
    complained = "complained@example.org"

    def send(org: str) -> OutboundEmail:
        message = EmailMessage("News", "Hi", "shop@example.com", [complained])
        message.org = org  # type: ignore[attr-defined]
        assert EmailBackend().send_messages([message]) == 1
        return OutboundEmail.objects.latest("pk")

    send("acme")
    wait_for(lambda: Suppression.objects.exists(), 60)
    row = Suppression.objects.get()
    assert (row.org, row.address, row.reason) == ("acme", complained, "complaint")

    again, other_org = send("acme"), send("globex")
    wait_for(settled, 60)
    again.refresh_from_db()
    other_org.refresh_from_db()
    assert (again.status, again.last_error_code) == (Status.FAILED, "recipient_suppressed")
    assert other_org.status == Status.SENT  # globex was not complained about, yet
    assert addresses_sent(sandbox) == [complained, complained]
    assert sandbox.wait_for_webhooks(30)
    orgs = set(Suppression.objects.values_list("org", "reason"))
    assert orgs == {("acme", "complaint"), ("globex", "complaint")}
