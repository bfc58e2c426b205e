"""Admin for delivery events: what providers reported after accepting an email.

Read-only, like the rest: events only come in through the webhook view. The list
filters by type (a fixed set), provider and org (read from their indexes), and whether
the event found its email.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from ..models import DeliveryEvent
from .base import ChoicesFilter, OrgFilter, ProviderFilter, ReadOnlyAdmin, truncated


class TypeFilter(ChoicesFilter):
    title = "type"
    parameter_name = "type__exact"
    field = "type"


class MatchedFilter(admin.SimpleListFilter):
    title = "matched to an email"
    parameter_name = "matched"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "yes"), ("no", "no (not sent from here, or not yet recorded)")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "yes":
            return queryset.filter(email__isnull=False)
        if self.value() == "no":
            return queryset.filter(email__isnull=True)
        return queryset


def email_link(event: DeliveryEvent) -> str:
    if event.email_id is None:
        return "-"
    url = reverse("admin:django_mailapi_outboundemail_change", args=[event.email_id])
    return format_html('<a href="{}">#{}</a>', url, event.email_id)


def summary(event: DeliveryEvent) -> str:
    """The one thing worth reading about an event: its reason, bounce kind or link."""
    details = event.details or {}
    parts = []
    if details.get("bounce_type"):
        parts.append(f"{details['bounce_type']} bounce")
    for key in ("reason", "link"):
        if details.get(key):
            parts.append(str(details[key]))
    return ": ".join(parts)


@admin.register(DeliveryEvent)
class DeliveryEventAdmin(ReadOnlyAdmin):
    list_display = (
        "received_at",
        "type",
        "provider",
        "org",
        "recipient_short",
        "email_display",
        "occurred_at",
        "summary_short",
    )
    list_display_links = ("received_at", "type")
    list_filter = (TypeFilter, ProviderFilter, OrgFilter, MatchedFilter)
    # A trigram index serves it on PostgreSQL (migration 0008).
    search_fields = ("recipient",)
    search_help_text = "Part of the recipient's address."
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "type",
                    "raw_type",
                    "email_display",
                    "org",
                    "provider",
                    "recipient",
                    "occurred_at",
                    "received_at",
                    "provider_event_id",
                    "provider_message_id",
                    "details_pretty",
                )
            },
        ),
    )

    @admin.display(description="recipient", ordering="recipient")
    def recipient_short(self, obj: DeliveryEvent) -> str:
        return truncated(obj.recipient, 40)

    @admin.display(description="email", ordering="email")
    def email_display(self, obj: DeliveryEvent) -> str:
        return email_link(obj)

    @admin.display(description="reason")
    def summary_short(self, obj: DeliveryEvent) -> str:
        return truncated(summary(obj), 60)

    @admin.display(description="provider's event type")
    def raw_type(self, obj: DeliveryEvent) -> str:
        return str((obj.details or {}).get("raw_type") or obj.type)

    @admin.display(description="details")
    def details_pretty(self, obj: DeliveryEvent) -> str:
        text = json.dumps(obj.details, indent=2, sort_keys=True, ensure_ascii=False)
        return format_html("<pre>{}</pre>", text)
