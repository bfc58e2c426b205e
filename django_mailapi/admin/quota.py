"""Admin for quotas: org limits with today's and this month's usage, counters, usage chart."""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import urlencode

from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import URLPattern, reverse
from django.utils import timezone
from django.utils.safestring import SafeString

from .. import quota
from ..conf import get_settings
from ..models import OrgQuota, Period, UsageCounter
from . import chart
from .base import ModelAdmin, ReadOnlyAdmin, extra_page, page_context, status_badge

#: Orgs drawn at once on the chart; the busiest win, the rest are a ``?org=`` away.
CHART_MAX_ORGS = 12
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
        """The last 30 UTC days per org against its daily limit; ``?org=`` picks one org."""
        org = request.GET.get("org") or None
        today = quota.day_start(timezone.now())
        days = [today - dt.timedelta(days=n) for n in range(CHART_DAYS - 1, -1, -1)]
        sent = quota.daily_series([org] if org else None, days[0], today)
        orgs = [org] if org else sorted(sent, key=lambda o: (-sum(sent[o].values()), o))
        shown, hidden = orgs[:CHART_MAX_ORGS], orgs[CHART_MAX_ORGS:]
        limits = quota.limits_for_orgs(shown)
        series = chart.build_series(
            days, {o: sent.get(o, {}) for o in shown}, {o: limits[o].daily for o in shown}
        )
        context = {
            **page_context(self, request, "Usage chart"),
            "chart": chart.layout(days, series),
            "series": series,
            "hidden": hidden,
            "org": org,
            "first": days[0],
            "last": today,
        }
        return TemplateResponse(request, "admin/django_mailapi/orgquota/usage_chart.html", context)


@admin.register(UsageCounter)
class UsageCounterAdmin(ReadOnlyAdmin):
    """Counters are written by workers only: this admin shows them and changes nothing."""

    list_display = ("org", "period", "period_start", "units_sent", "units_failed")
    list_filter = ("period", "org")
    search_fields = ("org",)
    date_hierarchy = "period_start"
    list_per_page = 100
    fields = ("org", "period", "period_start", "units_sent", "units_failed")
