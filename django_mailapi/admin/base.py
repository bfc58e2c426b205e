"""What every "Mail API" admin page shares: a read-only base, cheap filters and counts.

Everything here is read-only. A row moves only through the outbox's state machine
(the "retry now" and "cancel" actions call :mod:`django_mailapi.outbox`); a model form
save would write the page's stale copy of every field over whatever a worker recorded
in the meantime.

The outbox can hold millions of rows, so no changelist asks the database for an
unbounded ``SELECT DISTINCT`` (filters ask the model's ``distinct_values``) or an exact
``COUNT(*)`` of a large table (see :class:`BoundedCountPaginator`).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, path, reverse
from django.utils.functional import cached_property
from django.utils.html import escape, format_html
from django.utils.safestring import SafeString
from django.utils.text import Truncator

from ..conf import get_settings
from ..models import BrowsableQuerySet
from ..text import plural

# Django's classes are generic to django-stubs only.
if TYPE_CHECKING:
    ModelAdmin = admin.ModelAdmin[Any]
    AnyPaginator = Paginator[Any]
else:
    ModelAdmin = admin.ModelAdmin
    AnyPaginator = Paginator

#: How many values an org / provider / code filter offers at most.
FILTER_CHOICES_LIMIT = 100
#: Most (leading column, value) index pairs a choices filter walks.
FILTER_PAIRS_LIMIT = 1000
#: Count rows exactly up to this many; past it, estimate (see BoundedCountPaginator).
COUNT_LIMIT = 10_000


def truncated(text: str, length: int) -> str:
    """``text`` cut to ``length`` characters, the full text on hover."""
    if len(text) <= length:
        return text
    return format_html('<span title="{}">{}</span>', text, Truncator(text).chars(length))


#: Text between backticks in a catalog's prose: a setting, a command, a value.
_BACKTICKS = re.compile(r"`([^`]+)`")
#: A web address in a catalog's prose, with or without its scheme ("resend.com/domains").
#: Only the top-level domains the catalogs use, so a setting or "e.g." is never a link;
#: not after "@", so an email address is never one either.
_ADDRESS = re.compile(
    r"(?<![\w@./-])((?:https?://)?(?:[a-z0-9-]+\.)+(?:com|dev|org|net|io)\b"
    r"(?:/[^\s<>\"'`]*)?)",
    re.IGNORECASE,
)
#: Punctuation that ends a sentence, not an address.
_TRAILING = ".,;:)!?"


def linked(text: str) -> SafeString:
    """``text`` escaped, with its web addresses as links (https unless one says http)."""
    html: list[str] = []
    position = 0
    for match in _ADDRESS.finditer(text):
        address = match.group(1).rstrip(_TRAILING)
        href = address if "://" in address else f"https://{address}"
        html.append(escape(text[position : match.start()]))
        html.append(format_html('<a href="{}" rel="nofollow">{}</a>', href, address))
        position = match.start() + len(address)
    html.append(escape(text[position:]))
    return SafeString("".join(html))


def rich_text(text: str) -> SafeString:
    """Catalog prose as HTML: escaped, `backticks` as <code>, URLs as links."""
    parts = _BACKTICKS.split(text)
    html: list[str] = []
    for index, part in enumerate(parts):
        if index % 2:
            html.append(format_html("<code>{}</code>", part))
        else:
            html.append(linked(part))
    return SafeString("".join(html))


def first_sentence(text: str, length: int = 70) -> str:
    """The first sentence of ``text`` (cut to ``length``), the whole text on hover."""
    if not text:
        return ""
    head = text.split(". ", 1)[0].rstrip(".") + "."
    if len(head) > length:
        head = Truncator(head).chars(length)
    if head == text:
        return format_html("{}", text)
    return format_html('<span class="mailapi-hint" title="{}">{}</span>', text, head)


def utc_stamp(moment: dt.datetime, *, seconds: bool = False) -> str:
    """A time in UTC on two short lines (date, then time), for narrow list columns."""
    utc = moment.astimezone(dt.timezone.utc)
    return format_html(
        "{}<br>{}", f"{utc:%Y-%m-%d}", f"{utc:%H:%M:%S}" if seconds else f"{utc:%H:%M}"
    )


def status_badge(status: str, label: str = "") -> str:
    """``status`` as a coloured badge (the colours are in django_mailapi/admin.css)."""
    return format_html(
        '<span class="mailapi-badge mailapi-badge-{}">{}</span>', status, label or status
    )


def reference_anchor(source: str, code: str) -> str:
    """The id of ``code``'s entry in ``source``'s catalog on the error reference page."""
    return f"code-{source}-{code}"


def code_link(source: str, code: str) -> str:
    """``code`` as <code>, linked to its entry in the error reference ("-" if empty)."""
    if not code:
        return "-"
    url = reverse("admin:django_mailapi_error_reference")
    return format_html(
        '<a href="{}#{}" title="{}: what it means and what to do"><code>{}</code></a>',
        url,
        reference_anchor(source, code),
        code,
        code,
    )


def http_status_label(status: int | None) -> str:
    return "local" if status is None else str(status)


def override_banner() -> str:
    """What the Mail API pages say while OVERRIDE_RECIPIENTS is set ("" otherwise)."""
    override = get_settings().OVERRIDE_RECIPIENTS
    if not override:
        return ""
    return (
        f"OVERRIDE_RECIPIENTS is set: every email goes to {', '.join(override)} instead "
        "of its own recipients (a staging setting)."
    )


def warn_if_overridden(request: HttpRequest) -> None:
    banner = override_banner()
    if banner and request.method == "GET":
        messages.warning(request, banner)


def without_nav_sidebar(extra_context: Any) -> dict[str, Any]:
    """The Mail API pages leave out the admin's navigation sidebar: at 1,280 px it takes
    the width a list's columns need, and the breadcrumbs lead to the same places."""
    return {"is_nav_sidebar_enabled": False, **(extra_context or {})}


class BoundedCountPaginator(AnyPaginator):
    """A paginator that never counts more than ``count_limit`` rows.

    Up to the limit the count is exact. Past it, an unfiltered list shows the
    database's estimate of the table's size where it has one (PostgreSQL), and
    anything else stops at the limit (narrow the filters to page further back).
    """

    count_limit = COUNT_LIMIT

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if not isinstance(queryset, QuerySet):
            return len(queryset)
        bounded = queryset.order_by()[: self.count_limit + 1].count()
        if bounded <= self.count_limit:
            return bounded
        if not queryset.query.where and isinstance(queryset, BrowsableQuerySet):
            estimate = queryset.estimated_count()
            if estimate is not None and estimate > self.count_limit:
                return estimate
        return self.count_limit


class ValuesFilter(admin.SimpleListFilter):
    """Filter on a text field, offering the values actually present (bounded)."""

    field = ""

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        values: list[str] = model_admin.model.objects.distinct_values(
            self.field, FILTER_CHOICES_LIMIT
        )
        current = self.value()
        if current and current not in values:
            values.append(current)  # keep a value chosen from a link selectable
        return [(value, value) for value in values]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(**{self.field: value}) if value else queryset


class ChoicesFilter(ValuesFilter):
    """Filter on a field with choices, offering only the choices that occur.

    The values come from the field's index, one entry per distinct value (or, with
    ``after``, per distinct pair of an index that leads with that column), so ruling
    out a status that no row has costs nothing on a table of millions of rows."""

    after = ""

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        objects = model_admin.model.objects
        if self.after:
            found = objects.distinct_values_after(self.after, self.field, FILTER_PAIRS_LIMIT)
        else:
            found = objects.distinct_values(self.field, FILTER_CHOICES_LIMIT)
        present = set(found)
        current = self.value()
        if current:
            present.add(current)  # keep a value chosen from a link selectable
        choices = model_admin.model._meta.get_field(self.field).choices or ()
        return [(str(value), str(label)) for value, label in choices if value in present]


class OrgFilter(ValuesFilter):
    title = "org"
    parameter_name = field = "org"


class ProviderFilter(ValuesFilter):
    title = "provider"
    parameter_name = field = "provider"


class LeanChangeList(ChangeList):
    """A changelist that leaves out the fields its admin's ``list_defer`` names."""

    def get_queryset(self, request: HttpRequest, exclude_parameters: Any = None) -> QuerySet[Any]:
        # "Show counts" (facets) asks for the queryset without one filter's parameters,
        # by keyword; Django 4.2 has no such parameter.
        if exclude_parameters is None:
            queryset = super().get_queryset(request)
        else:
            queryset = super().get_queryset(request, exclude_parameters=exclude_parameters)
        deferred = getattr(self.model_admin, "list_defer", ())
        return queryset.defer(*deferred) if deferred else queryset


class ReadOnlyAdmin(ModelAdmin):
    """No add, no delete, no form saves: a row changes only through its actions."""

    paginator = BoundedCountPaginator
    show_full_result_count = False
    list_per_page = 50
    #: Fields the changelist does not load (large ones it never shows).
    list_defer: tuple[str, ...] = ()

    class Media:
        css = {"all": ("django_mailapi/admin.css",)}

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return LeanChangeList

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> Any:
        warn_if_overridden(request)
        return super().changelist_view(request, without_nav_sidebar(extra_context))

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: Any = None,
    ) -> Any:
        warn_if_overridden(request)
        return super().changeform_view(
            request, object_id, form_url, without_nav_sidebar(extra_context)
        )

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        declared = [
            f for fieldset in self.get_fieldsets(request, obj) for f in fieldset[1]["fields"]
        ]
        return list(dict.fromkeys([*declared, *super().get_readonly_fields(request, obj)]))

    def has_retry_permission(self, request: HttpRequest) -> bool:
        """Re-queuing changes emails, so it takes the permission to change them."""
        return request.user.has_perm("django_mailapi.change_outboundemail")

    def report_retry(self, request: HttpRequest, done: int, selected: int) -> None:
        """Say how many of the ``selected`` emails a retry action re-queued."""
        self.report_changes(
            request,
            f"Re-queued {plural(done, 'email')}.",
            selected - done,
            "only failed, deferred or queued emails that still have their message can be retried.",
        )

    def report_changes(self, request: HttpRequest, done: str, left: int, why: str) -> None:
        """What an action did, and (as a warning) how many emails it left alone and why."""
        self.message_user(request, done, messages.SUCCESS)
        if left:
            self.message_user(
                request, f"{plural(left, 'email')} left alone: {why}", messages.WARNING
            )


def extra_page(
    model_admin: ModelAdmin, route: str, name: str, view: Callable[[HttpRequest], HttpResponse]
) -> URLPattern:
    """A page of its own in ``model_admin``'s URLs, for staff who may view its model."""

    def guarded(request: HttpRequest) -> HttpResponse:
        if not model_admin.has_view_permission(request):
            raise PermissionDenied
        return view(request)

    return path(route, model_admin.admin_site.admin_view(guarded), name=name)


def page_context(model_admin: ModelAdmin, request: HttpRequest, title: str) -> dict[str, Any]:
    """What an extra page's template needs to look like the rest of the admin."""
    return without_nav_sidebar(
        {**model_admin.admin_site.each_context(request), "title": title, "opts": model_admin.opts}
    )
