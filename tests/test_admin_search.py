"""The admin's search by recipient and subject, and what serves it at scale."""

from __future__ import annotations

import importlib
from typing import Any

import pytest
from django.contrib import admin
from django.db import connection
from django.db.models import QuerySet
from django.test import RequestFactory
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from django_mailapi.models import CLAIMABLE, SETTLED, FailedSend, OutboundEmail, Status
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


def outbox_of_settled(n: int = 5000) -> None:
    """``n`` sent emails more, and fresh statistics: in a real outbox nearly every row
    is settled, so "status is sent, failed or cancelled" alone narrows nothing and
    only the trigram indexes can serve the search (a handful of rows would let
    PostgreSQL read the status index instead)."""
    email = make_email(status=Status.SENT, to="someone@example.org", subject="Receipt")
    table = OutboundEmail._meta.db_table
    columns = [
        f.column
        for f in OutboundEmail._meta.concrete_fields
        if f.column not in ("id", "idempotency_key")
    ]
    listed = ", ".join(columns)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (idempotency_key, {listed}) "
            f"SELECT idempotency_key || '/' || g, {listed} FROM {table}, "
            f"generate_series(1, %s) AS g WHERE id = %s",
            [n, email.pk],
        )
        # What autovacuum does: move the GIN indexes' pending entries into the index.
        for index in ("mailapi_email_recipients_settled", "mailapi_email_subject_settled"):
            cursor.execute("SELECT gin_clean_pending_list(%s::regclass)", [index])
        cursor.execute(f"ANALYZE {table}")


def test_email_search_reads_the_trigram_indexes_for_settled_emails_and_the_status_ones_for_the_rest(
    postgres,
):
    """Regression: said as one condition under the OR, PostgreSQL pulled the text test
    out of the status arms and read the status indexes for every settled email."""
    make_email(to="dana@umbrella.test", subject="Shipped", status=Status.SENT)
    make_email(to="dana@umbrella.test", subject="Later", status=Status.QUEUED)
    make_email(to="Dana@Umbrella.test", subject="Now", status=Status.SENDING)
    make_email(to="bob@example.org", subject="For dana@umbrella.test", status=Status.CANCELLED)
    outbox_of_settled()

    queryset = searched(OutboundEmail, "dana@umb")

    assert sorted(e.subject for e in queryset) == [
        "For dana@umbrella.test",
        "Later",
        "Now",
        "Shipped",
    ]
    found = plan(queryset)
    for index in (
        "mailapi_email_recipients_settled",
        "mailapi_email_subject_settled",
        "mailapi_email_waiting",
        "mailapi_email_leased",
    ):
        assert index in found, found
    assert "Seq Scan" not in found, found
    assert "mailapi_email_provider" not in found, found


def test_the_search_covers_every_status():
    assert {*SETTLED, *CLAIMABLE, Status.SENDING} == set(Status.values)


def test_failed_send_search_finds_the_emails_first_then_their_failures_by_index(postgres):
    # Regression: with the admin's default search, or an OR over a subquery, PostgreSQL
    # read every failed send and hash-joined the outbox: 2 s on a million rows.
    email = failed_email("invalid_attachment", 422, to="dana@umbrella.test")
    failed_email("application_error", 500, to="other@example.org")
    outbox_of_settled()

    with CaptureQueriesContext(connection) as captured:
        found = list(searched(FailedSend, "dana@umb").order_by("-created_at", "-id")[:100])

    assert [f.email_id for f in found] == [email.pk]
    emails_sql, failures_sql = (q["sql"] for q in captured)
    assert "mailapi_email_recipients_settled" in explain(emails_sql)
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


def test_migration_0009_swaps_the_full_trigram_indexes_for_settled_ones_and_back(postgres):
    from django.apps import apps

    migration = importlib.import_module("django_mailapi.migrations.0009_search_indexes_settled")

    def indexes() -> dict[str, str]:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s",
                [OutboundEmail._meta.db_table],
            )
            return {
                name: definition for name, definition in cursor.fetchall() if "trgm" in definition
            }

    with connection.schema_editor() as editor:
        migration.full(apps, editor)
    assert sorted(indexes()) == ["mailapi_email_recipients_trgm", "mailapi_email_subject_trgm"]
    with connection.schema_editor() as editor:
        migration.partial(apps, editor)
    found = indexes()
    assert sorted(found) == ["mailapi_email_recipients_settled", "mailapi_email_subject_settled"]
    for definition in found.values():
        assert "WHERE ((status)::text = ANY" in definition, definition
        assert "'sent'" in definition and "'failed'" in definition and "'cancelled'" in definition


@pytest.mark.parametrize(
    ("term", "expected"),
    [
        ("umbrella shipped", ["Your order shipped"]),  # every word, in either field
        ('"order shipped"', ["Your order shipped"]),  # a quoted phrase, whole
        ('"shipped order"', []),
        ("ORDER", ["Your order shipped", "Your order was cancelled"]),
        ("100%", []),  # LIKE's wildcards are literal
    ],
)
def test_email_search_takes_each_word_or_a_quoted_phrase(admin_client, term, expected):
    make_email(to="dana@umbrella.test", subject="Your order shipped", status=Status.SENT)
    make_email(to="ann@example.org", subject="Your order was cancelled", status=Status.QUEUED)
    url = reverse("admin:django_mailapi_outboundemail_changelist")

    assert sorted(searched(OutboundEmail, term).values_list("subject", flat=True)) == expected
    assert admin_client.get(url, {"q": term}).status_code == 200
