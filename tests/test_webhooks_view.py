"""POST webhooks/<provider>/: each kind of request gets the answer SPEC §10 gives it."""

from __future__ import annotations

import datetime as dt
import io
import json
import uuid

import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from django_mailapi import events, outbox, signals
from django_mailapi.checks import check_settings
from django_mailapi.conf import get_settings
from django_mailapi.models import (
    DeliveryEvent,
    DeliveryStatus,
    FailedSend,
    OutboundEmail,
    Status,
)
from django_mailapi.outbox.lease import Lease
from django_mailapi.outbox.record import record_sent
from django_mailapi.webhooks import MAX_BODY_BYTES
from tests.webhook_helpers import (
    HEX_SECRET,
    OTHER_SECRET,
    SECRET,
    body_of,
    bounce,
    hex_signature,
    post,
    post_resend,
    resend_event,
    svix_headers,
)

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.urls_webhooks")]


@pytest.fixture(autouse=True)
def _secret(settings):
    settings.MAILAPI = {**settings.MAILAPI, "WEBHOOK_SECRET": [SECRET, HEX_SECRET]}


def sent_email(message_id: str, to: str = "ann@example.org", **fields) -> OutboundEmail:
    return OutboundEmail.objects.create(
        org=fields.pop("org", "acme"),
        provider=fields.pop("provider", "resend"),
        status=Status.SENT,
        idempotency_key=uuid.uuid4().hex,
        recipients=to,
        recipient_count=len(to.split(", ")),
        subject="Hi",
        provider_message_id=message_id,
        attempts=1,
        **fields,
    )


def status_of(email: OutboundEmail) -> str:
    email.refresh_from_db()
    return email.delivery_status


# --- the answers ---------------------------------------------------------------------------


def test_the_url_is_named_mailapi_webhook():
    assert reverse("mailapi-webhook", kwargs={"provider": "resend"}) == "/mailapi/webhooks/resend/"


def test_without_a_secret_every_provider_answers_404_and_nothing_is_stored(client, settings):
    settings.MAILAPI = {**settings.MAILAPI, "WEBHOOK_SECRET": None}
    assert post_resend(client, resend_event("delivered", "e1")).status_code == 404
    assert DeliveryEvent.objects.count() == 0


@pytest.mark.parametrize("provider", ["generic", "pigeon", "RESEND"])
def test_a_provider_that_takes_no_webhooks_answers_404(client, provider):
    body = body_of(resend_event("delivered", "e1"))
    assert post(client, provider, body, svix_headers(body)).status_code == 404


def test_get_is_405(client):
    assert client.get("/mailapi/webhooks/resend/").status_code == 405


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"svix-id": "msg_1", "svix-timestamp": "1", "svix-signature": "v1,AAAA"},
    ],
)
def test_a_missing_or_bad_signature_is_401_and_stores_nothing(client, headers):
    body = body_of(resend_event("bounced", "e1", bounce=bounce()))
    response = post(client, "resend", body, headers)
    assert response.status_code == 401
    assert response.json()["error"] == "webhook_signature"
    assert DeliveryEvent.objects.count() == FailedSend.objects.count() == 0


def test_a_signature_by_an_unknown_secret_is_401(client):
    response = post_resend(client, resend_event("delivered", "e1"), secret=OTHER_SECRET)
    assert response.status_code == 401


@pytest.mark.parametrize("offset", [-301, 301])
def test_a_stale_or_future_timestamp_is_401(client, offset):
    at = timezone.now() + dt.timedelta(seconds=offset)
    assert post_resend(client, resend_event("delivered", "e1"), at=at).status_code == 401
    assert DeliveryEvent.objects.count() == 0


def test_the_tolerance_is_a_setting(client, settings):
    settings.MAILAPI = {**settings.MAILAPI, "WEBHOOK_TOLERANCE_SECONDS": 3600}
    at = timezone.now() - dt.timedelta(seconds=1800)
    assert post_resend(client, resend_event("delivered", "e1"), at=at).status_code == 200


@pytest.mark.parametrize(
    "payload",
    [b"this is not json", b"[1, 2]", b"{}", json.dumps({"type": "email.sent"})],
)
def test_a_verified_body_of_the_wrong_shape_is_400(client, payload):
    body = payload if isinstance(payload, bytes) else payload.encode()
    response = post(client, "resend", body, svix_headers(body))
    assert response.status_code == 400
    assert response.json()["error"] == "webhook_payload"
    assert DeliveryEvent.objects.count() == 0


def test_an_unknown_event_type_is_stored_as_unknown_and_answered_200(client):
    response = post_resend(client, {"type": "domain.updated", "created_at": "x", "data": {}})
    assert response.status_code == 200
    (event,) = DeliveryEvent.objects.all()
    assert (event.type, event.details["raw_type"], event.email_id) == (
        "unknown",
        "domain.updated",
        None,
    )


def test_a_body_over_the_cap_is_refused_with_413_before_it_is_read(client):
    big = b'{"type": "email.delivered", "data": {"x": "' + b"a" * (10 * 1024 * 1024) + b'"}}'
    response = post(client, "resend", big, svix_headers(big))
    assert response.status_code == 413
    assert DeliveryEvent.objects.count() == 0


def test_a_body_at_the_cap_is_read(client):
    filler = "a" * (MAX_BODY_BYTES - 200)
    body = body_of(resend_event("delivered", "e1", note=filler))
    assert len(body) <= MAX_BODY_BYTES
    assert post(client, "resend", body, svix_headers(body)).status_code == 200


def test_the_view_needs_no_csrf_token(settings):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    assert post_resend(strict, resend_event("delivered", "e1")).status_code == 200


# --- stored once, matched, applied -----------------------------------------------------------


def test_a_redelivered_event_is_answered_200_and_stored_once(client):
    email = sent_email("em-1")
    body = body_of(resend_event("bounced", "em-1", bounce=bounce()))
    first = post(client, "resend", body, svix_headers(body, msg_id="msg_same"))
    again = post(client, "resend", body, svix_headers(body, msg_id="msg_same"))

    assert (first.status_code, again.status_code) == (200, 200)
    assert first.json() == {"received": 1, "stored": 1, "duplicates": 0, "matched": 1}
    assert again.json() == {"received": 1, "stored": 0, "duplicates": 1, "matched": 0}
    assert DeliveryEvent.objects.count() == 1
    assert FailedSend.objects.filter(email=email).count() == 1


def test_webhook_headers_and_a_rotated_secret_are_accepted(client):
    response = post_resend(
        client, resend_event("delivered", "e1"), secret=SECRET, prefix="webhook-"
    )
    assert response.status_code == 200


def test_a_delivered_event_marks_the_email_delivered_with_its_org(client):
    email = sent_email("em-1")
    assert post_resend(client, resend_event("delivered", "em-1")).status_code == 200
    assert status_of(email) == DeliveryStatus.DELIVERED
    (event,) = email.events.all()
    assert (event.org, event.provider, event.recipient) == ("acme", "resend", "ann@example.org")
    assert FailedSend.objects.count() == 0


def test_an_event_for_an_email_nobody_knows_is_kept_unmatched(client):
    response = post_resend(client, resend_event("delivered", "em-unknown"))
    assert response.json()["matched"] == 0
    (event,) = DeliveryEvent.objects.unmatched()
    assert (event.org, event.provider_message_id) == ("", "em-unknown")


def waiting_for_its_send(client) -> OutboundEmail:
    """An email being sent, and the bounce the API reported before the worker recorded
    the send (the webhook outran it): kept unmatched."""
    row = OutboundEmail.objects.create(
        org="acme",
        provider="resend",
        status=Status.SENDING,
        idempotency_key="k1",
        recipients="bounced@example.org",
        recipient_count=1,
        lease_token="tok",
        leased_until=timezone.now() + dt.timedelta(seconds=30),
        attempts=1,
    )
    payload = resend_event("bounced", "em-late", to=["bounced@example.org"], bounce=bounce())
    assert post_resend(client, payload).json()["matched"] == 0
    return row


def record(row: OutboundEmail) -> list[OutboundEmail]:
    lease = Lease("tok", row.leased_until, [row.pk], seconds=30, margin=5)
    return record_sent(lease, [(row, "em-late")], get_settings())


def test_an_event_that_outran_the_worker_is_matched_when_the_send_is_recorded(client):
    row = waiting_for_its_send(client)
    seen = []
    signals.delivery_event.connect(lambda **kw: seen.append(kw), weak=False, dispatch_uid="t")
    try:
        recorded = record(row)
        assert recorded == [row]
        assert events.match_sent(recorded) == 1  # what the delivery does at its end
    finally:
        signals.delivery_event.disconnect(dispatch_uid="t")
    assert_bounced(row)
    assert [kw["email"].pk for kw in seen] == [row.pk]


def test_the_sweeper_matches_an_event_the_worker_died_before_looking_up(client):
    """Invariant: an event whose email's API id is recorded is matched, even when the
    worker died between recording the send and looking up its events."""
    row = waiting_for_its_send(client)
    record(row)  # ... and the worker is gone
    assert DeliveryEvent.objects.unmatched().count() == 1

    outbox.sweep()

    assert_bounced(row)
    outbox.sweep()  # nothing is matched, nor applied, twice
    assert FailedSend.objects.filter(email=row).count() == 1


def test_the_sweeper_leaves_events_of_emails_sent_elsewhere_alone(client):
    post_resend(client, resend_event("delivered", "em-not-ours"))
    assert events.match_stranded(timezone.now()) == 0
    assert DeliveryEvent.objects.unmatched().count() == 1


def assert_bounced(row: OutboundEmail) -> None:
    row.refresh_from_db()
    assert (row.status, row.delivery_status) == (Status.SENT, DeliveryStatus.BOUNCED)
    (failure,) = row.failures.all()
    assert (failure.error_code, failure.will_retry) == ("hard_bounce", False)
    assert failure.source == "mailapi"
    assert DeliveryEvent.objects.unmatched().count() == 0


def test_matching_a_recorded_send_costs_one_query_when_no_event_waits(
    django_assert_num_queries,
):
    rows = [sent_email(f"em-{n}") for n in range(5)]
    with django_assert_num_queries(1):
        assert events.match_sent(rows) == 0


@pytest.mark.parametrize(
    ("kind", "extra", "code", "status"),
    [
        ("bounced", {"bounce": bounce("Permanent")}, "hard_bounce", "bounced"),
        ("bounced", {"bounce": bounce("Transient")}, "soft_bounce", "bounced"),
        ("bounced", {"bounce": bounce("Undetermined")}, "soft_bounce", "bounced"),
        ("complained", {}, "complaint", "complained"),
        ("failed", {"failed": {"reason": "reached_daily_quota"}}, "delivery_failed", "failed"),
        ("suppressed", {"suppressed": {"reason": "previous_bounce"}}, "suppressed", "suppressed"),
    ],
)
def test_failures_after_acceptance_are_failed_sends_with_a_suggested_action(
    client, kind, extra, code, status
):
    email = sent_email("em-1")
    assert post_resend(client, resend_event(kind, "em-1", **extra)).status_code == 200

    assert status_of(email) == status
    (failure,) = FailedSend.objects.all()
    assert (failure.error_code, failure.http_status, failure.will_retry) == (code, None, False)
    assert failure.message.startswith("ann@example.org: ")
    assert failure.details["event_type"] == f"email.{kind}"
    assert failure.suggested_action  # from the mailapi catalog, never the generic fallback
    assert "does not know" not in failure.suggested_action

    out = io.StringIO()
    call_command("mailapi_failed", "--format", "json", stdout=out)
    (listed,) = json.loads(out.getvalue())
    assert (listed["error_code"], listed["email_id"], listed["will_retry"]) == (
        code,
        email.pk,
        False,
    )


def test_opened_and_clicked_events_change_no_status(client):
    email = sent_email("em-1")
    post_resend(client, resend_event("delivered", "em-1"))
    post_resend(client, resend_event("opened", "em-1"))
    post_resend(client, resend_event("clicked", "em-1", click={"link": "https://x.org"}))
    assert status_of(email) == DeliveryStatus.DELIVERED
    assert email.events.count() == 3


def test_a_late_delivered_event_does_not_undo_a_bounce(client):
    email = sent_email("em-1")
    post_resend(client, resend_event("bounced", "em-1", bounce=bounce()))
    post_resend(client, resend_event("delivered", "em-1"))
    assert status_of(email) == DeliveryStatus.BOUNCED


def test_delivery_after_a_delay_is_delivered_and_a_late_delay_does_not_undo_it(client):
    email = sent_email("em-1")
    post_resend(client, resend_event("delivery_delayed", "em-1"))
    assert status_of(email) == DeliveryStatus.DELIVERY_DELAYED
    post_resend(client, resend_event("delivered", "em-1"))
    assert status_of(email) == DeliveryStatus.DELIVERED
    post_resend(client, resend_event("delivery_delayed", "em-1"))
    assert status_of(email) == DeliveryStatus.DELIVERED


def test_for_several_recipients_the_events_say_which_and_the_worst_wins(client):
    email = sent_email("em-1", to="ann@example.org, bo@example.org")
    post_resend(client, resend_event("delivered", "em-1", to=["ann@example.org"]))
    post_resend(client, resend_event("delivery_delayed", "em-1", to=["bo@example.org"]))
    assert status_of(email) == DeliveryStatus.DELIVERY_DELAYED
    post_resend(client, resend_event("bounced", "em-1", to=["bo@example.org"], bounce=bounce()))
    assert status_of(email) == DeliveryStatus.BOUNCED
    (failure,) = FailedSend.objects.all()
    assert failure.message.startswith("bo@example.org: ")
    assert sorted(email.events.values_list("recipient", flat=True)) == [
        "ann@example.org",
        "bo@example.org",
        "bo@example.org",
    ]


def test_the_delivery_event_signal_carries_the_event_and_email_once(client):
    email = sent_email("em-1")
    seen = []
    signals.delivery_event.connect(lambda **kw: seen.append(kw), weak=False, dispatch_uid="t")
    try:
        body = body_of(resend_event("complained", "em-1"))
        headers = svix_headers(body)
        post(client, "resend", body, headers)
        post(client, "resend", body, headers)  # a redelivery: no second signal
    finally:
        signals.delivery_event.disconnect(dispatch_uid="t")
    (kw,) = seen
    assert kw["sender"] is DeliveryEvent
    assert kw["event"].type == "complained"
    assert kw["email"].pk == email.pk
    assert kw["email"].delivery_status == DeliveryStatus.COMPLAINED


def test_a_burst_of_a_thousand_events_is_stored_one_each(client):
    emails = [sent_email(f"em-{n}", to=f"r{n}@example.org") for n in range(50)]
    answers = set()
    for n in range(1000):
        payload = resend_event("delivered" if n < 500 else "opened", f"em-{n % 50}")
        answers.add(post_resend(client, payload).status_code)
    assert answers == {200}
    assert DeliveryEvent.objects.count() == 1000
    assert DeliveryEvent.objects.unmatched().count() == 0
    assert {status_of(email) for email in emails} == {DeliveryStatus.DELIVERED}


# --- Sendr and Emitlo ------------------------------------------------------------------------


def test_sendr_events_with_either_signature_form(client):
    email = sent_email("em_1", provider="sendr")
    payload = {
        "id": "evt_1",
        "type": "email.bounced",
        "created_at": "2026-01-01T00:00:00Z",
        "data": {"email_id": "em_1", "to": ["ann@example.org"], "bounce": {"type": "soft"}},
    }
    body = body_of(payload)
    assert post(client, "sendr", body, {"x-sendry-signature": "bad"}).status_code == 401
    sig = hex_signature(body)
    assert post(client, "sendr", body, {"x-sendry-signature": f"sha256={sig}"}).status_code == 200
    assert post(client, "sendr", body, {"x-sendry-signature": sig}).json()["duplicates"] == 1
    assert status_of(email) == DeliveryStatus.BOUNCED
    assert FailedSend.objects.get().error_code == "soft_bounce"


def emitlo_post(client, event_type: str, message_id: str, *, timestamp: str, delivery: str):
    body = body_of(
        {
            "event_type": event_type,
            "timestamp": timestamp,
            "data": {"message_id": message_id, "to_email": "ann@example.org", "subject": "Hi"},
        }
    )
    headers = {
        "X-Emitlo-Signature": "sha256=" + hex_signature(body),
        "X-Emitlo-Event": event_type,
        "X-Emitlo-Delivery-Id": delivery,
    }
    return post(client, "emitlo", body, headers)


def test_emitlo_events_dedupe_on_the_delivery_id_and_refuse_stale_ones(client):
    email = sent_email("m-1", provider="emitlo")
    now = timezone.now().isoformat()
    stale = (timezone.now() - dt.timedelta(hours=1)).isoformat()
    old = emitlo_post(client, "hard_bounced", "m-1", timestamp=stale, delivery="d1")
    assert old.status_code == 401
    new = emitlo_post(client, "hard_bounced", "m-1", timestamp=now, delivery="d1")
    assert new.status_code == 200
    again = emitlo_post(client, "hard_bounced", "m-1", timestamp=now, delivery="d1")
    assert again.json()["duplicates"] == 1
    assert status_of(email) == DeliveryStatus.BOUNCED
    failure = FailedSend.objects.get()
    assert failure.error_code == "hard_bounce"
    assert failure.details["provider_suppressed"] is True


# --- settings and checks ---------------------------------------------------------------------


def test_w004_warns_when_the_urls_are_mounted_without_a_secret(settings):
    settings.MAILAPI = {"API_KEY": "re_x"}
    (message,) = check_settings()
    assert message.id == "mailapi.W004"
    assert "/mailapi/webhooks/resend/" in message.msg
    assert "WEBHOOK_SECRET" in message.hint
    settings.MAILAPI = {"API_KEY": "re_x", "WEBHOOK_SECRET": "whsec_x"}
    assert check_settings() == []


def test_w004_is_reported_once_however_many_mailers(settings):
    settings.MAILAPI = {"API_KEY": "re_x"}
    settings.MAILERS = {
        "a": {"BACKEND": "django_mailapi.backend.EmailBackend", "OPTIONS": {}},
        "b": {"BACKEND": "django_mailapi.backend.EmailBackend", "OPTIONS": {}},
    }
    assert [m.id for m in check_settings()] == ["mailapi.W004"]


@pytest.mark.urls("tests.urls")
def test_no_w004_when_the_urls_are_not_mounted(settings):
    settings.MAILAPI = {"API_KEY": "re_x"}
    assert check_settings() == []


@pytest.mark.urls("tests.urls")
@pytest.mark.parametrize(
    ("key", "value", "check_id"),
    [
        ("WEBHOOK_SECRET", "", "mailapi.E025"),
        ("WEBHOOK_SECRET", ["whsec_a", ""], "mailapi.E025"),
        ("WEBHOOK_SECRET", 42, "mailapi.E025"),
        ("WEBHOOK_TOLERANCE_SECONDS", 0, "mailapi.E026"),
        ("WEBHOOK_TOLERANCE_SECONDS", "300", "mailapi.E026"),
    ],
)
def test_malformed_webhook_settings_have_their_own_ids(settings, key, value, check_id):
    settings.MAILAPI = {"API_KEY": "re_x", "WEBHOOK_SECRET": "whsec_x", key: value}
    assert [m.id for m in check_settings()] == [check_id]


def test_webhook_secret_reads_as_a_list(settings):
    for value, expected in ((None, []), ("s", ["s"]), (["a", "b"], ["a", "b"])):
        settings.MAILAPI = {"API_KEY": "re_x", "WEBHOOK_SECRET": value}
        secrets = get_settings().WEBHOOK_SECRET
        assert secrets == expected


def test_the_sweeper_looks_at_the_last_hours_unmatched_events_only(client):
    row = waiting_for_its_send(client)
    record(row)
    DeliveryEvent.objects.update(received_at=timezone.now() - dt.timedelta(hours=2))

    assert events.match_stranded(timezone.now()) == 0

    DeliveryEvent.objects.update(received_at=timezone.now() - dt.timedelta(minutes=50))
    assert events.match_stranded(timezone.now()) == 1


def test_the_sweepers_look_at_unmatched_events_reads_their_partial_index(postgres):
    """5,000 unmatched events over 90 days (those of emails sent elsewhere pile up):
    the sweeper reads the last hour's through the partial index by arrival."""
    from django.db import connection

    now = timezone.now()
    DeliveryEvent.objects.bulk_create(
        DeliveryEvent(
            provider="resend",
            provider_event_id=f"evt-{n}",
            provider_message_id=f"elsewhere-{n}",
            type="delivered",
            occurred_at=now - dt.timedelta(minutes=26 * n),
            received_at=now - dt.timedelta(minutes=26 * n),
        )
        for n in range(5000)
    )
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {DeliveryEvent._meta.db_table}")
    sql, params = events.stranded_events(timezone.now()).query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("SET enable_seqscan = off")
        try:
            cursor.execute(f"EXPLAIN {sql}", params)
            plan = "\n".join(line for (line,) in cursor.fetchall())
        finally:
            cursor.execute("RESET enable_seqscan")
    # (Which outbox index each event's probe reads depends on the outbox's size: at a
    # million emails, the message-id index; make bench-scale prints that plan.)
    assert "mailapi_event_unmatched_at" in plan, plan
