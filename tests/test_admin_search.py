"""The admin's search by recipient and subject, and what serves it at scale."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib import admin
from django.db import connection
from django.db.models import QuerySet
from django.test import RequestFactory
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from django_mailapi.models import FailedSend, OutboundEmail
from tests.factories import failed_email, make_email

pytestmark = pytest.mark.django_db

FAILURES = reverse("admin:django_mailapi_failedsend_changelist")


def searched(model: type, term: str) -> QuerySet[Any]:
    model_admin = admin.site._registry[model]
    queryset, _ = model_admin.get_search_results(
        RequestFactory().get("/"), model._default_manager.all(), term
    )
    return queryset


def plan(queryset: QuerySet[Any]) -> str:
    return explain(*queryset.query.sql_with_params())


def explain(sql: str, params: Any = None) -> str:
    """PostgreSQL's plan with sequential and plain index scans priced out of reach, so
    what is left is what an index can serve by the search condition itself."""
    with connection.cursor() as cursor:
        cursor.execute("SET enable_seqscan = off")
        cursor.execute("SET enable_indexscan = off")
        try:
            cursor.execute(f"EXPLAIN {sql}", params)
            return "\n".join(row[0] for row in cursor.fetchall())
        finally:
            cursor.execute("RESET enable_seqscan")
            cursor.execute("RESET enable_indexscan")


def test_email_search_by_recipient_reads_the_trigram_indexes(postgres):
    make_email(to="dana@umbrella.test", subject="Shipped")

    queryset = searched(OutboundEmail, "dana@umb")

    assert [e.recipients for e in queryset] == ["dana@umbrella.test"]
    found = plan(queryset)
    assert "mailapi_email_recipients_trgm" in found, found
    assert "mailapi_email_subject_trgm" in found, found
    assert "Seq Scan on django_mailapi_outboundemail" not in found, found


def test_failed_send_search_finds_the_emails_first_then_their_failures_by_index(postgres):
    # Regression: with the admin's default search, or an OR over a subquery, PostgreSQL
    # read every failed send and hash-joined the outbox: 2 s on a million rows.
    email = failed_email("invalid_attachment", 422, to="dana@umbrella.test")
    failed_email("application_error", 500, to="other@example.org")

    with CaptureQueriesContext(connection) as captured:
        found = list(searched(FailedSend, "dana@umb").order_by("-created_at", "-id")[:100])

    assert [f.email_id for f in found] == [email.pk]
    emails_sql, failures_sql = (q["sql"] for q in captured)
    assert "mailapi_email_recipients_trgm" in explain(emails_sql)
    failures_plan = explain(failures_sql)
    assert "Seq Scan" not in failures_plan, failures_plan
    assert "outboundemail" not in failures_sql  # no join, no subquery: ids and codes


@pytest.mark.parametrize(
    ("term", "expected"),
    [
        ("DANA@UMBRELLA", ["invalid_attachment"]),  # any case, part of an address
        ("order has", ["invalid_attachment"]),  # part of the subject, whole
        ("quota", ["daily_quota_exceeded"]),  # part of a code the catalogs know
        ("Daily_Quota_Exceeded", ["daily_quota_exceeded"]),
        ("made_up_code", ["made_up_code"]),  # a code no catalog knows, whole
        ("made_up", []),
        ("100%", []),  # LIKE's wildcards are literal
    ],
)
def test_failed_send_search_matches_addresses_subjects_and_codes(admin_client, term, expected):
    failed_email("invalid_attachment", 422, to="dana@umbrella.test", subject="Your order has")
    failed_email("daily_quota_exceeded", None, to="ann@example.org", subject="Quota")
    failed_email("made_up_code", 400, to="bob@example.org", subject="Other")

    codes = sorted(searched(FailedSend, term).values_list("error_code", flat=True))

    assert codes == expected
    assert admin_client.get(FAILURES, {"q": term}).status_code == 200


@pytest.mark.parametrize("choice", ["any", "ahead"])
def test_scheduled_filter_reads_the_send_at_index(postgres, admin_client, choice):
    # Regression: "has a send_at" read the whole outbox (255 ms at a million emails).
    from django.utils import timezone

    from django_mailapi.models import Status

    make_email(status=Status.QUEUED, send_at=timezone.now() + timezone.timedelta(hours=1))
    make_email()
    url = reverse("admin:django_mailapi_outboundemail_changelist")

    with CaptureQueriesContext(connection) as captured:
        assert admin_client.get(url, {"scheduled": choice}).status_code == 200

    statements = [q["sql"] for q in captured if '"send_at" ' in q["sql"]]
    assert len(statements) == 2  # the count and the rows
    for sql in statements:
        found = explain(sql)
        assert "Seq Scan" not in found, found
    if choice == "any":
        assert "mailapi_email_send_at" in found, found


def test_delivery_event_search_by_recipient_reads_the_trigram_index(postgres, admin_client):
    from django.utils import timezone

    from django_mailapi.models import DeliveryEvent

    for n, recipient in enumerate(["dana@umbrella.test", "ann@example.org"]):
        DeliveryEvent.objects.create(
            provider="resend",
            provider_event_id=f"e{n}",
            type="bounced",
            recipient=recipient,
            occurred_at=timezone.now(),
        )
    url = reverse("admin:django_mailapi_deliveryevent_changelist")

    page = admin_client.get(url, {"q": "DANA@umb"}).content.decode()
    queryset = searched(DeliveryEvent, "dana@umb")

    assert "dana@umbrella.test" in page and "ann@example.org" not in page
    assert list(queryset.values_list("recipient", flat=True)) == ["dana@umbrella.test"]
    found = plan(queryset)
    assert "mailapi_event_recipient_trgm" in found, found


def test_failed_send_search_says_when_it_looked_at_only_the_newest_emails(
    admin_client, monkeypatch
):
    from django_mailapi.admin import failures

    monkeypatch.setattr(failures, "SEARCH_EMAILS_LIMIT", 2)
    for n in range(3):
        failed_email("invalid_attachment", 422, to=f"user{n}@many.test")

    page = admin_client.get(FAILURES, {"q": "@many.test"}).content.decode()

    assert "More than 2 emails match; these are the failures of the newest 2." in page
    assert "user2@many.test" in page and "user1@many.test" in page
    assert "user0@many.test" not in page
    assert "More than" not in admin_client.get(FAILURES, {"q": "user0@"}).content.decode()
