"""The "Mail API" admin: the outbox, its failed attempts and the error reference.

Everything here is read-only. A row moves only through the outbox's state machine
(the "retry now" and "cancel" actions call :mod:`django_mailapi.outbox`); a model form
save would write the page's stale copy of every field over whatever a worker recorded
in the meantime.

The outbox can hold millions of rows, so no changelist asks the database for an
unbounded ``SELECT DISTINCT`` (filters use :func:`distinct_values`) or an exact
``COUNT(*)`` of a large table (see :class:`BoundedCountPaginator`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import connections, models
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.text import Truncator

from . import errors, outbox
from .models import FailedSend, OutboundEmail

#: How many values an org / provider / code filter offers at most.
FILTER_CHOICES_LIMIT = 100
#: Count rows exactly up to this many; past it, estimate (see BoundedCountPaginator).
COUNT_LIMIT = 10_000


# --- helpers ---------------------------------------------------------------------------
def truncated(text: str, length: int) -> str:
    """``text`` cut to ``length`` characters, the full text on hover."""
    if len(text) <= length:
        return text
    return format_html('<span title="{}">{}</span>', text, Truncator(text).chars(length))


def http_status_label(status: int | None) -> str:
    return "local" if status is None else str(status)


def distinct_values(
    queryset: QuerySet[Any], field: str, limit: int = FILTER_CHOICES_LIMIT
) -> list[str]:
    """Up to ``limit`` distinct non-empty values of ``field``, in order, cheaply.

    On PostgreSQL this is a "loose index scan": a recursive query that asks the
    field's index for the next value greater than the last one found, so it reads
    one index entry per distinct value instead of every row (PostgreSQL has no skip
    scan of its own before version 18). Elsewhere it is a DISTINCT with a LIMIT.
    ``queryset`` must be unfiltered; only its table is used.
    """
    model = queryset.model
    connection = connections[queryset.db]
    if connection.vendor != "postgresql":
        values = (
            queryset.exclude(**{field: ""})
            .order_by(field)
            .values_list(field, flat=True)
            .distinct()[:limit]
        )
        return [str(v) for v in values]
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    column = quote(model._meta.get_field(field).column)
    # Only identifiers from the model's own metadata are interpolated; the limit is a
    # parameter. Both steps say "> ''" so that a partial index WHERE column > '' (as
    # last_error_code has) can serve them.
    sql = (
        f"WITH RECURSIVE found(value) AS ("  # noqa: S608
        f" (SELECT {column} FROM {table} WHERE {column} > '' ORDER BY {column} LIMIT 1)"
        f" UNION ALL"
        f" SELECT (SELECT {column} FROM {table} WHERE {column} > found.value AND {column} > ''"
        f" ORDER BY {column} LIMIT 1) FROM found WHERE found.value IS NOT NULL"
        f") SELECT value FROM found WHERE value IS NOT NULL LIMIT %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [limit])
        return [row[0] for row in cursor.fetchall()]


class BoundedCountPaginator(Paginator):
    """A paginator that never counts more than ``count_limit`` rows.

    Up to the limit the count is exact. Past it, an unfiltered list on PostgreSQL
    shows the planner's row estimate for the table, and anything else stops at the
    limit (narrow the filters to page further back).
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
        if not queryset.query.where:
            estimate = _estimated_rows(queryset)
            if estimate is not None and estimate > self.count_limit:
                return estimate
        return self.count_limit


def _estimated_rows(queryset: QuerySet[Any]) -> int | None:
    connection = connections[queryset.db]
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)",
            [queryset.model._meta.db_table],
        )
        row = cursor.fetchone()
    return int(row[0]) if row and row[0] is not None and row[0] >= 0 else None


class ValuesFilter(admin.SimpleListFilter):
    """Filter on a text field, offering the values actually present (bounded)."""

    field = ""

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        values = distinct_values(model_admin.model.objects.all(), self.field)
        current = self.value()
        if current and current not in values:
            values.append(current)  # keep a value chosen from a link selectable
        return [(value, self.label(value)) for value in values]

    def label(self, value: str) -> str:
        return value

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(**{self.field: value}) if value else queryset


class OrgFilter(ValuesFilter):
    title = "org"
    parameter_name = field = "org"


class ProviderFilter(ValuesFilter):
    title = "provider"
    parameter_name = field = "provider"


class LastErrorCodeFilter(ValuesFilter):
    title = "last error code"
    parameter_name = field = "last_error_code"


class ErrorCodeFilter(ValuesFilter):
    title = "error code"
    parameter_name = field = "error_code"


class HttpStatusFilter(admin.SimpleListFilter):
    """Statuses the catalogs document, and "local" for errors with no HTTP answer."""

    title = "HTTP status"
    parameter_name = "http_status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        statuses = sorted({e.http_status for e in errors.all_entries() if e.http_status})
        return [("local", "local (no HTTP answer)")] + [(str(s), str(s)) for s in statuses]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value == "local":
            return queryset.filter(http_status=None)
        if value and value.isdigit():
            return queryset.filter(http_status=int(value))
        return queryset


class LeanChangeList(ChangeList):
    """A changelist that does not load the (possibly large) email payloads."""

    def get_queryset(self, request: HttpRequest, *args: Any) -> QuerySet[Any]:
        # *args: Django 5.0 added exclude_parameters; 4.2 has none.
        queryset = super().get_queryset(request, *args)
        if queryset.model is OutboundEmail:
            queryset = queryset.defer("payload")
        return queryset


class ReadOnlyAdmin(admin.ModelAdmin):
    """No add, no delete, no form saves: a row changes only through its actions."""

    paginator = BoundedCountPaginator
    show_full_result_count = False
    list_per_page = 50

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return LeanChangeList

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


# --- outbound emails -------------------------------------------------------------------
@admin.register(OutboundEmail)
class OutboundEmailAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "status",
        "org",
        "recipients_short",
        "subject_short",
        "last_error_code",
        "suggested_action_short",
        "attempts",
        "created_at",
    )
    list_display_links = ("id", "subject_short")
    list_filter = ("status", OrgFilter, ProviderFilter, LastErrorCodeFilter)
    search_fields = ("recipients", "subject")
    actions = ("retry_now", "cancel")
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "status",
                    "org",
                    "provider",
                    "mailer",
                    "from_email",
                    "recipients",
                    "subject",
                    "attempts",
                    "next_attempt_at",
                    "created_at",
                    "updated_at",
                    "sent_at",
                    "provider_message_id",
                )
            },
        ),
        (
            "Last error",
            {"fields": ("last_error_code", "last_error_status_label", "suggested_action")},
        ),
        ("Attempts that failed", {"fields": ("failures_table",)}),
        ("Message", {"fields": ("payload_summary",)}),
        (
            "Bookkeeping",
            {
                "classes": ("collapse",),
                "fields": (
                    "idempotency_key",
                    "recipient_count",
                    "quota_units",
                    "quota_day",
                    "leased_until",
                ),
            },
        ),
    )

    @admin.display(description="recipients", ordering="recipients")
    def recipients_short(self, obj: OutboundEmail) -> str:
        return truncated(obj.recipients, 40)

    @admin.display(description="subject", ordering="subject")
    def subject_short(self, obj: OutboundEmail) -> str:
        return truncated(obj.subject, 50) or "(no subject)"

    @admin.display(description="suggested action")
    def suggested_action_short(self, obj: OutboundEmail) -> str:
        return truncated(obj.suggested_action, 60)

    @admin.display(description="suggested action")
    def suggested_action(self, obj: OutboundEmail) -> str:
        return obj.suggested_action or "-"

    @admin.display(description="last error HTTP status")
    def last_error_status_label(self, obj: OutboundEmail) -> str:
        return http_status_label(obj.last_error_status) if obj.last_error_code else "-"

    @admin.display(description="failed attempts")
    def failures_table(self, obj: OutboundEmail) -> SafeString:
        failures = obj.failures.order_by("attempt", "created_at", "id")
        return SafeString(
            render_to_string(
                "admin/django_mailapi/failures_table.html",
                {"failures": [failure_row(f) for f in failures]},
            )
        )

    @admin.display(description="payload")
    def payload_summary(self, obj: OutboundEmail) -> SafeString:
        return SafeString(
            render_to_string(
                "admin/django_mailapi/payload.html", {"payload": payload_view(obj.payload)}
            )
        )

    @admin.action(description="Retry now", permissions=("retry",))
    def retry_now(self, request: HttpRequest, queryset: QuerySet[OutboundEmail]) -> None:
        report_retry(self, request, outbox.retry_now(queryset), queryset.count())

    @admin.action(description="Cancel", permissions=("retry",))
    def cancel(self, request: HttpRequest, queryset: QuerySet[OutboundEmail]) -> None:
        selected = queryset.count()
        done = outbox.cancel(queryset)
        self.message_user(request, f"Cancelled {plural(done, 'email')}.", messages.SUCCESS)
        if done < selected:
            self.message_user(
                request,
                f"{plural(selected - done, 'email')} left alone: only queued, deferred or "
                "failed emails can be cancelled.",
                messages.WARNING,
            )


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def report_retry(
    model_admin: admin.ModelAdmin, request: HttpRequest, done: int, selected: int
) -> None:
    model_admin.message_user(request, f"Re-queued {plural(done, 'email')}.", messages.SUCCESS)
    if done < selected:
        model_admin.message_user(
            request,
            f"{plural(selected - done, 'email')} left alone: only failed, deferred or queued "
            "emails that still have their message can be retried.",
            messages.WARNING,
        )


def failure_row(failure: FailedSend) -> dict[str, Any]:
    return {
        "attempt": failure.attempt,
        "created_at": failure.created_at,
        "error_code": failure.error_code,
        "http_status": http_status_label(failure.http_status),
        "message": failure.message,
        "suggested_action": failure.suggested_action,
        "will_retry": failure.will_retry,
        "request_id": failure.request_id,
    }


#: Parts of the payload shown as lists of addresses.
_ADDRESS_PARTS = ("from", "to", "cc", "bcc", "reply_to")
#: Longest body shown on the change page; the rest is cut.
BODY_PREVIEW_CHARS = 20_000


def payload_view(payload: Any) -> dict[str, Any] | None:
    """What the change page shows of a payload: attachments summarized, never their content."""
    if not isinstance(payload, dict):
        return None

    def body(value: Any) -> str | None:
        if not isinstance(value, str):
            return None
        return Truncator(value).chars(BODY_PREVIEW_CHARS)

    addresses = []
    for part in _ADDRESS_PARTS:
        value = payload.get(part)
        if isinstance(value, str):
            value = [value]
        if value:
            addresses.append((part.replace("_", "-"), ", ".join(str(v) for v in value)))
    attachments = [
        {
            "filename": a.get("filename") or "(no name)",
            "content_type": a.get("content_type", ""),
            "size": a.get("size", len(a.get("content") or "") * 3 // 4),
            "content_id": a.get("content_id") or "",
        }
        for a in payload.get("attachments") or []
        if isinstance(a, dict)
    ]
    headers = payload.get("headers") or {}
    return {
        "addresses": addresses,
        "subject": payload.get("subject", ""),
        "headers": sorted(headers.items()) if isinstance(headers, dict) else [],
        "text": body(payload.get("text")),
        "html": body(payload.get("html")),
        "attachments": attachments,
    }


# --- failed sends ----------------------------------------------------------------------
@admin.register(FailedSend)
class FailedSendAdmin(ReadOnlyAdmin):
    list_display = (
        "created_at",
        "error_code",
        "http_status_display",
        "message_short",
        "suggested_action_short",
        "will_retry",
        "email_link",
        "org",
        "provider",
    )
    list_display_links = ("created_at",)
    list_filter = (
        ErrorCodeFilter,
        ProviderFilter,
        OrgFilter,
        HttpStatusFilter,
        "will_retry",
    )
    search_fields = ("email__recipients", "email__subject", "error_code")
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

    @admin.display(description="HTTP status", ordering="http_status")
    def http_status_display(self, obj: FailedSend) -> str:
        return http_status_label(obj.http_status)

    @admin.display(description="message")
    def message_short(self, obj: FailedSend) -> str:
        return truncated(obj.message, 60)

    @admin.display(description="suggested action")
    def suggested_action_short(self, obj: FailedSend) -> str:
        return truncated(obj.suggested_action, 80)

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
            pk__in=models.Subquery(queryset.order_by().values("email_id"))
        )
        report_retry(self, request, outbox.retry_now(emails), emails.count())

    # The error reference lives here because it explains what this list shows.
    def get_urls(self) -> list[URLPattern]:
        reference = path(
            "errors/",
            self.admin_site.admin_view(self.error_reference_view),
            name="django_mailapi_error_reference",
        )
        return [reference, *super().get_urls()]

    def error_reference_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "title": "Error reference",
            "opts": self.model._meta,
            "catalogs": list(reference_catalogs()),
        }
        return TemplateResponse(request, "admin/django_mailapi/error_reference.html", context)


def reference_catalogs() -> Iterable[dict[str, Any]]:
    """Every catalog, in the order ``errors.CATALOGS`` lists them, ready to render."""
    for provider, catalog in errors.CATALOGS.items():
        yield {
            "provider": provider,
            "entries": [
                {
                    "code": entry.code,
                    "http_status": http_status_label(entry.http_status),
                    "message": entry.message,
                    "action": entry.action,
                    "retry": entry.retry.value,
                    "docs_url": entry.docs_url,
                }
                for entry in catalog
            ],
        }


from . import admin_quota  # noqa: E402,F401  (quota admin lives in its own module)
