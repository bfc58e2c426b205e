"""The admin's search by recipient and subject, and what serves it at scale."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib import admin
from django.db import connection
from django.db.models import QuerySet
from django.test import RequestFactory
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
    """PostgreSQL's plan with sequential and plain index scans priced out of reach, so
    what is left is what an index can serve by the search condition itself."""
    sql, params = queryset.query.sql_with_params()
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


def test_failed_send_search_finds_the_emails_first_with_their_indexes(postgres):
    failed_email("invalid_attachment", 422, to="dana@umbrella.test")

    found = plan(searched(FailedSend, "dana@umb"))

    assert "mailapi_email_recipients_trgm" in found, found
    assert "Seq Scan on django_mailapi_outboundemail" not in found, found


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
