"""Delivery events in the admin: the timeline on an email, its status, the events list."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from django_mailapi.models import DeliveryEvent, DeliveryStatus, OutboundEmail, Status

pytestmark = pytest.mark.django_db

EMAILS = "/admin/django_mailapi/outboundemail/"
EVENTS = "/admin/django_mailapi/deliveryevent/"


@pytest.fixture
def bounced() -> OutboundEmail:
    email = OutboundEmail.objects.create(
        org="acme",
        provider="resend",
        status=Status.SENT,
        idempotency_key="k1",
        recipients="old@example.org",
        subject="Welcome back",
        provider_message_id="em-1",
        delivery_status=DeliveryStatus.BOUNCED,
    )
    now = timezone.now()
    for n, (kind, details) in enumerate(
        [
            ("delivery_delayed", {"raw_type": "email.delivery_delayed"}),
            (
                "bounced",
                {"raw_type": "email.bounced", "bounce_type": "hard", "reason": "550 no such user"},
            ),
        ]
    ):
        DeliveryEvent.objects.create(
            email=email,
            org="acme",
            provider="resend",
            provider_event_id=f"msg_{n}",
            provider_message_id="em-1",
            type=kind,
            recipient="old@example.org",
            occurred_at=now + dt.timedelta(seconds=n),
            details=details,
        )
    DeliveryEvent.objects.create(
        provider="sendr",
        provider_event_id="evt_x",
        provider_message_id="em_unknown",
        type="delivered",
        recipient="someone@example.org",
        occurred_at=now,
    )
    return email


def test_the_email_page_shows_its_event_timeline_in_order(admin_client, bounced):
    page = admin_client.get(f"{EMAILS}{bounced.pk}/change/").content.decode()
    assert "Delivery events" in page
    delayed = page.index("<code>delivery_delayed</code>")
    assert delayed < page.index("<code>bounced</code>")
    assert "hard bounce: 550 no such user" in page


def test_an_email_without_events_says_so(admin_client):
    email = OutboundEmail.objects.create(
        org="a", provider="resend", status=Status.SENT, idempotency_key="k2"
    )
    page = admin_client.get(f"{EMAILS}{email.pk}/change/").content.decode()
    assert "has reported nothing about this email yet" in page


def test_the_email_list_shows_the_delivery_status_as_a_badge_and_filters_by_it(
    admin_client, bounced
):
    page = admin_client.get(EMAILS).content.decode()
    assert '<span class="mailapi-badge mailapi-badge-bounced">bounced</span>' in page
    assert "?delivery_status__exact=bounced" in page
    filtered = admin_client.get(EMAILS, {"delivery_status__exact": "bounced"}).content.decode()
    assert "Welcome back" in filtered
    none = admin_client.get(EMAILS, {"delivery_status__exact": "delivered"}).content.decode()
    assert "Welcome back" not in none


@pytest.mark.parametrize(
    ("query", "shown", "hidden"),
    [
        ({}, ["old@example.org", "someone@example.org"], []),
        ({"type": "bounced"}, ["old@example.org"], ["someone@example.org"]),
        ({"provider": "sendr"}, ["someone@example.org"], ["old@example.org"]),
        ({"org": "acme"}, ["old@example.org"], ["someone@example.org"]),
        ({"matched": "no"}, ["someone@example.org"], ["old@example.org"]),
    ],
)
def test_the_events_list_filters_by_type_provider_org_and_match(
    admin_client, bounced, query, shown, hidden
):
    response = admin_client.get(EVENTS, query)
    assert response.status_code == 200
    page = response.content.decode()
    for text in shown:
        assert text in page
    for text in hidden:
        assert text not in page


def test_the_events_list_is_read_only(admin_client, bounced):
    event = DeliveryEvent.objects.filter(type="bounced").get()
    assert admin_client.get(f"{EVENTS}add/").status_code == 403
    page = admin_client.get(f"{EVENTS}{event.pk}/change/").content.decode()
    assert "email.bounced" in page
    assert f'href="{EMAILS}{bounced.pk}/change/"' in page
    assert 'name="_save"' not in page
    assert admin_client.post(f"{EVENTS}{event.pk}/delete/").status_code == 403
