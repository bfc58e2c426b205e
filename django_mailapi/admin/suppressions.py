"""Admin for the suppression list: the one "Mail API" list where people add and delete.

A row only says "do not mail this address", so adding one by hand (reason ``manual``
or ``unsubscribe``) and deleting one (the address may be mailed again) are safe from
the admin; rows are never edited. Search is by the start of an address, or a whole
one, served by the address index; filters by reason and org (or "every org") too.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from .. import suppression
from ..models import Suppression, SuppressionReason
from .base import FILTER_CHOICES_LIMIT, ChoicesFilter, ReadOnlyAdmin, truncated

# Django's form classes are generic to django-stubs only.
if TYPE_CHECKING:
    ModelForm = forms.ModelForm[Suppression]
else:
    ModelForm = forms.ModelForm

#: What the org filter offers for rows with no org.
EVERY_ORG = "every org"
_EVERY_ORG_VALUE = "__every__"


class ReasonFilter(ChoicesFilter):
    title = "reason"
    parameter_name = "reason__exact"
    field = "reason"


class SuppressionOrgFilter(admin.SimpleListFilter):
    """Org, with "every org" for the rows that apply to all of them."""

    title = "org"
    parameter_name = "org"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        orgs = Suppression.objects.distinct_values("org", FILTER_CHOICES_LIMIT)
        current = self.value()
        if current and current != _EVERY_ORG_VALUE and current not in orgs:
            orgs.append(current)
        return [(_EVERY_ORG_VALUE, EVERY_ORG), *((org, org) for org in orgs)]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value == _EVERY_ORG_VALUE:
            return queryset.filter(org__isnull=True)
        return queryset.filter(org=value) if value else queryset


class SuppressionForm(ModelForm):
    """Adding a row by hand: an address, an org or none (every org), why, a note."""

    reason = forms.ChoiceField(
        choices=[(r.value, r.label) for r in SuppressionReason if r in suppression.BY_HAND],
        initial=SuppressionReason.MANUAL,
        help_text="Hard bounces and complaints are added by delivery events.",
    )

    class Meta:
        model = Suppression
        fields = ("address", "org", "reason", "note")
        help_texts = {
            "org": "Leave empty to stop every org mailing the address.",
            "address": "Stored bare and lower-case: Ann <Ann@Example.org> is ann@example.org.",
        }

    def clean_address(self) -> str:
        address = suppression.normalize(self.cleaned_data["address"])
        if not suppression.is_address(address):
            raise forms.ValidationError("Enter an email address.", code="invalid")
        return address

    def clean_org(self) -> str | None:
        return (self.cleaned_data.get("org") or "").strip() or None

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        address, org = cleaned.get("address"), cleaned.get("org")
        if address and suppression.existing([address], org):
            where = f"org {org}" if org else "every org"
            # On the field, so the model's constraint check (which would say the same in
            # its own words) leaves it alone.
            self.add_error("address", f"{address} is already suppressed for {where}.")
        return cleaned


def row_link(row: Suppression, text: str | None = None) -> SafeString:
    url = reverse("admin:django_mailapi_suppression_change", args=[row.pk])
    return format_html('<a href="{}">{}</a>', url, text or row.address)


def recipient_links(recipients: Iterable[str], org: str) -> SafeString:
    """Each of ``recipients`` with a row that stops ``org`` mailing it, linked to it."""
    found = suppression.rows_for(recipients, org)
    if not found:
        return SafeString("-")
    return format_html_join(
        ", ",
        "{} ({}, {})",
        ((row_link(row), row.reason, row.org or EVERY_ORG) for row in found.values()),
    )


@admin.register(Suppression)
class SuppressionAdmin(ReadOnlyAdmin):
    form = SuppressionForm
    list_display = ("address", "org_label", "reason", "created_at", "note_short", "event_link")
    list_filter = (ReasonFilter, SuppressionOrgFilter)
    search_fields = ("address",)
    search_help_text = "The start of an address, or a whole one; case does not matter."
    fieldsets = ((None, {"fields": ("address", "org", "reason", "note")}),)
    readonly_fieldsets = (
        (None, {"fields": ("address", "org_label", "reason", "note", "created_at", "event_link")}),
    )

    # Adding and deleting are this admin's point; rows are never edited.
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return admin.ModelAdmin.has_add_permission(self, request)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return admin.ModelAdmin.has_delete_permission(self, request, obj)

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.fieldsets if obj is None else self.readonly_fieldsets

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [] if obj is None else super().get_readonly_fields(request, obj)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        # A prefix (a whole address is one too): LIKE 'term%' reads the address index.
        return queryset.filter(address__startswith=suppression.normalize(term)), False

    @admin.display(description="org", ordering="org")
    def org_label(self, obj: Suppression) -> str:
        return obj.org or EVERY_ORG

    @admin.display(description="note")
    def note_short(self, obj: Suppression) -> str:
        return truncated(obj.note, 60)

    @admin.display(description="event")
    def event_link(self, obj: Suppression) -> str:
        if obj.event_id is None:
            return "-"
        url = reverse("admin:django_mailapi_deliveryevent_change", args=[obj.event_id])
        return format_html('<a href="{}">event #{}</a>', url, obj.event_id)
