"""The Suppressions admin, and the email page's links to it, with a logged-in user."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from django_mailapi.models import DeliveryEvent, Suppression
from tests.factories import make_email, payload

pytestmark = pytest.mark.django_db

LIST = reverse("admin:django_mailapi_suppression_changelist")
ADD = reverse("admin:django_mailapi_suppression_add")


def page(response) -> str:
    assert response.status_code == 200, response.status_code
    return response.content.decode()


def change_url(row: Suppression) -> str:
    return reverse("admin:django_mailapi_suppression_change", args=[row.pk])


@pytest.fixture
def rows():
    event = DeliveryEvent.objects.create(
        provider="resend",
        provider_event_id="msg_1",
        type="bounced",
        recipient="gone@example.org",
        occurred_at="2025-03-01T12:00:00Z",
    )
    return {
        "gone": Suppression.objects.create(
            address="gone@example.org", reason="hard_bounce", event=event
        ),
        "ann": Suppression.objects.create(
            org="acme", address="ann@example.org", reason="complaint"
        ),
        "bob": Suppression.objects.create(
            org="globex", address="bob@example.com", reason="unsubscribe", note="asked by phone"
        ),
    }


def test_the_list_shows_each_row_with_its_scope_reason_and_event(admin_client, rows):
    html = page(admin_client.get(LIST))

    for row in rows.values():
        assert f'href="{change_url(row)}"' in html
    assert "every org" in html
    assert "asked by phone" in html
    event_url = reverse("admin:django_mailapi_deliveryevent_change", args=[rows["gone"].event_id])
    assert f'href="{event_url}"' in html
    assert "Add suppression" in html


def test_search_finds_an_address_by_its_start_whatever_the_case(admin_client, rows):
    html = page(admin_client.get(LIST, {"q": "ANN@"}))
    assert "ann@example.org" in html
    assert "gone@example.org" not in html

    html = page(admin_client.get(LIST, {"q": " Bob <Bob@Example.com> "}))
    assert "bob@example.com" in html
    assert "ann@example.org" not in html


def test_search_reads_the_address_index(admin_client, rows, postgres):
    with CaptureQueriesContext(connection) as captured:
        page(admin_client.get(LIST, {"q": "ann"}))
    (search,) = [q["sql"] for q in captured if "LIKE" in q["sql"] and "COUNT" not in q["sql"]]
    assert "UPPER" not in search  # a case-insensitive LIKE could not use the index
    with connection.cursor() as cursor:
        cursor.execute("SET enable_seqscan = off")
        cursor.execute(
            "EXPLAIN SELECT id FROM django_mailapi_suppression WHERE address LIKE 'ann%%'"
        )
        plan = "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute("SET enable_seqscan = on")
    assert "mailapi_suppression_address" in plan


def test_filters_by_reason_and_by_org_or_every_org(admin_client, rows):
    html = page(admin_client.get(LIST, {"reason__exact": "complaint"}))
    assert "ann@example.org" in html
    assert "gone@example.org" not in html

    html = page(admin_client.get(LIST, {"org": "__every__"}))
    assert "gone@example.org" in html
    assert "ann@example.org" not in html

    html = page(admin_client.get(LIST, {"org": "globex"}))
    assert "bob@example.com" in html
    assert "gone@example.org" not in html
    assert "?org=acme" in html  # the orgs present are offered


def test_adding_a_row_stores_the_bare_lower_case_address(admin_client):
    response = admin_client.post(
        ADD, {"address": "Cy <Cy@Example.org>", "org": "", "reason": "unsubscribe", "note": "x"}
    )
    assert response.status_code == 302
    row = Suppression.objects.get()
    assert (row.org, row.address, row.reason, row.note) == (
        None,
        "cy@example.org",
        "unsubscribe",
        "x",
    )

    admin_client.post(ADD, {"address": "cy@example.org", "org": "acme", "reason": "manual"})
    assert Suppression.objects.filter(org="acme").count() == 1


def test_the_add_form_refuses_a_duplicate_a_bad_address_and_event_reasons(admin_client, rows):
    html = page(admin_client.post(ADD, {"address": "GONE@example.org", "reason": "manual"}))
    assert "gone@example.org is already suppressed for every org." in html
    assert "Constraint" not in html

    html = page(admin_client.post(ADD, {"address": "not an address", "reason": "manual"}))
    assert "Enter an email address." in html

    html = page(admin_client.post(ADD, {"address": "new@example.org", "reason": "hard_bounce"}))
    assert "Select a valid choice." in html
    assert Suppression.objects.count() == 3


def test_a_row_is_shown_not_edited_and_can_be_deleted(admin_client, rows):
    html = page(admin_client.get(change_url(rows["ann"])))
    assert 'name="address"' not in html  # read-only
    assert "Delete" in html

    response = admin_client.post(
        reverse("admin:django_mailapi_suppression_delete", args=[rows["ann"].pk]), {"post": "yes"}
    )
    assert response.status_code == 302
    assert not Suppression.objects.filter(pk=rows["ann"].pk).exists()

    response = admin_client.post(
        LIST,
        {"action": "delete_selected", "_selected_action": [rows["bob"].pk], "post": "yes"},
    )
    assert response.status_code == 302
    assert Suppression.objects.count() == 1


def test_a_user_who_may_only_view_cannot_add_or_delete(client, rows):
    user = User.objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_suppression"))
    client.force_login(user)

    html = page(client.get(LIST))
    assert "ann@example.org" in html
    assert "Add suppression" not in html
    assert client.get(ADD).status_code == 403


def test_the_email_page_links_each_suppressed_recipient_to_its_row(admin_client, rows):
    email = make_email(
        org="acme",
        to="Ann <ann@example.org>, gone@example.org, bob@example.com, cy@example.org",
        payload=payload("cy@example.org"),
    )
    html = page(
        admin_client.get(reverse("admin:django_mailapi_outboundemail_change", args=[email.pk]))
    )

    assert "Suppressed recipients" in html
    assert f'<a href="{change_url(rows["ann"])}">ann@example.org</a> (complaint, acme)' in html
    assert (
        f'<a href="{change_url(rows["gone"])}">gone@example.org</a> (hard_bounce, every org)'
        in html
    )
    # bob is suppressed for globex only, not for this acme email.
    assert change_url(rows["bob"]) not in html
