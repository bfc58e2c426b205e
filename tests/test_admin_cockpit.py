"""The admin as the on-call person's cockpit: the cause, the fix and one click to act."""

from __future__ import annotations

import datetime as dt
import re

import django
import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from django_mailapi import errors, quota
from django_mailapi.admin import home
from django_mailapi.admin.base import rich_text
from django_mailapi.models import OrgQuota, OutboundEmail, Status
from tests.factories import fail, failed_email, make_email, payload

pytestmark = pytest.mark.django_db

EMAILS = reverse("admin:django_mailapi_outboundemail_changelist")
FAILURES = reverse("admin:django_mailapi_failedsend_changelist")
REFERENCE = reverse("admin:django_mailapi_error_reference")


def email_page(email: OutboundEmail) -> str:
    return reverse("admin:django_mailapi_outboundemail_change", args=[email.pk])


def button(email: OutboundEmail, action: str) -> str:
    return reverse(f"admin:django_mailapi_outboundemail_{action}", args=[email.pk])


def text(response) -> str:
    assert response.status_code == 200, response.status_code
    return response.content.decode()


def rate_limited_then_exhausted() -> OutboundEmail:
    """Nine 429s from the provider, then the local retries_exhausted."""
    start = timezone.now().replace(microsecond=0) - dt.timedelta(hours=2)
    email = make_email(status=Status.FAILED, attempts=9, created_at=start)
    for attempt in range(1, 10):
        fail(
            email,
            "rate_limit_exceeded",
            429,
            attempt=attempt,
            will_retry=True,
            created_at=start + dt.timedelta(minutes=attempt),
        )
    fail(email, "retries_exhausted", None, attempt=9, created_at=start + dt.timedelta(minutes=10))
    return email


def summary_of(page: str) -> str:
    start = page.index('id="mailapi-summary"')
    return page[start : page.index("</section>", start)]


# --- the email page -------------------------------------------------------------------
def test_email_page_summary_shows_the_provider_error_behind_retries_exhausted(admin_client):
    email = rate_limited_then_exhausted()
    action = errors.suggested_action("resend", "rate_limit_exceeded", 429)

    page = text(admin_client.get(email_page(email)))
    summary = summary_of(page)

    assert page.index('id="mailapi-summary"') < page.index("Attempts that failed")
    assert '<span class="mailapi-badge mailapi-badge-failed">failed</span>' in summary
    assert "<code>rate_limit_exceeded</code></a> (429) &times; 9" in summary
    assert "<code>retries_exhausted</code>; this is the error behind it" in summary
    assert rich_text(action) in summary
    assert f'action="{button(email, "retry")}"' in summary
    assert f'action="{button(email, "cancel")}"' in summary


def test_email_page_groups_attempts_by_code_with_the_advice_once(admin_client):
    email = rate_limited_then_exhausted()
    action = errors.suggested_action("resend", "rate_limit_exceeded", 429)

    page = text(admin_client.get(email_page(email)))

    # Once in the summary, once in the grouped table: not nine times.
    assert page.count(rich_text(action)) == 2
    assert "<td>&times; 9</td>" in page
    assert "<td>&times; 1</td>" in page
    assert f'href="{REFERENCE}#code-resend-rate_limit_exceeded"' in page
    assert f'href="{REFERENCE}#code-mailapi-retries_exhausted"' in page


def test_retry_now_button_requeues_the_email_through_the_outbox(admin_client):
    email = rate_limited_then_exhausted()

    page = text(admin_client.post(button(email, "retry"), follow=True))

    assert f"Re-queued email #{email.pk}: a worker sends it now." in page
    email.refresh_from_db()
    assert (email.status, email.attempts) == (Status.QUEUED, 0)


def test_retry_now_button_leaves_a_sent_email_alone_and_says_why(admin_client):
    email = make_email(status=Status.SENT)

    page = text(admin_client.post(button(email, "retry"), follow=True))

    assert f"Email #{email.pk} was left alone" in page
    email.refresh_from_db()
    assert email.status == Status.SENT


def test_cancel_button_cancels_the_email(admin_client):
    email = make_email(status=Status.DEFERRED)

    page = text(admin_client.post(button(email, "cancel"), follow=True))

    assert f"Cancelled email #{email.pk}." in page
    email.refresh_from_db()
    assert email.status == Status.CANCELLED


def test_email_buttons_take_a_post_with_a_csrf_token(admin_user, client):
    email = failed_email("application_error", 500)
    csrf_client = type(client)(enforce_csrf_checks=True)
    csrf_client.force_login(admin_user)

    assert csrf_client.get(button(email, "retry")).status_code == 405
    assert csrf_client.post(button(email, "retry")).status_code == 403
    email.refresh_from_db()
    assert email.status == Status.FAILED


def test_email_buttons_need_the_change_permission(client):
    email = failed_email("application_error", 500)
    viewer = get_user_model().objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_outboundemail"))
    client.force_login(viewer)

    page = text(client.get(email_page(email)))

    assert 'id="mailapi-summary"' in page
    assert "Retry now" not in summary_of(page)
    assert client.post(button(email, "retry")).status_code == 403
    assert client.post(button(email, "cancel")).status_code == 403
    email.refresh_from_db()
    assert email.status == Status.FAILED


def test_html_body_is_previewed_in_a_sandboxed_iframe_that_fetches_nothing(admin_client):
    html = '<p onclick="x()">Hi <b>there</b></p><script>alert(1)</script><img src="https://t.example/p.gif">'
    email = make_email(status=Status.SENT, payload=payload(html=html, text="a " * 3000))

    page = text(admin_client.get(email_page(email)))

    iframe = page[page.index("<iframe") : page.index("</iframe>")]
    assert 'sandbox=""' in iframe
    assert "&lt;meta http-equiv=&quot;Content-Security-Policy&quot;" in iframe
    assert "default-src &#x27;none&#x27;" in iframe
    assert escape(html) in iframe
    assert "<script>alert(1)</script>" not in page
    # Beside its source, which wraps like the text body.
    assert f'<pre class="mailapi-body">{escape(html)}</pre>' in page


def test_email_page_escapes_what_the_api_said(admin_client):
    email = make_email(status=Status.FAILED)
    failure = fail(email, "application_error", 500)
    failure.message = "<img src=x onerror=alert(1)>"
    failure.save()

    page = text(admin_client.get(email_page(email)))

    assert "<img src=x onerror=alert(1)>" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in summary_of(page)


# --- lists ----------------------------------------------------------------------------
@pytest.mark.skipif(
    django.VERSION < (5, 0), reason="Django 5.0 added the admin's facet counts (Show counts)"
)
@pytest.mark.parametrize("url", [EMAILS, FAILURES])
def test_show_counts_answers_200(admin_client, url):
    failed_email("rate_limit_exceeded", 429, org="acme")
    failed_email("application_error", 500, org="globex")

    page = text(admin_client.get(url, {"_facets": "1"}))

    assert "acme (1)" in page
    assert "globex (1)" in page


def test_email_list_shows_status_badges_and_the_first_sentence_of_the_action(admin_client):
    failed_email("rate_limit_exceeded", 429)
    action = errors.suggested_action("resend", "rate_limit_exceeded", 429)

    page = text(admin_client.get(EMAILS))

    assert '<span class="mailapi-badge mailapi-badge-failed">failed</span>' in page
    assert f'<span class="mailapi-hint" title="{escape(action)}">' in page
    assert f'href="{REFERENCE}#code-resend-rate_limit_exceeded"' in page


def test_failed_send_list_shows_recipient_and_subject_and_links_the_code(admin_client):
    failed_email("invalid_attachment", 422, to="zed@example.org", subject="Your invoice")

    page = text(admin_client.get(FAILURES))

    assert "zed@example.org" in page
    assert "Your invoice" in page
    assert f'href="{REFERENCE}#code-resend-invalid_attachment"' in page


def test_error_reference_has_one_anchor_per_code(admin_client):
    page = text(admin_client.get(REFERENCE))

    for provider, catalog in errors.CATALOGS.items():
        for entry in catalog:
            assert page.count(f'id="code-{provider}-{entry.code}"') == 1


# --- the Mail API home ----------------------------------------------------------------
HOME = reverse("admin:app_list", args=["django_mailapi"])


@time_machine.travel(dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.timezone.utc), tick=False)
def test_home_shows_todays_emails_the_backlog_and_the_last_days_failures(admin_client):
    now = timezone.now()
    rate_limited_then_exhausted()
    failed_email("invalid_attachment", 422, to="x@example.org")
    make_email(status=Status.QUEUED, next_attempt_at=now - dt.timedelta(minutes=5))
    make_email(status=Status.DEFERRED, next_attempt_at=now + dt.timedelta(hours=1))
    make_email(status=Status.SENT)
    yesterday = now - dt.timedelta(days=2)
    old = make_email(status=Status.FAILED, created_at=yesterday)
    fail(old, "invalid_api_key", 401, created_at=yesterday)

    page = text(admin_client.get(HOME))
    health = page[page.index('id="mailapi-health"') : page.index('id="mailapi-reference"')]

    assert f'<a href="{EMAILS}?status__exact=failed&amp;created=today">2</a>' in health
    assert 'mailapi-badge-failed">failed</span></th><td class="mailapi-figure"><a' in health
    assert f'href="{EMAILS}?status__exact=queued">1</a>' in health
    assert f'href="{EMAILS}?status__exact=deferred">1</a>' in health
    assert "5 min" in health
    assert f'href="{FAILURES}?error_code=rate_limit_exceeded">9</a>' in health
    assert f'href="{FAILURES}?error_code=invalid_attachment">1</a>' in health
    assert "invalid_api_key" not in health
    action = errors.suggested_action("resend", "rate_limit_exceeded", 429)
    assert f'title="{escape(action)}"' in health
    assert reverse("admin:django_mailapi_orgquota_usage_chart") in page


def test_home_links_into_the_email_list_filtered_to_today(admin_client):
    failed_email("application_error", 500, subject="Fresh")
    make_email(
        status=Status.FAILED, subject="Stale", created_at=timezone.now() - dt.timedelta(days=3)
    )
    page = text(admin_client.get(HOME))
    start = page.index(f"{EMAILS}?status__exact=failed&amp;")
    link = page[start : page.index('"', start)].replace("&amp;", "&")

    listed = text(admin_client.get(link))

    assert "Fresh" in listed
    assert "Stale" not in listed


def test_home_asks_one_query_per_figure(admin_client, django_assert_max_num_queries):
    rate_limited_then_exhausted()
    admin_client.get(HOME)  # warm the session and the content types

    # Session and user (2), today's statuses, backlog, oldest due, failures by code.
    with django_assert_max_num_queries(6):
        text(admin_client.get(HOME))


def test_each_home_figure_is_served_by_an_index(admin_client, postgres):
    rate_limited_then_exhausted()
    admin_client.get(HOME)
    with CaptureQueriesContext(connection) as captured:
        home.health()
    statements = [q["sql"] for q in captured]
    assert len(statements) == 4  # today's statuses, backlog, oldest due, failures
    with connection.cursor() as cursor:
        # Sequential scans priced out of reach: a query no index serves still plans one.
        cursor.execute("SET enable_seqscan = off")
        try:
            for sql in statements:
                cursor.execute(f"EXPLAIN {sql}")
                plan = "\n".join(row[0] for row in cursor.fetchall())
                assert "Seq Scan" not in plan, f"{sql}\n{plan}"
        finally:
            cursor.execute("SET enable_seqscan = on")


# --- the error reference ----------------------------------------------------------------
def test_error_reference_shows_backticks_as_code_and_urls_as_links(admin_client):
    page = text(admin_client.get(REFERENCE))

    assert "<code>manage.py mailapi_retry ID</code>" in page
    assert "`manage.py mailapi_retry ID`" not in page
    # The action for retries_exhausted names the email page's button before the command.
    exhausted = errors.suggested_action("mailapi", "retries_exhausted", None)
    assert "Retry now on that page or `manage.py mailapi_retry ID`" in exhausted
    assert '<a href="https://resend.com/contact" rel="nofollow">resend.com/contact</a>' in page


@pytest.mark.parametrize(
    ("prose", "html"),
    [
        (
            "See resend.com/domains; then retry.",
            'See <a href="https://resend.com/domains" rel="nofollow">resend.com/domains</a>; '
            "then retry.",
        ),
        (
            "(https://api.resend.com).",
            '(<a href="https://api.resend.com" rel="nofollow">https://api.resend.com</a>).',
        ),
        (
            "Check status.sendr.dev.",
            'Check <a href="https://status.sendr.dev" rel="nofollow">status.sendr.dev</a>.',
        ),
        ("Write to ann@example.com or set MAILAPI['BASE_URL'], e.g. x.", None),
        (
            "<b>resend.com</b>",
            '&lt;b&gt;<a href="https://resend.com" rel="nofollow">resend.com</a>&lt;/b&gt;',
        ),
        ("Use `user@example.com` as from", "Use <code>user@example.com</code> as from"),
    ],
)
def test_catalog_prose_links_web_addresses_and_nothing_else(prose, html):
    # Our own linking, not Django's urlize: urlize warns on Django 6.1 unless the project
    # sets URLIZE_ASSUME_HTTPS, and would link email addresses too.
    expected = html if html is not None else escape(prose)
    assert rich_text(prose) == expected


def test_error_reference_search_keeps_the_matching_entries_and_their_catalogs(admin_client):
    page = text(admin_client.get(REFERENCE, {"q": "RATE_LIMIT_exceeded"}))

    assert 'id="code-resend-rate_limit_exceeded"' in page
    assert 'id="code-resend-invalid_attachment"' not in page
    assert 'value="RATE_LIMIT_exceeded"' in page
    assert 'href="#catalog-resend"' in page


def test_error_reference_search_escapes_the_query_and_says_when_nothing_matches(admin_client):
    page = text(admin_client.get(REFERENCE, {"q": "<b>nothing</b>"}))

    assert "No entry matches &ldquo;&lt;b&gt;nothing&lt;/b&gt;&rdquo;." in page
    assert "<b>nothing</b>" not in page


# --- quotas ---------------------------------------------------------------------------
QUOTAS = reverse("admin:django_mailapi_orgquota_changelist")


def test_quota_list_says_paused_only_where_it_is_true(admin_client):
    OrgQuota.objects.create(org="acme")
    OrgQuota.objects.create(org="beta", paused=True)

    page = text(admin_client.get(QUOTAS))

    assert page.count('<span class="mailapi-badge mailapi-badge-failed">paused</span>') == 1
    assert 'alt="False"' not in page


def test_quota_list_shows_orgs_that_send_without_a_row_on_the_default_limits(
    admin_client, settings
):
    settings.MAILAPI = {**settings.MAILAPI, "DAILY_LIMIT": 100}
    OrgQuota.objects.create(org="acme", daily_limit=5)
    quota.reserve("acme", 2, timezone.now())
    quota.reserve("<i>newco</i>", 7, timezone.now())

    page = text(admin_client.get(QUOTAS))
    extra = page[page.index('id="mailapi-orgs-without-row"') :]

    assert "&lt;i&gt;newco&lt;/i&gt;" in extra
    assert "<i>newco</i>" not in page
    assert "100 (default)" in extra
    assert "7 / 100" in extra
    assert "?org=%3Ci%3Enewco%3C%2Fi%3E" in extra
    assert "acme" not in extra


@pytest.mark.django_db
def test_admin_tour_seeded_just_after_midnight_still_has_todays_failures():
    # Regression: CI ran the browser tour at 00:10 UTC; the tour's failed emails were
    # 11 to 55 minutes old, so yesterday's, and the home page's "failed today" link
    # opened an empty list.
    from tests.admin_tour import seed_tour

    now = dt.datetime(2026, 12, 2, 0, 10, tzinfo=dt.timezone.utc)
    with time_machine.travel(now, tick=False):
        seed_tour(now)
        figures = home.health(now)
    failed = next(row for row in figures["by_status"] if "failed" in row["badge"])
    assert failed["count"] == OutboundEmail.objects.filter(status=Status.FAILED).count() == 6


# --- filters offer what occurs ---------------------------------------------------------
def filter_choices(page: str, parameter: str) -> list[str]:
    """The values a changelist's filter offers for ``parameter``, in page order."""
    title = parameter.removesuffix("__exact").replace("_", " ")
    start = re.search(rf"By {title}\s*<", page)
    assert start, f"no filter titled {title!r}"
    block = page[start.end() : page.index("</ul>", start.end())]
    return re.findall(rf"\?{re.escape(parameter)}=([a-z_]+)\"", block.replace("&amp;", "&"))


def test_status_filters_offer_only_the_statuses_that_occur(admin_client):
    make_email(status=Status.SENT, provider="resend", delivery_status="delivered")
    make_email(status=Status.FAILED, provider="sendr", delivery_status="bounced")
    make_email(status=Status.QUEUED, provider="")

    page = text(admin_client.get(EMAILS))

    assert filter_choices(page, "status__exact") == ["queued", "sent", "failed"]
    assert filter_choices(page, "delivery_status__exact") == ["delivered", "bounced"]


def test_status_filter_keeps_a_chosen_status_that_no_row_has(admin_client):
    make_email(status=Status.SENT)

    page = text(admin_client.get(EMAILS + "?status__exact=cancelled"))

    assert filter_choices(page, "status__exact") == ["sent", "cancelled"]
    assert "0 emails" in page or "0 outbound emails" in page


def test_event_type_and_suppression_reason_filters_offer_what_occurs(admin_client):
    from django_mailapi.models import DeliveryEvent, Suppression

    DeliveryEvent.objects.create(
        provider="resend", provider_event_id="e1", type="bounced", occurred_at=timezone.now()
    )
    Suppression.objects.create(address="a@example.org", reason="complaint")

    events = text(admin_client.get(reverse("admin:django_mailapi_deliveryevent_changelist")))
    suppressions = text(admin_client.get(reverse("admin:django_mailapi_suppression_changelist")))

    assert filter_choices(events, "type__exact") == ["bounced"]
    assert filter_choices(suppressions, "reason__exact") == ["complaint"]


def test_status_filter_reads_the_provider_status_index_not_the_table(postgres):
    make_email(status=Status.SENT, provider="resend")
    make_email(status=Status.DEFERRED, provider="resend")
    with CaptureQueriesContext(connection) as captured:
        found = OutboundEmail.objects.distinct_values_after("provider", "status", 1000)
    assert found == ["deferred", "sent"]
    (sql,) = [q["sql"] for q in captured]
    with connection.cursor() as cursor:
        cursor.execute("SET enable_seqscan = off")
        try:
            cursor.execute(f"EXPLAIN {sql}")
            plan = "\n".join(row[0] for row in cursor.fetchall())
        finally:
            cursor.execute("SET enable_seqscan = on")
    assert "Seq Scan on django_mailapi_outboundemail" not in plan, plan
    assert "mailapi_email_provider" in plan, plan
