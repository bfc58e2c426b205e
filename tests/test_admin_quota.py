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
from django_mailapi.models import OrgQuota, UsageCounter

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


def test_usage_chart_draws_a_series_and_a_dashed_limit_line_per_org(admin_client):
    quota.reserve("acme", 99, NOW - dt.timedelta(days=30))  # 31 days ago: not drawn
    OrgQuota.objects.create(org="acme", daily_limit=50)
    OrgQuota.objects.create(org="beta", daily_limit=20)
    for days_ago, units in [(0, 12), (1, 30), (29, 4)]:
        quota.reserve("acme", units, NOW - dt.timedelta(days=days_ago))
    quota.reserve("beta", 7, NOW)
    quota.reserve("gamma", 3, NOW - dt.timedelta(days=2))  # no limit: no limit line

    html, _ = page(admin_client, reverse("admin:django_mailapi_orgquota_usage_chart"))

    start = html.index('class="mailapi-usage-chart"')
    svg = html[start : html.index("</svg>", start)]
    assert re.findall(r'<path class="series" data-org="(\w+)"', svg) == ["acme", "beta", "gamma"]
    assert re.findall(r'<line class="limit" data-org="(\w+)"', svg) == ["acme", "beta"]
    assert svg.count('stroke-dasharray="6 4"') == 2
    assert ">UTC day</text>" in svg and ">units sent</text>" in svg
    assert ">04-18</text>" in svg and ">05-17</text>" in svg  # the 30 days, oldest first
    assert "acme: 46 units in 30 days" in svg
    assert "<script" not in html.split('id="content-main"')[1]


def test_usage_chart_for_one_org(admin_client):
    OrgQuota.objects.create(org="acme", daily_limit=50)
    quota.reserve("acme", 5, NOW)
    quota.reserve("beta", 7, NOW)
    url = reverse("admin:django_mailapi_orgquota_usage_chart")

    html, _ = page(admin_client, f"{url}?org=acme")

    assert re.findall(r'<path class="series" data-org="(\w+)"', html) == ["acme"]
    assert re.findall(r'<line class="limit" data-org="(\w+)"', html) == ["acme"]


def test_usage_chart_escapes_org_names(admin_client):
    quota.reserve('<b>"x"</b>', 1, NOW)

    html, _ = page(admin_client, reverse("admin:django_mailapi_orgquota_usage_chart"))

    assert "<b>" not in html
    assert "&lt;b&gt;" in html


def test_usage_chart_queries_do_not_grow_with_orgs_and_cap_the_drawn_series(admin_client):
    url = reverse("admin:django_mailapi_orgquota_usage_chart")
    orgs(2)
    _, few = page(admin_client, url)
    orgs(30)
    html, many = page(admin_client, url)

    assert many == few
    assert html.count('<path class="series"') == 12
    assert "Also sent in these days" in html


def test_usage_chart_with_no_usage(admin_client):
    html, _ = page(admin_client, reverse("admin:django_mailapi_orgquota_usage_chart"))

    assert "No usage in the last 30 days." in html


def test_usage_chart_needs_view_permission(client, django_user_model):
    user = django_user_model.objects.create_user("staff", password="pw", is_staff=True)
    client.force_login(user)

    response = client.get(reverse("admin:django_mailapi_orgquota_usage_chart"))

    assert response.status_code == 403
