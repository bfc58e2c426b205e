"""Admin for the outbox: one row per email, with its failed attempts and its message."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db import connections
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.safestring import SafeString
from django.utils.text import Truncator

from .. import outbox
from ..backend import split_addresses
from ..models import FailedSend, OutboundEmail, OutboundEmailQuerySet, Status
from ..text import plural
from . import events as events_admin
from . import suppressions as suppressions_admin
from .base import (
    FILTER_CHOICES_LIMIT,
    OrgFilter,
    ProviderFilter,
    ReadOnlyAdmin,
    ValuesFilter,
    http_status_label,
    truncated,
)

#: Parts of the payload shown as lists of addresses.
ADDRESS_PARTS = ("from", "to", "cc", "bcc", "reply_to")
#: Longest body shown on the change page; the rest is cut.
BODY_PREVIEW_CHARS = 20_000


class LastErrorCodeFilter(ValuesFilter):
    title = "last error code"
    parameter_name = field = "last_error_code"


#: The tag filter offers the tags of this many most recent emails.
TAG_SAMPLE = 1000


class TagFilter(admin.SimpleListFilter):
    title = "tag"
    parameter_name = "tag"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        recent = OutboundEmail.objects.order_by("-id").values_list("tags", flat=True)
        found: dict[str, None] = {}
        for tags in recent[:TAG_SAMPLE]:
            for tag in tags or []:
                found.setdefault(str(tag))
        current = self.value()
        if current:
            found.setdefault(current)
        return [(tag, tag) for tag in sorted(found)[:FILTER_CHOICES_LIMIT]]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        tag = self.value()
        if not tag:
            return queryset
        if connections[queryset.db].features.supports_json_field_contains:
            return queryset.filter(tags__contains=[tag])  # the GIN index on PostgreSQL
        return queryset.filter(tags__icontains=f'"{tag}"')


class ScheduledFilter(admin.SimpleListFilter):
    title = "scheduled"
    parameter_name = "scheduled"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("ahead", "send_at still ahead"), ("any", "has a send_at")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "ahead":
            return queryset.filter(status=Status.QUEUED, send_at__gt=timezone.now())
        if self.value() == "any":
            return queryset.filter(send_at__isnull=False)
        return queryset


@admin.register(OutboundEmail)
class OutboundEmailAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "status_label",
        "delivery_status",
        "org",
        "recipients_short",
        "subject_short",
        "last_error_code",
        "suggested_action_short",
        "attempts",
        "created_at",
    )
    list_display_links = ("id", "subject_short")
    list_filter = (
        "status",
        "delivery_status",
        ScheduledFilter,
        OrgFilter,
        ProviderFilter,
        LastErrorCodeFilter,
        TagFilter,
    )
    list_defer = ("payload",)
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
                    "suppressed_recipients",
                    "original_recipients",
                    "subject",
                    "send_at",
                    "tags",
                    "metadata",
                    "attempts",
                    "next_attempt_at",
                    "created_at",
                    "updated_at",
                    "sent_at",
                    "provider_message_id",
                    "delivery_status",
                )
            },
        ),
        (
            "Last error",
            {"fields": ("last_error_code", "last_error_status_label", "suggested_action")},
        ),
        ("Attempts that failed", {"fields": ("failures_table",)}),
        ("Delivery events", {"fields": ("events_timeline",)}),
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

    @admin.display(description="status", ordering="status")
    def status_label(self, obj: OutboundEmail) -> str:
        if obj.status == Status.QUEUED and obj.send_at and obj.send_at > timezone.now():
            return f"scheduled for {timezone.localtime(obj.send_at):%Y-%m-%d %H:%M}"
        return str(obj.status)

    @admin.display(description="recipients", ordering="recipients")
    def recipients_short(self, obj: OutboundEmail) -> str:
        return truncated(obj.recipients, 40)

    @admin.display(description="suppressed recipients")
    def suppressed_recipients(self, obj: OutboundEmail) -> SafeString:
        """Its recipients on the suppression list now, each linked to its row."""
        return suppressions_admin.recipient_links(split_addresses(obj.recipients), obj.org)

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

    @admin.display(description="timeline")
    def events_timeline(self, obj: OutboundEmail) -> SafeString:
        """What the provider reported after accepting the email, oldest first."""
        rows = [
            {
                "event": event,
                "url": reverse("admin:django_mailapi_deliveryevent_change", args=[event.pk]),
                "summary": events_admin.summary(event),
            }
            for event in obj.events.order_by("occurred_at", "id")
        ]
        return SafeString(
            render_to_string("admin/django_mailapi/events_timeline.html", {"events": rows})
        )

    @admin.display(description="payload")
    def payload_summary(self, obj: OutboundEmail) -> SafeString:
        return SafeString(
            render_to_string(
                "admin/django_mailapi/payload.html", {"payload": payload_view(obj.payload)}
            )
        )

    @admin.action(description="Retry now", permissions=("retry",))
    def retry_now(self, request: HttpRequest, queryset: OutboundEmailQuerySet) -> None:
        self.report_retry(request, outbox.retry_now(queryset), queryset.count())

    @admin.action(description="Cancel", permissions=("retry",))
    def cancel(self, request: HttpRequest, queryset: OutboundEmailQuerySet) -> None:
        selected = queryset.count()
        done = outbox.cancel(queryset)
        self.report_changes(
            request,
            f"Cancelled {plural(done, 'email')}.",
            selected - done,
            "only queued, deferred or failed emails can be cancelled.",
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


def payload_view(payload: Any) -> dict[str, Any] | None:
    """What the change page shows of a payload: attachments summarized, never their content."""
    if not isinstance(payload, dict):
        return None

    def body(value: Any) -> str | None:
        if not isinstance(value, str):
            return None
        return Truncator(value).chars(BODY_PREVIEW_CHARS)

    addresses = []
    for part in ADDRESS_PARTS:
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
