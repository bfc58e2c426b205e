"""Admin for the outbox: one row per email, with its failed attempts and its message."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import connections
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.loader import render_to_string
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.text import Truncator, smart_split, unescape_string_literal

from .. import outbox
from ..backend import split_addresses
from ..models import (
    CANCELLABLE,
    RETRYABLE,
    FailedSend,
    OutboundEmail,
    OutboundEmailQuerySet,
    Status,
)
from ..text import plural
from . import events as events_admin
from . import suppressions as suppressions_admin
from .base import (
    FILTER_CHOICES_LIMIT,
    ChoicesFilter,
    OrgFilter,
    ProviderFilter,
    ReadOnlyAdmin,
    ValuesFilter,
    code_link,
    first_sentence,
    http_status_label,
    rich_text,
    status_badge,
    truncated,
    utc_stamp,
)

#: Parts of the payload shown as lists of addresses.
ADDRESS_PARTS = ("from", "to", "cc", "bcc", "reply_to")
#: Longest body shown on the change page; the rest is cut.
BODY_PREVIEW_CHARS = 20_000
#: Local codes that only say "the attempts before me failed": the cause is further back.
WRAPPER_CODES = frozenset({"retries_exhausted"})
#: Put first in the HTML preview's document: nothing it names may be fetched (the
#: iframe's empty sandbox already stops scripts, forms and navigation).
PREVIEW_POLICY = (
    '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
    "style-src 'unsafe-inline'; img-src data:; font-src data:\">"
)


class StatusFilter(ChoicesFilter):
    title = "status"
    parameter_name = "status__exact"  # the parameter the home page's links use
    field = "status"
    after = "provider"  # walked through the (provider, status) index


class DeliveryStatusFilter(ChoicesFilter):
    title = "delivery status"
    parameter_name = "delivery_status__exact"
    field = "delivery_status"


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


class CreatedFilter(admin.SimpleListFilter):
    """Emails created since a moment: a range of the created_at index."""

    title = "created"
    parameter_name = "created"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("today", "today (UTC)"), ("24h", "last 24 hours"), ("7d", "last 7 days")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        now = timezone.now()
        since = {
            "today": now.astimezone(dt.timezone.utc).replace(
                hour=0, minute=0, second=0, microsecond=0
            ),
            "24h": now - dt.timedelta(hours=24),
            "7d": now - dt.timedelta(days=7),
        }.get(self.value() or "")
        return queryset if since is None else queryset.filter(created_at__gte=since)


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
        "status_badge",
        "org",
        "recipients_and_subject",
        "last_error_link",
        "suggested_action_short",
        "tries",
        "created_short",
    )
    list_display_links = ("id", "recipients_and_subject")
    list_filter = (
        StatusFilter,
        DeliveryStatusFilter,
        CreatedFilter,
        ScheduledFilter,
        OrgFilter,
        ProviderFilter,
        LastErrorCodeFilter,
        TagFilter,
    )
    list_defer = ("payload",)
    search_fields = ("recipients", "subject")
    actions = ("retry_now", "cancel")

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        """Each word (or "quoted phrase") in the recipients or the subject, as the
        admin's own search does, but said so that the indexes serve it (see
        ``OutboundEmailQuerySet.search``)."""
        for bit in smart_split(search_term):
            if bit[:1] in ('"', "'") and bit[-1:] == bit[:1]:
                bit = unescape_string_literal(bit)
            if bit:
                queryset = queryset.search(bit)  # type: ignore[attr-defined]
        return queryset, False

    # The summary (change_form.html) comes first; then what happened, then the rest.
    fieldsets = (
        ("Attempts that failed", {"fields": ("failures_table",)}),
        ("Delivery events", {"fields": ("events_timeline",)}),
        ("Message", {"fields": ("payload_summary",)}),
        (
            "Details",
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

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: OutboundEmail) -> str:
        """The status as a badge, and what the provider reported since, if anything."""
        scheduled = obj.status == Status.QUEUED and obj.send_at and obj.send_at > timezone.now()
        badge = status_badge("scheduled" if scheduled else obj.status, self.status_label(obj))
        if obj.delivery_status:
            badge = SafeString(f"{badge} {status_badge(obj.delivery_status)}")
        return badge

    @admin.display(description="last error", ordering="last_error_code")
    def last_error_link(self, obj: OutboundEmail) -> str:
        return code_link(obj.error_source, obj.last_error_code)

    @admin.display(description="tries", ordering="attempts")
    def tries(self, obj: OutboundEmail) -> int:
        return obj.attempts

    @admin.display(description="created (UTC)", ordering="created_at")
    def created_short(self, obj: OutboundEmail) -> str:
        return utc_stamp(obj.created_at)

    @admin.display(description="recipients / subject", ordering="recipients")
    def recipients_and_subject(self, obj: OutboundEmail) -> str:
        return format_html(
            "{}<br><small>{}</small>",
            self.recipients_short(obj) or "-",
            self.subject_short(obj),
        )

    @admin.display(description="recipients", ordering="recipients")
    def recipients_short(self, obj: OutboundEmail) -> str:
        return truncated(obj.recipients, 26)

    @admin.display(description="suppressed recipients")
    def suppressed_recipients(self, obj: OutboundEmail) -> SafeString:
        """Its recipients on the suppression list now, each linked to its row."""
        return suppressions_admin.recipient_links(split_addresses(obj.recipients), obj.org)

    @admin.display(description="subject", ordering="subject")
    def subject_short(self, obj: OutboundEmail) -> str:
        return truncated(obj.subject, 40) or "(no subject)"

    @admin.display(description="suggested action")
    def suggested_action_short(self, obj: OutboundEmail) -> str:
        return first_sentence(obj.suggested_action)

    @admin.display(description="suggested action")
    def suggested_action(self, obj: OutboundEmail) -> str:
        return obj.suggested_action or "-"

    @admin.display(description="last error HTTP status")
    def last_error_status_label(self, obj: OutboundEmail) -> str:
        return http_status_label(obj.last_error_status) if obj.last_error_code else "-"

    @admin.display(description="failed attempts")
    def failures_table(self, obj: OutboundEmail) -> SafeString:
        return SafeString(
            render_to_string(
                "admin/django_mailapi/failures_table.html",
                {"groups": failure_groups(failures_of(obj))},
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

    # --- the email page: its summary and its own Retry now / Cancel buttons -------------
    def get_urls(self) -> list[URLPattern]:
        def one(action: str) -> URLPattern:
            view = self.admin_site.admin_view(self.email_action_view)
            return path(
                f"<int:object_id>/{action}/",
                view,
                {"action": action},
                name=f"django_mailapi_outboundemail_{action}",
            )

        return [one("retry"), one("cancel"), *super().get_urls()]

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        email = self.get_object(request, object_id)
        if email is not None:
            extra_context = {
                **(extra_context or {}),
                "summary": self.summary(request, email),
            }
        return super().change_view(request, object_id, form_url, extra_context)

    def summary(self, request: HttpRequest, email: OutboundEmail) -> dict[str, Any]:
        """The banner on top of the email page: status, cause, what to do, buttons."""
        failures = failures_of(email)
        found = cause(failures)
        if found is not None:
            reason: dict[str, Any] | None = {
                "code": code_link(found.source, found.error_code),
                "http_status": http_status_label(found.http_status),
                "message": found.message,
                "action": rich_text(found.suggested_action),
                "times": sum(1 for f in failures if f.error_code == found.error_code),
                "behind": failures[-1].error_code if failures[-1] is not found else "",
            }
        elif email.last_error_code:
            reason = {
                "code": code_link(email.error_source, email.last_error_code),
                "http_status": http_status_label(email.last_error_status),
                "message": "",
                "action": rich_text(email.suggested_action),
                "times": 1,
                "behind": "",
            }
        else:
            reason = None
        may_act = self.has_retry_permission(request)
        return {
            "status": email.status,
            "stopped": email.status in (Status.FAILED, Status.DEFERRED),
            "badge": self.status_badge(email),
            "cause": reason,
            "next_attempt_at": email.next_attempt_at if email.status in RETRYABLE else None,
            "retry_url": (
                reverse("admin:django_mailapi_outboundemail_retry", args=[email.pk])
                if may_act and email.status in RETRYABLE and email.payload is not None
                else ""
            ),
            "cancel_url": (
                reverse("admin:django_mailapi_outboundemail_cancel", args=[email.pk])
                if may_act and email.status in CANCELLABLE
                else ""
            ),
        }

    def email_action_view(self, request: HttpRequest, object_id: int, action: str) -> HttpResponse:
        """Retry or cancel one email through the same transitions as the bulk actions."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not (self.has_view_permission(request) and self.has_retry_permission(request)):
            raise PermissionDenied
        one = OutboundEmail.objects.filter(pk=object_id)
        if action == "retry":
            if outbox.retry_now(one):
                self.message_user(
                    request,
                    f"Re-queued email #{object_id}: a worker sends it now.",
                    messages.SUCCESS,
                )
            else:
                self.message_user(
                    request,
                    f"Email #{object_id} was left alone: only failed, deferred or queued "
                    "emails that still have their message can be retried.",
                    messages.WARNING,
                )
        elif outbox.cancel(one):
            self.message_user(request, f"Cancelled email #{object_id}.", messages.SUCCESS)
        else:
            self.message_user(
                request,
                f"Email #{object_id} was left alone: only queued, deferred or failed emails can "
                "be cancelled, and not one the API may already have in a batch.",
                messages.WARNING,
            )
        return HttpResponseRedirect(
            reverse("admin:django_mailapi_outboundemail_change", args=[object_id])
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


def failures_of(email: OutboundEmail) -> list[FailedSend]:
    """The email's failed attempts, oldest first."""
    return list(email.failures.order_by("created_at", "id"))


def cause(failures: list[FailedSend]) -> FailedSend | None:
    """The failure that explains the email: the last one, or, when that only says the
    retries ran out, the last provider error (else the last other error) before it."""
    if not failures:
        return None
    last = failures[-1]
    if last.error_code not in WRAPPER_CODES:
        return last
    earlier = [f for f in failures if f.error_code not in WRAPPER_CODES]
    from_provider = [f for f in earlier if f.source != "mailapi"]
    return (from_provider or earlier or [last])[-1]


def failure_groups(failures: list[FailedSend]) -> list[dict[str, Any]]:
    """Failed attempts grouped by (catalog, code, HTTP status), in order of first
    appearance: how many, first and last time, the last message, the advice once."""
    groups: dict[tuple[str, str, int | None], dict[str, Any]] = {}
    for failure in failures:
        key = (failure.source, failure.error_code, failure.http_status)
        group = groups.get(key)
        if group is None:
            group = groups[key] = {
                "code": code_link(failure.source, failure.error_code),
                "error_code": failure.error_code,
                "http_status": http_status_label(failure.http_status),
                "count": 0,
                "first": failure.created_at,
                "suggested_action": rich_text(failure.suggested_action),
                "retry_class": failure.retry_class,
            }
        group["count"] += 1
        group["last"] = failure.created_at
        group["attempts"] = [*group.get("attempts", []), failure.attempt]
        group["message"] = failure.message
        group["will_retry"] = failure.will_retry
        group["request_id"] = failure.request_id or group.get("request_id", "")
    return list(groups.values())


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
    html = body(payload.get("html"))
    return {
        "addresses": addresses,
        "subject": payload.get("subject", ""),
        "headers": sorted(headers.items()) if isinstance(headers, dict) else [],
        "text": body(payload.get("text")),
        "html": html,
        "html_preview": None if html is None else PREVIEW_POLICY + html,
        "attachments": attachments,
    }
