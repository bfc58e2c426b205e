"""Admin for failed sends, one row per failed attempt, and the error reference page."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from django.contrib import admin, messages
from django.db.models import Q, QuerySet, Subquery
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, reverse
from django.utils.html import format_html

from .. import errors, outbox
from ..models import FailedSend, OutboundEmail
from .base import (
    OrgFilter,
    ProviderFilter,
    ReadOnlyAdmin,
    ValuesFilter,
    code_link,
    extra_page,
    first_sentence,
    http_status_label,
    page_context,
    reference_anchor,
    rich_text,
    truncated,
    utc_stamp,
)


class ErrorCodeFilter(ValuesFilter):
    title = "error code"
    parameter_name = field = "error_code"


#: A search looks at the failures of this many matching emails at most, the newest.
SEARCH_EMAILS_LIMIT = 10_000

#: The HTTP status filter offers the statuses of this many most recent failed sends.
STATUS_SAMPLE = 1000


class HttpStatusFilter(admin.SimpleListFilter):
    """Statuses that occur among recent failed sends, "local" for no HTTP answer.

    No index leads with http_status, so a DISTINCT over the whole table would read every
    row; the newest STATUS_SAMPLE rows (the created_at index) stand for it instead."""

    title = "HTTP status"
    parameter_name = "http_status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        recent = FailedSend.objects.order_by("-created_at", "-id").values_list(
            "http_status", flat=True
        )[:STATUS_SAMPLE]
        found = set(recent)
        current = self.value()
        if current == "local":
            found.add(None)
        elif current and current.isdigit():
            found.add(int(current))
        choices = [("local", "local (no HTTP answer)")] if None in found else []
        statuses = sorted(status for status in found if status is not None)
        return choices + [(str(s), str(s)) for s in statuses]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value == "local":
            return queryset.filter(http_status=None)
        if value and value.isdigit():
            return queryset.filter(http_status=int(value))
        return queryset


@admin.register(FailedSend)
class FailedSendAdmin(ReadOnlyAdmin):
    list_display = (
        "created_short",
        "email_summary",
        "error_code_link",
        "http_status_display",
        "suggested_action_short",
        "will_retry",
        "org",
    )
    list_display_links = ("created_short",)
    list_select_related = ("email",)
    list_defer = ("details", "email__payload")
    list_filter = (
        ErrorCodeFilter,
        ProviderFilter,
        OrgFilter,
        HttpStatusFilter,
        "will_retry",
    )
    search_fields = ("email__recipients", "email__subject", "error_code")
    search_help_text = "Part of an address or of the subject, or an error code."
    actions = ("retry_emails",)
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "email_link",
                    "org",
                    "provider",
                    "source",
                    "attempt",
                    "created_at",
                    "error_code",
                    "http_status_display",
                    "message",
                    "suggested_action",
                    "retry_class",
                    "will_retry",
                    "request_id",
                    "details_json",
                )
            },
        ),
    )

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        """Failures of the emails whose recipients or subject hold the term, or of that code.

        The emails are found first, in their own table (the trigram indexes serve it on
        PostgreSQL), the newest SEARCH_EMAILS_LIMIT of them at most; then their failures
        and those of the matching codes in one statement that indexes serve (failed sends
        by email, and by code). The admin's default would join every failed send to its
        email and test each pair: 2 s on a million rows. The term is searched whole, not
        word by word; a code matches by any part of a code the catalogs know, or whole.
        """
        term = search_term.strip()
        if not term:
            return queryset, False
        emails = OutboundEmail.objects.using(queryset.db).search(term)
        ids = list(emails.order_by("-pk").values_list("pk", flat=True)[: SEARCH_EMAILS_LIMIT + 1])
        if len(ids) > SEARCH_EMAILS_LIMIT:
            ids = ids[:SEARCH_EMAILS_LIMIT]
            messages.info(
                request,
                f"More than {SEARCH_EMAILS_LIMIT:,} emails match; these are the failures "
                f"of the newest {SEARCH_EMAILS_LIMIT:,}. Narrow the search or filter by org.",
            )
        lowered = term.lower()
        codes = {lowered} | {e.code for e in errors.all_entries() if lowered in e.code}
        return queryset.filter(Q(email_id__in=ids) | Q(error_code__in=codes)), False

    @admin.display(description="time (UTC)", ordering="created_at")
    def created_short(self, obj: FailedSend) -> str:
        return utc_stamp(obj.created_at, seconds=True)

    @admin.display(description="email")
    def email_summary(self, obj: FailedSend) -> str:
        """Which email: its number, linked, with its recipients and subject."""
        email = obj.email
        url = reverse("admin:django_mailapi_outboundemail_change", args=[obj.email_id])
        return format_html(
            '<a href="{}">#{}</a> {}<br><small>{}</small>',
            url,
            obj.email_id,
            truncated(email.recipients, 28),
            truncated(email.subject, 40) or "(no subject)",
        )

    @admin.display(description="error code", ordering="error_code")
    def error_code_link(self, obj: FailedSend) -> str:
        """The code, linked to the reference; what the API said on hover."""
        return format_html(
            '<span class="mailapi-hint" title="{}">{}</span>',
            obj.message,
            code_link(obj.source, obj.error_code),
        )

    @admin.display(description="HTTP", ordering="http_status")
    def http_status_display(self, obj: FailedSend) -> str:
        return http_status_label(obj.http_status)

    @admin.display(description="suggested action")
    def suggested_action_short(self, obj: FailedSend) -> str:
        return first_sentence(obj.suggested_action)

    @admin.display(description="suggested action")
    def suggested_action(self, obj: FailedSend) -> str:
        return obj.suggested_action

    @admin.display(description="retry class")
    def retry_class(self, obj: FailedSend) -> str:
        return obj.retry_class

    @admin.display(description="email", ordering="email")
    def email_link(self, obj: FailedSend) -> str:
        url = reverse("admin:django_mailapi_outboundemail_change", args=[obj.email_id])
        return format_html('<a href="{}">#{}</a>', url, obj.email_id)

    @admin.display(description="details")
    def details_json(self, obj: FailedSend) -> str:
        if obj.details in (None, {}, []):
            return "-"
        return format_html("<pre>{}</pre>", json.dumps(obj.details, indent=2, sort_keys=True))

    @admin.action(description="Retry these emails now", permissions=("retry",))
    def retry_emails(self, request: HttpRequest, queryset: QuerySet[FailedSend]) -> None:
        emails = OutboundEmail.objects.filter(
            pk__in=Subquery(queryset.order_by().values("email_id"))
        )
        self.report_retry(request, outbox.retry_now(emails), emails.count())

    # The error reference lives here because it explains what this list shows.
    def get_urls(self) -> list[URLPattern]:
        reference = extra_page(
            self, "errors/", "django_mailapi_error_reference", self.error_reference_view
        )
        return [reference, *super().get_urls()]

    def error_reference_view(self, request: HttpRequest) -> HttpResponse:
        query = request.GET.get("q", "").strip()
        catalogs = list(reference_catalogs(query))
        context = {
            **page_context(self, request, "Error reference"),
            "catalogs": catalogs,
            "query": query,
            "matches": sum(len(c["entries"]) for c in catalogs),
        }
        return TemplateResponse(request, "admin/django_mailapi/error_reference.html", context)


def _matches(query: str, *texts: str) -> bool:
    return not query or any(query.casefold() in text.casefold() for text in texts)


def reference_catalogs(query: str = "") -> Iterator[dict[str, Any]]:
    """Every catalog, in the order ``errors.CATALOGS`` lists them, ready to render; with
    ``query``, only the entries whose code, status, message or action contain it.

    A code may have several entries (by HTTP status or message); the first carries the
    code's anchor, which the lists link to.
    """
    for provider, catalog in errors.CATALOGS.items():
        seen: set[str] = set()
        entries = []
        for entry in catalog:
            status = http_status_label(entry.http_status)
            if not _matches(query, provider, entry.code, status, entry.message, entry.action):
                continue
            anchor = "" if entry.code in seen else reference_anchor(provider, entry.code)
            seen.add(entry.code)
            entries.append(
                {
                    "anchor": anchor,
                    "code": entry.code,
                    "http_status": status,
                    "message": rich_text(entry.message),
                    "action": rich_text(entry.action),
                    "retry": entry.retry.value,
                    "docs_url": entry.docs_url,
                }
            )
        if entries:
            yield {"provider": provider, "entries": entries}
