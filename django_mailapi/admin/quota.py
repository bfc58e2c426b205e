"""Admin for quotas: org limits with today's and this month's usage, counters, usage chart."""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import urlencode

from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.db.models import Count, Sum
from django.db.models.functions import TruncDate
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import URLPattern, reverse
from django.utils import timezone
from django.utils.safestring import SafeString

from .. import quota
from ..conf import get_settings
from ..models import OrgQuota, OutboundEmail, Period, Status, UsageCounter
from . import chart
from .base import ModelAdmin, ReadOnlyAdmin, extra_page, page_context, status_badge

#: Most orgs the chart's org picker offers.
CHART_ORG_CHOICES = 500
CHART_DAYS = 30


def usage_bar(used: int, limit: int | None) -> SafeString:
    """A small horizontal bar with the numbers: green, then amber from 80%, red at 100%."""
    context: dict[str, Any] = {"used": used, "limit": limit}
    if limit is not None:
        share = 100.0 if limit == 0 else min(100.0, used * 100.0 / limit)
        context.update(
            percent=f"{share:.0f}",
            width=f"{share:.1f}",
            level="ok" if share < 80 else "near" if share < 100 else "full",
        )
    return SafeString(render_to_string("admin/django_mailapi/orgquota/usage_bar.html", context))


#: Most orgs without an OrgQuota row the quota list shows under its rows.
WITHOUT_ROW_LIMIT = 200


def orgs_without_row(now: dt.datetime) -> list[dict[str, Any]]:
    """Orgs that sent this month but have no OrgQuota row: the defaults apply to them.

    Three queries: this month's counters (the unique (org, period, period_start) index),
    their usage, and the rows they lack."""
    month = quota.month_start(now)
    orgs = list(
        UsageCounter.objects.filter(period=Period.MONTH, period_start=month)
        .exclude(org__in=OrgQuota.objects.values("org"))
        .order_by("org")
        .values_list("org", flat=True)[:WITHOUT_ROW_LIMIT]
    )
    if not orgs:
        return []
    used = quota.usage_for_orgs(orgs, now)
    limits = quota.limits_of(None)
    add = reverse("admin:django_mailapi_orgquota_add")
    return [
        {
            "org": org,
            "daily": quota.limit_label(None, limits.daily),
            "monthly": quota.limit_label(None, limits.monthly),
            "today": usage_bar(used[org]["day"], limits.daily),
            "this_month": usage_bar(used[org]["month"], limits.monthly),
            "add_url": f"{add}?{urlencode({'org': org})}",
        }
        for org in orgs
    ]


class OrgQuotaChangeList(ChangeList):
    """Loads the page's usage in one query and hangs it on each row."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        rows = list(self.result_list)
        used = quota.usage_for_orgs([row.org for row in rows], timezone.now())
        for row in rows:
            row.mailapi_usage = used[row.org]


@admin.register(OrgQuota)
class OrgQuotaAdmin(ModelAdmin):
    list_display = ("org", "daily", "monthly", "paused_flag", "today", "this_month")
    list_filter = ("paused",)
    search_fields = ("org",)
    fields = ("org", "daily_limit", "monthly_limit", "paused")
    change_list_template = "admin/django_mailapi/orgquota/change_list.html"

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return OrgQuotaChangeList

    def save_model(self, request: HttpRequest, obj: OrgQuota, form: Any, change: bool) -> None:
        obj.updated_at = timezone.now()
        super().save_model(request, obj, form, change)

    @admin.display(description="paused", ordering="paused")
    def paused_flag(self, obj: OrgQuota) -> str:
        """Said only where it is true: a blank cell is the normal case."""
        return status_badge("failed", "paused") if obj.paused else ""

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> Any:
        context = {**(extra_context or {}), "without_row": orgs_without_row(timezone.now())}
        return super().changelist_view(request, context)

    @admin.display(description="daily limit")
    def daily(self, obj: OrgQuota) -> str:
        return quota.limit_label(obj.daily_limit, get_settings().DAILY_LIMIT)

    @admin.display(description="monthly limit")
    def monthly(self, obj: OrgQuota) -> str:
        return quota.limit_label(obj.monthly_limit, get_settings().MONTHLY_LIMIT)

    def _used(self, obj: OrgQuota) -> dict[str, int]:
        found: dict[str, int] | None = getattr(obj, "mailapi_usage", None)
        return found if found is not None else quota.usage(obj.org)

    @admin.display(description="today (UTC)")
    def today(self, obj: OrgQuota) -> SafeString:
        return usage_bar(self._used(obj)["day"], quota.limits_of(obj).daily)

    @admin.display(description="this month (UTC)")
    def this_month(self, obj: OrgQuota) -> SafeString:
        return usage_bar(self._used(obj)["month"], quota.limits_of(obj).monthly)

    def get_urls(self) -> list[URLPattern]:
        usage_chart = extra_page(
            self, "usage-chart/", "django_mailapi_orgquota_usage_chart", self.usage_chart_view
        )
        return [usage_chart, *super().get_urls()]

    def usage_chart_view(self, request: HttpRequest) -> HttpResponse:
        """The last 30 UTC days, stacked sent / failed / deferred; ``?org=`` picks one org."""
        org = request.GET.get("org") or None
        today = quota.day_start(timezone.now())
        days = [today - dt.timedelta(days=n) for n in range(CHART_DAYS - 1, -1, -1)]
        bars = chart_days(org, days)
        lines: list[tuple[str, int]] = []
        limits = None
        if org:
            limits = quota.limits_for_orgs([org])[org]
            if limits.daily is not None:
                lines.append(("daily limit", limits.daily))
        context = {
            **page_context(self, request, "Usage chart"),
            "chart": chart.layout(bars, lines),
            "org": org,
            "orgs": UsageCounter.objects.distinct_values("org", CHART_ORG_CHOICES),
            "limits": limits,
            "totals": {part: sum(getattr(d, part) for d in bars) for part, _ in chart.PARTS},
            "empty": not any(d.total for d in bars),
            "first": days[0],
            "last": today,
        }
        return TemplateResponse(request, "admin/django_mailapi/orgquota/usage_chart.html", context)


def chart_days(org: str | None, days: list[dt.date]) -> list[chart.Day]:
    """Per UTC day: units sent and failed (the day counters), and the emails deferred
    now by the day they were created (older ones on the first day). Two queries."""
    first, last = days[0], days[-1]
    counters = UsageCounter.objects.filter(
        period=Period.DAY, period_start__gte=first, period_start__lte=last
    )
    deferred = OutboundEmail.objects.filter(status=Status.DEFERRED)
    if org:
        counters = counters.filter(org=org)
        deferred = deferred.filter(org=org)
    units = {
        day: (sent, failed)
        for day, sent, failed in counters.order_by()
        .values("period_start")
        .annotate(sent=Sum("units_sent"), failed=Sum("units_failed"))
        .values_list("period_start", "sent", "failed")
    }
    waiting: dict[dt.date, int] = {}
    for day, count in (
        deferred.annotate(day=TruncDate("created_at", tzinfo=dt.timezone.utc))
        .order_by()
        .values("day")
        .annotate(n=Count("id"))
        .values_list("day", "n")
    ):
        key = max(day, first)
        waiting[key] = waiting.get(key, 0) + count
    return [chart.Day(day, *units.get(day, (0, 0)), deferred=waiting.get(day, 0)) for day in days]


@admin.register(UsageCounter)
class UsageCounterAdmin(ReadOnlyAdmin):
    """Counters are written by workers only: this admin shows them and changes nothing."""

    list_display = ("org", "period", "period_start", "units_sent", "units_failed")
    list_filter = ("period", "org")
    search_fields = ("org",)
    date_hierarchy = "period_start"
    list_per_page = 100
    fields = ("org", "period", "period_start", "units_sent", "units_failed")
