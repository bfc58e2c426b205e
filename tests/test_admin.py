"""The "Mail API" admin, rendered with a logged-in superuser."""

from __future__ import annotations

import base64
import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from django_mailapi import errors
from django_mailapi.admin import BoundedCountPaginator
from django_mailapi.admin.failures import rich_text
from django_mailapi.models import FailedSend, OutboundEmail, Status
from tests.factories import fail, failed_email, make_email, payload

pytestmark = pytest.mark.django_db

EMAILS = reverse("admin:django_mailapi_outboundemail_changelist")
FAILURES = reverse("admin:django_mailapi_failedsend_changelist")
REFERENCE = reverse("admin:django_mailapi_error_reference")
SECRET_KEY_VALUE = "re_DISTINCTIVE_admin_key_q8Zr3"


def email_page(email: OutboundEmail) -> str:
    return reverse("admin:django_mailapi_outboundemail_change", args=[email.pk])


def failure_page(failure: FailedSend) -> str:
    return reverse("admin:django_mailapi_failedsend_change", args=[failure.pk])


def text(response) -> str:
    assert response.status_code == 200, response.status_code
    return response.content.decode()


# --- outbound emails -----------------------------------------------------------------
def test_email_changelist_shows_the_error_code_and_its_suggested_action(admin_client):
    email = failed_email("invalid_from_address", 422, to="bob@example.org", subject="Receipt")
    action = errors.suggested_action("resend", "invalid_from_address", 422)

    page = text(admin_client.get(EMAILS))

    assert "bob@example.org" in page
    assert "Receipt" in page
    assert "invalid_from_address" in page
    # Truncated in the cell, whole in the hover title.
    assert f'title="{escape(action)}"' in page
    assert f'href="/admin/django_mailapi/outboundemail/{email.pk}/change/' in page


def test_email_changelist_truncates_long_recipients_and_subjects(admin_client):
    long_subject = "Quarterly statement " + "x" * 80
    make_email(subject=long_subject, status=Status.QUEUED)

    page = text(admin_client.get(EMAILS))

    assert f'title="{escape(long_subject)}"' in page
    assert f">{long_subject}<" not in page


def test_email_changelist_filters_by_status_org_provider_and_code(admin_client):
    failed_email("invalid_from_address", 422, org="acme", subject="From acme")
    failed_email("daily_quota_exceeded", None, org="globex", subject="From globex")
    make_email(org="initech", status=Status.SENT, subject="Sent one")

    page = text(admin_client.get(EMAILS))
    for choice in ("?org=acme", "?org=globex", "?org=initech", "?provider=resend"):
        assert choice in page
    assert "?last_error_code=daily_quota_exceeded" in page

    by_org = text(admin_client.get(EMAILS, {"org": "globex"}))
    assert "From globex" in by_org and "From acme" not in by_org
    by_status = text(admin_client.get(EMAILS, {"status__exact": "sent"}))
    assert "Sent one" in by_status and "From acme" not in by_status
    by_code = text(admin_client.get(EMAILS, {"last_error_code": "invalid_from_address"}))
    assert "From acme" in by_code and "From globex" not in by_code
    by_provider = text(admin_client.get(EMAILS, {"provider": "sendr"}))
    assert "From acme" not in by_provider


def test_email_changelist_searches_recipients_and_subject(admin_client):
    make_email(to="carol@example.org", subject="Welcome aboard")
    make_email(to="dave@example.org", subject="Password reset")

    by_recipient = text(admin_client.get(EMAILS, {"q": "carol@"}))
    assert "Welcome aboard" in by_recipient and "Password reset" not in by_recipient
    by_subject = text(admin_client.get(EMAILS, {"q": "password"}))
    assert "dave@example.org" in by_subject and "carol@example.org" not in by_subject


def test_retry_now_action_requeues_failed_emails_and_says_how_many(admin_client):
    failed = failed_email("application_error", 500)
    sent = make_email(status=Status.SENT)

    response = admin_client.post(
        EMAILS,
        {"action": "retry_now", "_selected_action": [failed.pk, sent.pk]},
        follow=True,
    )

    page = text(response)
    assert "Re-queued 1 email." in page
    assert "1 email left alone" in page
    failed.refresh_from_db()
    sent.refresh_from_db()
    assert (failed.status, failed.attempts) == (Status.QUEUED, 0)
    assert sent.status == Status.SENT


def test_cancel_action_cancels_unsent_emails_and_says_how_many(admin_client):
    queued = make_email(status=Status.QUEUED)
    deferred = make_email(status=Status.DEFERRED)
    sent = make_email(status=Status.SENT)

    page = text(
        admin_client.post(
            EMAILS,
            {"action": "cancel", "_selected_action": [queued.pk, deferred.pk, sent.pk]},
            follow=True,
        )
    )

    assert "Cancelled 2 emails." in page
    statuses = dict(OutboundEmail.objects.values_list("pk", "status"))
    assert statuses == {
        queued.pk: Status.CANCELLED,
        deferred.pk: Status.CANCELLED,
        sent.pk: Status.SENT,
    }


def test_email_change_page_lists_every_failed_attempt_with_its_action(admin_client):
    email = make_email(status=Status.FAILED, attempts=3)
    fail(email, "application_error", 500, attempt=1, will_retry=True, request_id="req_first")
    fail(email, "concurrent_idempotent_requests", 409, attempt=2, will_retry=True)
    fail(email, "retries_exhausted", None, attempt=3)

    page = text(admin_client.get(email_page(email)))

    for code, status in [
        ("application_error", "500"),
        ("concurrent_idempotent_requests", "409"),
        ("retries_exhausted", "local"),
    ]:
        assert f"<code>{code}</code>" in page
        assert f"<td>{status}</td>" in page
    assert "req_first" in page
    action = errors.suggested_action("mailapi", "retries_exhausted", None)
    assert escape(action) in page
    assert page.count("<td>yes</td>") == 2


def test_email_change_page_summarizes_attachments_instead_of_dumping_them(admin_client):
    content = b"%PDF-1.4 secret-ish bytes " * 40
    encoded = base64.b64encode(content).decode()
    body = payload(
        html="<script>alert(1)</script><p>Hi</p>",
        attachments=[
            {
                "filename": "invoice.pdf",
                "content": encoded,
                "content_type": "application/pdf",
                "content_id": None,
                "size": len(content),
            }
        ],
    )
    email = make_email(status=Status.SENT, payload=body)

    page = text(admin_client.get(email_page(email)))

    assert "invoice.pdf (application/pdf, 1.0\xa0KB)" in page
    assert encoded[:40] not in page
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_email_change_page_says_when_the_payload_was_dropped(admin_client):
    email = make_email(status=Status.SENT, payload=None)

    assert "not stored any more" in text(admin_client.get(email_page(email)))


def test_emails_cannot_be_added_edited_or_deleted_in_the_admin(admin_client):
    email = failed_email("invalid_from_address", 422)

    page = text(admin_client.get(email_page(email)))
    assert 'name="_save"' not in page
    assert 'name="status"' not in page
    assert admin_client.post(email_page(email), {"status": "sent"}).status_code == 403
    assert admin_client.get(reverse("admin:django_mailapi_outboundemail_add")).status_code == 403
    delete = reverse("admin:django_mailapi_outboundemail_delete", args=[email.pk])
    assert admin_client.get(delete).status_code == 403
    email.refresh_from_db()
    assert email.status == Status.FAILED


# --- failed sends --------------------------------------------------------------------
def test_failed_send_changelist_shows_code_status_action_and_a_link_to_the_email(admin_client):
    email = failed_email("invalid_attachment", 422, org="acme")
    local = failed_email("daily_quota_exceeded", None, org="globex")

    page = text(admin_client.get(FAILURES))

    assert "invalid_attachment" in page and "daily_quota_exceeded" in page
    assert '<td class="field-http_status_display">422</td>' in page
    assert '<td class="field-http_status_display">local</td>' in page
    assert f'href="{email_page(email)}">#{email.pk}</a>' in page
    assert f'href="{email_page(local)}">#{local.pk}</a>' in page
    action = errors.suggested_action("mailapi", "daily_quota_exceeded", None)
    assert f'title="{escape(action)}"' in page


@pytest.mark.parametrize(
    ("query", "shown", "hidden"),
    [
        ({"error_code": "invalid_attachment"}, "invalid_attachment", "daily_quota_exceeded"),
        ({"org": "globex"}, "daily_quota_exceeded", "invalid_attachment"),
        ({"provider": "resend"}, "invalid_attachment", "invalid_api_key"),
        ({"http_status": "local"}, "daily_quota_exceeded", "invalid_attachment"),
        ({"http_status": "422"}, "invalid_attachment", "daily_quota_exceeded"),
        ({"will_retry__exact": "1"}, "application_error", "invalid_attachment"),
        ({"q": "att@example.org"}, "invalid_attachment", "daily_quota_exceeded"),
        ({"q": "Quota subject"}, "daily_quota_exceeded", "invalid_attachment"),
        ({"q": "daily_quota"}, "daily_quota_exceeded", "invalid_attachment"),
    ],
)
def test_failed_send_changelist_filters_and_searches(admin_client, query, shown, hidden):
    failed_email("invalid_attachment", 422, to="att@example.org", subject="Att", org="acme")
    failed_email("daily_quota_exceeded", None, subject="Quota subject", org="globex")
    failed_email("invalid_api_key", 401, subject="Other provider", provider="sendr")
    retrying = make_email(subject="Retrying", status=Status.QUEUED)
    fail(retrying, "application_error", 500, will_retry=True)

    page = text(admin_client.get(FAILURES, query))

    assert f"<code>{shown}</code>" in page
    assert f"<code>{hidden}</code>" not in page


def test_failed_send_filters_offer_only_the_values_present(admin_client):
    failed_email("invalid_attachment", 422, org="acme")
    failed_email("invalid_api_key", 401, org="globex", provider="sendr")
    failed_email("daily_quota_exceeded", None, org="globex")

    page = text(admin_client.get(FAILURES))

    for choice in (
        "?error_code=invalid_attachment",
        "?error_code=invalid_api_key",
        "?org=acme",
        "?org=globex",
        "?provider=sendr",
        "?http_status=local",
        "?http_status=401",
        "?http_status=422",
    ):
        assert choice in page
    assert "?http_status=451" not in page


def test_retry_these_emails_action_requeues_the_emails_of_the_selected_failures(admin_client):
    email = failed_email("application_error", 500)
    other = failed_email("invalid_from_address", 422)
    failure = email.failures.get()

    page = text(
        admin_client.post(
            FAILURES, {"action": "retry_emails", "_selected_action": [failure.pk]}, follow=True
        )
    )

    assert "Re-queued 1 email." in page
    email.refresh_from_db()
    other.refresh_from_db()
    assert email.status == Status.QUEUED
    assert other.status == Status.FAILED


def test_failed_sends_are_view_only(admin_client):
    failure = failed_email("invalid_from_address", 422).failures.get()

    page = text(admin_client.get(failure_page(failure)))

    assert escape(errors.suggested_action("resend", "invalid_from_address", 422)) in page
    assert "permanent" in page  # the retry class
    assert 'name="_save"' not in page
    assert admin_client.post(failure_page(failure), {"error_code": "x"}).status_code == 403
    assert admin_client.get(reverse("admin:django_mailapi_failedsend_add")).status_code == 403


# --- error reference -----------------------------------------------------------------
def test_error_reference_lists_every_entry_of_every_catalog(admin_client):
    page = text(admin_client.get(REFERENCE))

    assert set(errors.CATALOGS) == {"resend", "sendr", "generic", "emitlo", "mailapi"}
    for provider in errors.CATALOGS:
        assert f'id="catalog-{provider}"' in page
    for entry in errors.all_entries():
        assert f"<code>{entry.code}</code>" in page
        assert rich_text(entry.action) in page
        assert rich_text(entry.message) in page
    assert page.count('<td class="message">') == len(errors.all_entries())
    assert 'href="https://resend.com/docs/api-reference/errors"' in page


def test_error_reference_is_linked_from_failed_sends_and_the_app_index(admin_client):
    assert f'href="{REFERENCE}"' in text(admin_client.get(FAILURES))
    app_index = text(admin_client.get(reverse("admin:app_list", args=["django_mailapi"])))
    assert f'href="{REFERENCE}"' in app_index
    assert "Mail API" in app_index


def test_error_reference_needs_a_staff_login(client):
    response = client.get(REFERENCE)
    assert response.status_code == 302
    assert "/login/" in response["Location"]


def test_no_admin_page_shows_the_api_key(admin_client, settings):
    settings.MAILAPI = {**settings.MAILAPI, "API_KEY": SECRET_KEY_VALUE}
    email = failed_email("invalid_api_key", 403, to="key@example.org")
    failure = email.failures.get()
    pages = [
        reverse("admin:index"),
        reverse("admin:app_list", args=["django_mailapi"]),
        EMAILS,
        email_page(email),
        FAILURES,
        failure_page(failure),
        REFERENCE,
    ]
    for url in pages:
        assert SECRET_KEY_VALUE not in text(admin_client.get(url)), url


# --- cost of the changelists ---------------------------------------------------------
def populate(count: int) -> None:
    """``count`` failed emails across three orgs and four codes, one failure each."""
    now = timezone.now()
    codes = [
        ("invalid_from_address", 422),
        ("application_error", 500),
        ("daily_quota_exceeded", None),
        ("security_error", 451),
    ]
    emails = OutboundEmail.objects.bulk_create(
        OutboundEmail(
            org=f"org{i % 3}",
            provider="resend",
            status=Status.FAILED,
            idempotency_key=f"bulk/{count}/{i}",
            payload=payload(f"user{i}@example.org", f"Subject {i}"),
            recipients=f"user{i}@example.org",
            subject=f"Subject {i}",
            last_error_code=codes[i % 4][0],
            last_error_status=codes[i % 4][1],
            created_at=now - dt.timedelta(seconds=i),
        )
        for i in range(count)
    )
    FailedSend.objects.bulk_create(
        FailedSend(
            email=email,
            org=email.org,
            provider=email.provider,
            source="resend" if email.last_error_status else "mailapi",
            error_code=email.last_error_code,
            http_status=email.last_error_status,
            message="m",
            attempt=1,
            created_at=email.created_at,
        )
        for email in emails
    )


def queries_for(client, url: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200
    return len(captured)


@pytest.mark.parametrize("url", [EMAILS, FAILURES, FAILURES + "?error_code=security_error"])
def test_changelist_queries_do_not_grow_with_rows(admin_client, url, django_assert_max_num_queries):
    populate(30)
    with_30 = queries_for(admin_client, url)
    populate(270)
    with_300 = queries_for(admin_client, url)

    assert with_30 == with_300
    # Session, user, a query per filter with values to offer (emails: status, delivery
    # status, org, provider, code and tag; failed sends: org, provider, code and the
    # recent HTTP statuses), the count and the page.
    filters = 6 if url == EMAILS else 4
    with django_assert_max_num_queries(4 + filters):
        admin_client.get(url)


def test_distinct_values_returns_sorted_values_up_to_the_limit(db):
    for org in ["delta", "alpha", "charlie", "bravo", "alpha", ""]:
        make_email(org=org)

    assert OutboundEmail.objects.distinct_values("org", 100) == [
        "alpha",
        "bravo",
        "charlie",
        "delta",
    ]
    assert OutboundEmail.objects.distinct_values("org", limit=2) == ["alpha", "bravo"]


def test_paginator_stops_counting_past_its_limit(db, monkeypatch):
    monkeypatch.setattr(BoundedCountPaginator, "count_limit", 5)
    for i in range(8):
        make_email(org="acme" if i % 2 else "globex")

    filtered = BoundedCountPaginator(OutboundEmail.objects.filter(org__in=["acme", "globex"]), 2)
    small = BoundedCountPaginator(OutboundEmail.objects.filter(org="acme"), 2)

    assert filtered.count == 5
    assert small.count == 4
    assert BoundedCountPaginator([1, 2, 3], 2).count == 3
