"""The quota admin pages, rendered for a logged-in superuser."""

from __future__ import annotations

import datetime as dt
import re

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from django_mailapi import quota
from django_mailapi.models import OrgQuota, Status, UsageCounter
from tests.factories import make_email

pytestmark = pytest.mark.django_db

UTC = dt.timezone.utc
NOW = dt.datetime(2024, 5, 17, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _frozen():
    with time_machine.travel(NOW, tick=False):
        yield


def page(admin_client, url: str) -> tuple[str, int]:
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(url)
    assert response.status_code == 200
    return response.content.decode(), len(queries)


def orgs(count: int) -> None:
    for n in range(count):
        OrgQuota.objects.get_or_create(org=f"org{n:02}", defaults={"daily_limit": 10})
        quota.reserve(f"org{n:02}", n % 10 + 1, NOW)


def test_org_quota_list_shows_effective_limits_and_usage_bars(admin_client, settings):
    settings.MAILAPI = {**settings.MAILAPI, "DAILY_LIMIT": 100}
    OrgQuota.objects.create(org="acme", monthly_limit=1000)
    OrgQuota.objects.create(org="beta", daily_limit=4)
    quota.reserve("acme", 25, NOW)
    quota.reserve("beta", 4, NOW)
    quota.reserve("beta", 2, NOW - dt.timedelta(days=3))
    quota.set_limits("beta", paused=True)

    html, _ = page(admin_client, reverse("admin:django_mailapi_orgquota_changelist"))

    assert "100 (default)" in html  # acme's daily limit comes from the settings
    assert "1000" in html
    assert "25 / 100" in html and "width:25.0%" in html
    assert "25 / 1000" in html and "width:2.5%" in html
    assert "4 / 4" in html and "width:100.0%" in html  # beta is at its daily limit
    assert "6 / unlimited" in html  # beta's month has no limit at all
    assert reverse("admin:django_mailapi_orgquota_usage_chart") in html


def test_org_quota_list_reads_usage_in_one_query_whatever_the_number_of_orgs(admin_client):
    url = reverse("admin:django_mailapi_orgquota_changelist")
    orgs(3)
    _, few = page(admin_client, url)
    orgs(40)
    html, many = page(admin_client, url)

    assert html.count('class="mailapi-usage"') == 80  # 40 orgs, today and this month
    assert many == few


def test_usage_counters_are_read_only(admin_client):
    quota.reserve("acme", 3, NOW)
    counter = UsageCounter.objects.get(org="acme", period="day")

    html, _ = page(admin_client, reverse("admin:django_mailapi_usagecounter_changelist"))
    assert "acme" in html
    assert reverse("admin:django_mailapi_usagecounter_add") not in html
    assert 'name="_selected_action"' not in html  # no delete action, hence no checkboxes

    change = reverse("admin:django_mailapi_usagecounter_change", args=[counter.pk])
    html, _ = page(admin_client, change)
    assert 'name="units_sent"' not in html  # shown, not editable
    response = admin_client.post(change, {"units_sent": 0})
    assert response.status_code == 403
    counter.refresh_from_db()
    assert counter.units_sent == 3
    assert admin_client.get(reverse("admin:django_mailapi_usagecounter_add")).status_code == 403


def test_usage_counters_filter_by_period_and_org(admin_client):
    quota.reserve("acme", 3, NOW)
    quota.reserve("beta", 5, NOW)
    url = reverse("admin:django_mailapi_usagecounter_changelist")

    html, _ = page(admin_client, f"{url}?period__exact=month&org=beta")

    rows = re.findall(r"<tr>.*?</tr>", html.split("<tbody>")[1], flags=re.S)
    assert len(rows) == 1
    assert "beta" in rows[0] and "month" in rows[0].lower()


CHART = reverse("admin:django_mailapi_orgquota_usage_chart")


def svg_of(html: str) -> str:
    start = html.index('class="mailapi-usage-chart"')
    return html[start : html.index("</svg>", start)]


def test_usage_chart_stacks_sent_failed_and_deferred_per_utc_day(admin_client):
    quota.reserve("acme", 99, NOW - dt.timedelta(days=30))  # 31 days ago: not drawn
    for days_ago, units in [(0, 12), (1, 30), (29, 4)]:
        quota.reserve("acme", units, NOW - dt.timedelta(days=days_ago))
    quota.reserve("beta", 7, NOW)
    UsageCounter.objects.filter(org="acme", period="day", period_start=NOW.date()).update(
        units_failed=3
    )
    make_email(org="acme", status=Status.DEFERRED, created_at=NOW - dt.timedelta(hours=1))

    html, _ = page(admin_client, CHART)
    svg = svg_of(html)

    assert re.findall(r'<rect class="bar bar-(\w+)"', svg) == [
        "sent",  # 04-18: acme's 4
        "sent",  # 05-16: acme's 30
        "sent",  # 05-17: acme's 12 and beta's 7
        "failed",
        "deferred",
    ]
    assert "<title>2024-05-17: 19 sent</title>" in svg
    assert "<title>2024-05-17: 3 failed</title>" in svg
    assert "<title>2024-05-17: 1 deferred</title>" in svg
    assert ">UTC day</text>" in svg and ">04-18</text>" in svg and ">05-17</text>" in svg
    # Scaled to the highest bar (30 -> 50), not to a limit.
    assert re.findall(r'text-anchor="end" font-size="11" fill="#444">(\d+)</text>', svg)[-1] == "50"
    assert 'class="limit"' not in svg  # all orgs: no one org's limit applies
    assert "<script" not in html.split('id="content-main"')[1]


def test_usage_chart_for_one_org_draws_its_daily_limit_as_a_labelled_line(admin_client):
    OrgQuota.objects.create(org="acme", daily_limit=50, monthly_limit=900)
    quota.reserve("acme", 40, NOW)
    quota.reserve("beta", 7, NOW)

    html, _ = page(admin_client, f"{CHART}?org=acme")
    svg = svg_of(html)

    assert "<title>2024-05-17: 40 sent</title>" in svg
    assert svg.count('<line class="limit"') == 1
    assert ">daily limit 50</text>" in svg
    assert "Monthly limit: 900." in html
    assert '<option value="acme" selected>acme</option>' in html
    assert '<option value="beta">beta</option>' in html


def test_usage_chart_names_a_limit_far_above_the_bars_instead_of_drawing_it(admin_client):
    OrgQuota.objects.create(org="acme", daily_limit=10_000)
    quota.reserve("acme", 12, NOW)

    svg = svg_of(page(admin_client, f"{CHART}?org=acme")[0])

    assert '<line class="limit"' not in svg
    assert ">daily limit 10000 (above)</text>" in svg


def test_usage_chart_escapes_org_names(admin_client):
    quota.reserve('<b>"x"</b>', 1, NOW)

    html, _ = page(admin_client, CHART)

    assert "<b>" not in html
    assert "&lt;b&gt;" in html


def test_usage_chart_queries_do_not_grow_with_orgs(admin_client):
    orgs(2)
    _, few = page(admin_client, CHART)
    orgs(30)
    _, many = page(admin_client, CHART)

    assert many == few


def test_usage_chart_with_no_usage(admin_client):
    html, _ = page(admin_client, CHART)

    assert "Nothing sent, failed or deferred in the last 30 days." in html


def test_usage_chart_needs_view_permission(client, django_user_model):
    user = django_user_model.objects.create_user("staff", password="pw", is_staff=True)
    client.force_login(user)

    response = client.get(reverse("admin:django_mailapi_orgquota_usage_chart"))

    assert response.status_code == 403
