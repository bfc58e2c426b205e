"""The suppression list (SPEC §11): rows from delivery events, and the worker's check.

The worker's code runs in this process against the sandbox over HTTP; the same path
through a real Celery worker is in test_suppression_live.py.
"""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine
from django.core import mail
from django.core.mail import EmailMessage
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext

from django_mailapi import events, outbox, suppression
from django_mailapi.backend import EmailBackend
from django_mailapi.checks import check_settings
from django_mailapi.models import (
    DeliveryEvent,
    FailedSend,
    OutboundEmail,
    Status,
    Suppression,
    UsageCounter,
)
from tests.helpers import process, process_one, send, send_each, wait_for
from tests.webhook_helpers import SECRET, bounce, post_resend, resend_event

pytestmark = pytest.mark.django_db


def suppress(address: str, org: str | None = None, reason: str = "hard_bounce") -> Suppression:
    return Suppression.objects.create(org=org, address=address, reason=reason)


def suppressions() -> set[tuple[str | None, str, str]]:
    return set(Suppression.objects.values_list("org", "address", "reason"))


def sent_to(sandbox) -> list[str]:
    """Every address the API was asked to mail, in to, cc or bcc."""
    found = []
    for email in sandbox.emails:
        payload = email["payload"]
        for part in ("to", "cc", "bcc"):
            value = payload.get(part) or []
            found += [value] if isinstance(value, str) else value
    return found


# --- the table -----------------------------------------------------------------------------
def test_an_address_has_one_row_for_every_org_and_one_per_org():
    if connection.vendor == "mysql":
        pytest.skip("MySQL and MariaDB have no partial unique constraints (models.W036)")
    suppress("ann@example.org")
    suppress("ann@example.org", org="acme")
    suppress("ann@example.org", org="globex")
    for org in (None, "acme"):
        with pytest.raises(IntegrityError), transaction.atomic():
            suppress("ann@example.org", org=org, reason="manual")
    assert Suppression.objects.count() == 3


def test_addresses_are_compared_bare_and_lower_case():
    assert suppression.normalize(" Ann <Ann@Example.ORG> ") == "ann@example.org"
    assert suppression.normalize('"Doe, Ann" <ANN@example.org>') == "ann@example.org"
    assert suppression.normalize("BOB@Example.org") == "bob@example.org"


def test_suppress_on_is_checked_with_its_own_id(settings):
    settings.MAILAPI = {**settings.MAILAPI, "SUPPRESS_ON": ["soft_bounce"]}
    assert [m.id for m in check_settings()] == ["mailapi.E027"]
    for good in ([], ["complaint"], ("hard_bounce", "complaint")):
        settings.MAILAPI = {**settings.MAILAPI, "SUPPRESS_ON": good}
        assert [m.id for m in check_settings()] == []


# --- rows from delivery events ---------------------------------------------------------------
@pytest.fixture
def webhooks(settings):
    settings.MAILAPI = {**settings.MAILAPI, "WEBHOOK_SECRET": SECRET}
    settings.ROOT_URLCONF = "tests.urls_webhooks"


def sent_email(message_id: str, to: str = "ann@example.org", org: str = "acme") -> OutboundEmail:
    return OutboundEmail.objects.create(
        org=org,
        provider="resend",
        status=Status.SENT,
        idempotency_key=f"k-{message_id}",
        recipients=to,
        recipient_count=1,
        provider_message_id=message_id,
        attempts=1,
    )


def test_a_hard_bounce_suppresses_the_address_for_every_org(client, webhooks):
    sent_email("em-1", to="Ann@Example.org")
    post_resend(client, resend_event("bounced", "em-1", to=["Ann@Example.org"], bounce=bounce()))

    (row,) = Suppression.objects.all()
    assert (row.org, row.address, row.reason) == (None, "ann@example.org", "hard_bounce")
    assert row.event == DeliveryEvent.objects.get()
    assert row.note == "resend email.bounced event"


def test_a_hard_bounce_for_an_email_not_yet_recorded_suppresses_at_once(client, webhooks):
    post_resend(client, resend_event("bounced", "em-unknown", bounce=bounce()))
    assert suppressions() == {(None, "ann@example.org", "hard_bounce")}


def test_a_complaint_suppresses_the_address_for_the_complaining_emails_org(client, webhooks):
    sent_email("em-1", org="globex")
    post_resend(client, resend_event("complained", "em-1"))
    assert suppressions() == {("globex", "ann@example.org", "complaint")}


def test_a_complaint_that_outran_the_worker_suppresses_once_it_is_matched(client, webhooks):
    post_resend(client, resend_event("complained", "em-late"))
    assert suppressions() == set()  # whose org? not known yet

    row = sent_email("em-late", org="globex")
    assert events.match_sent([row]) == 1
    assert suppressions() == {("globex", "ann@example.org", "complaint")}


@pytest.mark.parametrize(
    ("said", "reason"), [("previous_bounce", "hard_bounce"), ("previous_complaint", "complaint")]
)
def test_a_provider_side_suppression_adds_the_address_as_what_it_names(
    client, webhooks, said, reason
):
    sent_email("em-1", org="acme")
    post_resend(client, resend_event("suppressed", "em-1", suppressed={"reason": said}))
    assert suppressions() == {("acme", "ann@example.org", reason)}


@pytest.mark.parametrize(
    ("kind", "extra"),
    [
        ("bounced", {"bounce": bounce("Transient")}),
        ("bounced", {"bounce": bounce("Undetermined")}),
        ("delivered", {}),
        ("failed", {"failed": {"reason": "reached_daily_quota"}}),
        ("opened", {}),
    ],
)
def test_soft_bounces_deliveries_and_failures_suppress_nothing(client, webhooks, kind, extra):
    sent_email("em-1")
    post_resend(client, resend_event(kind, "em-1", **extra))
    assert Suppression.objects.count() == 0


def test_suppress_on_decides_which_events_add_rows(client, webhooks, settings):
    settings.MAILAPI = {**settings.MAILAPI, "SUPPRESS_ON": ["complaint"]}
    sent_email("em-1", to="ann@example.org")
    sent_email("em-2", to="bob@example.org")
    post_resend(client, resend_event("bounced", "em-1", bounce=bounce()))
    post_resend(client, resend_event("complained", "em-2", to=["bob@example.org"]))
    assert suppressions() == {("acme", "bob@example.org", "complaint")}

    settings.MAILAPI = {**settings.MAILAPI, "SUPPRESS_ON": []}
    sent_email("em-3", to="cy@example.org")
    post_resend(client, resend_event("complained", "em-3", to=["cy@example.org"]))
    assert Suppression.objects.count() == 1


def test_replayed_and_repeated_bounces_leave_one_row(client, webhooks):
    sent_email("em-1")
    sent_email("em-2")
    payload = resend_event("bounced", "em-1", bounce=bounce())
    for _ in range(3):  # the same event id, redelivered
        assert post_resend(client, payload, msg_id="msg_same").status_code == 200
    post_resend(client, resend_event("bounced", "em-2", bounce=bounce()))  # another event
    assert DeliveryEvent.objects.count() == 2
    (row,) = Suppression.objects.all()
    assert row.event == DeliveryEvent.objects.get(provider_event_id="msg_same")


# --- the worker's check --------------------------------------------------------------------
def test_an_email_to_a_suppressed_address_alone_fails_and_never_reaches_the_api(sandbox):
    suppress("gone@example.org")
    row = process_one(send("Gone <Gone@Example.org>"))

    assert (row.status, row.last_error_code, row.last_error_status) == (
        Status.FAILED,
        "recipient_suppressed",
        None,
    )
    (failure,) = FailedSend.objects.all()
    assert (failure.source, failure.error_code, failure.will_retry) == (
        "mailapi",
        "recipient_suppressed",
        False,
    )
    assert failure.message == (
        "Every recipient is on the suppression list: Gone <Gone@Example.org> (hard_bounce). "
        "Nothing was sent."
    )
    assert "mailapi_suppress remove" in failure.suggested_action
    assert sandbox.stats["requests"] == 0
    assert (row.quota_units, UsageCounter.objects.filter(units_sent__gt=0).count()) == (0, 0)


def test_the_other_recipients_get_the_email_and_a_failed_send_names_who_was_left_out(sandbox):
    gone = suppress("gone@example.org")
    left = suppress("left@example.org", org="acme", reason="complaint")
    msg = EmailMessage(
        "Hi",
        "Body",
        "shop@example.com",
        ["ann@example.org", "gone@example.org"],
        cc=["Left <left@example.org>", "cy@example.org"],
        bcc=["dee@example.org"],
    )
    msg.org = "acme"
    EmailBackend().send_messages([msg])
    row = process_one(OutboundEmail.objects.get())

    assert row.status == Status.SENT
    assert row.payload["to"] == ["ann@example.org"]
    assert row.payload["cc"] == ["cy@example.org"]
    assert row.payload["bcc"] == ["dee@example.org"]
    assert row.recipient_count == 3
    # What the application asked for stays on the row, for the admin and its searches.
    assert "gone@example.org" in row.recipients
    (received,) = sandbox.emails
    assert received["payload"]["to"] == ["ann@example.org"]
    assert received["payload"]["cc"] == ["cy@example.org"]
    assert received["payload"]["bcc"] == ["dee@example.org"]
    (failure,) = FailedSend.objects.all()
    assert (failure.error_code, failure.will_retry, failure.http_status) == (
        "recipient_suppressed",
        False,
        None,
    )
    assert failure.message == (
        "Left out 2 suppressed recipients: gone@example.org (hard_bounce), "
        "Left <left@example.org> (complaint); sent to the other 3."
    )
    assert failure.details == {
        "left_out": [
            {
                "part": "to",
                "address": "gone@example.org",
                "suppression_id": gone.pk,
                "reason": "hard_bounce",
            },
            {
                "part": "cc",
                "address": "Left <left@example.org>",
                "suppression_id": left.pk,
                "reason": "complaint",
            },
        ]
    }
    assert UsageCounter.objects.get(org="acme", period="day").units_sent == 3


def test_quota_counts_only_the_recipients_actually_sent_to(sandbox, settings):
    settings.MAILAPI = {**settings.MAILAPI, "DAILY_LIMIT": 2}
    suppress("gone@example.org")
    row = process_one(send("ann@example.org", "gone@example.org", "bob@example.org"))

    assert (row.status, row.quota_units) == (Status.SENT, 2)
    assert UsageCounter.objects.get(period="day").units_sent == 2
    assert sorted(sent_to(sandbox)) == ["ann@example.org", "bob@example.org"]


def test_a_row_for_another_org_does_not_stop_this_one(sandbox):
    suppress("ann@example.org", org="globex", reason="complaint")
    row = process_one(send("ann@example.org", org="acme"))
    assert row.status == Status.SENT
    assert sent_to(sandbox) == ["ann@example.org"]


def test_an_email_whose_to_recipients_are_all_suppressed_is_not_sent_to_its_cc_alone(sandbox):
    suppress("gone@example.org")
    row = process_one(send("gone@example.org", cc=["cy@example.org"]))

    assert (row.status, row.last_error_code) == (Status.FAILED, "recipient_suppressed")
    assert FailedSend.objects.get().message == (
        "Every to recipient is on the suppression list: gone@example.org (hard_bounce). "
        "The resend API needs an address in to, so the email was not sent to its other "
        "recipients (cy@example.org) either."
    )
    assert sandbox.emails == []


def test_a_suppressed_email_fails_alone_and_its_batch_goes_without_it(sandbox):
    suppress("u42@example.com")
    rows = process(*send_each(*(f"u{i}@example.com" for i in range(100))))

    by_status = {row.pk: row.status for row in rows}
    assert by_status.pop(rows[42].pk) == Status.FAILED
    assert set(by_status.values()) == {Status.SENT}
    assert sandbox.stats["requests"] == 1  # the other 99 in one batch request
    assert len(sandbox.emails) == 99
    assert "u42@example.com" not in sent_to(sandbox)
    (key,) = {row.batch_key for row in rows if row.status == Status.SENT}
    assert rows[42].batch_key == ""
    assert {email["idempotency_key"] for email in sandbox.emails} == {key}
    assert FailedSend.objects.get().email_id == rows[42].pk


def test_a_batch_the_api_may_have_goes_again_whole_with_its_payloads_despite_a_suppression(
    sandbox, settings
):
    """The API may hold the batch under its key already: the same payloads go again, so
    it answers with what it has; a narrowed payload would be refused (409) or sent twice."""
    settings.MAILAPI = {**settings.MAILAPI, "TIMEOUT": 0.3, "RETRY_BASE_DELAY": 30.0}
    rows = process(*send_each("a@example.com", "slow+800@example.com"))
    assert {row.last_error_code for row in rows} == {"timeout"}
    wait_for(lambda: len(sandbox.emails) == 2, timeout=10)  # the API did take it
    suppress("a@example.com")  # a bounce arrives meanwhile

    settings.MAILAPI = {**settings.MAILAPI, "TIMEOUT": 5.0}
    with time_machine.travel(rows[0].next_attempt_at + dt.timedelta(seconds=1), tick=True):
        rows = process(*rows)
    assert {row.status for row in rows} == {Status.SENT}
    assert rows[0].payload["to"] == ["a@example.com"]
    assert sandbox.stats["replays"] == 1
    assert len(sandbox.emails) == 2
    assert not FailedSend.objects.filter(error_code="recipient_suppressed").exists()


def test_an_email_narrowed_once_goes_again_with_the_same_payload(sandbox, settings):
    """A narrowed email that failed in doubt keeps its stored, narrowed payload."""
    settings.MAILAPI = {**settings.MAILAPI, "RETRY_BASE_DELAY": 30.0, "BATCH_SIZE": 1}
    suppress("gone@example.org")
    row = process_one(send("flaky+1@example.org", "gone@example.org"))
    assert (row.status, row.last_error_status, row.payload["to"]) == (
        Status.QUEUED,
        500,
        ["flaky+1@example.org"],
    )
    Suppression.objects.all().delete()  # the check is not made again for it

    with time_machine.travel(row.next_attempt_at + dt.timedelta(seconds=1), tick=True):
        row = process_one(row)
    assert row.status == Status.SENT
    assert sent_to(sandbox) == ["flaky+1@example.org"]
    assert FailedSend.objects.filter(error_code="recipient_suppressed").count() == 1


def test_the_check_is_one_query_for_a_whole_claim(sandbox):
    suppress("c7@example.com")
    messages = [
        EmailMessage(
            "Hi", "Body", "shop@example.com", [f"u{i}@example.com"], cc=[f"c{i}@example.com"]
        )
        for i in range(100)
    ]
    EmailBackend().send_messages(messages)
    ids = list(OutboundEmail.objects.values_list("pk", flat=True))
    with CaptureQueriesContext(connection) as captured:
        outbox.process(ids)
    lookups = [q["sql"] for q in captured if "django_mailapi_suppression" in q["sql"]]
    assert len(lookups) == 1
    assert OutboundEmail.objects.filter(status=Status.SENT).count() == 100
    assert sandbox.stats["requests"] == 1
    assert "c7@example.com" not in sent_to(sandbox)
    assert len(sent_to(sandbox)) == 199
    assert FailedSend.objects.get().message == (
        "Left out 1 suppressed recipient: c7@example.com (hard_bounce); sent to the other 1."
    )


def test_send_mail_does_not_read_the_list_yet_a_suppressed_address_ends_in_a_failed_email(
    sandbox, settings
):
    settings.EMAIL_BACKEND = "django_mailapi.backend.EmailBackend"
    suppress("gone@example.org")
    with CaptureQueriesContext(connection) as captured:
        assert mail.send_mail("Hi", "Body", "shop@example.com", ["gone@example.org"]) == 1
    assert not any("suppression" in q["sql"] for q in captured)
    row = OutboundEmail.objects.get()
    assert row.status == Status.QUEUED

    row = process_one(row)
    assert (row.status, row.last_error_code) == (Status.FAILED, "recipient_suppressed")
    assert row.failures.get().error_code == "recipient_suppressed"
    assert sandbox.emails == []


def test_an_address_removed_from_the_list_is_mailed_again(sandbox):
    suppress("ann@example.org")
    assert process_one(send("ann@example.org")).status == Status.FAILED
    assert suppression.remove(["ANN@example.org"], org=None) == ["ann@example.org"]
    assert process_one(send("ann@example.org")).status == Status.SENT
