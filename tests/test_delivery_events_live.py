"""Delivery events over real HTTP, at a running Django server (pytest-django's live_server).

End to end per provider: send_mail -> a real Celery worker -> the sandbox speaking that
provider's API -> the sandbox's signed events -> POST webhooks/<provider>/ -> the email
delivered or bounced, with its timeline and failure records. And the view under
concurrency: the same event posted 50 times at once is stored once.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import requests
from django.core import mail

from django_mailapi.models import (
    DeliveryEvent,
    DeliveryStatus,
    FailedSend,
    OutboundEmail,
    Status,
)
from tests.helpers import provider_worker, wait_for
from tests.webhook_helpers import (
    HEX_SECRET,
    SECRET,
    body_of,
    bounce,
    resend_event,
    svix_headers,
)

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.urls("tests.urls_webhooks"),
    pytest.mark.services,
]

#: recipient -> the delivery status the sandbox's events leave on its email, per provider.
EXPECTED = {
    "resend": {
        "ann@example.org": DeliveryStatus.DELIVERED,
        "bounced@example.org": DeliveryStatus.BOUNCED,
        "complained@example.org": DeliveryStatus.COMPLAINED,
        "delayed@example.org": DeliveryStatus.DELIVERED,
        "soft-bounced@example.org": DeliveryStatus.BOUNCED,
    },
    "sendr": {
        "ann@example.org": DeliveryStatus.DELIVERED,
        "bounced@example.org": DeliveryStatus.BOUNCED,
        "complained@example.org": DeliveryStatus.COMPLAINED,
        "soft-bounced@example.org": DeliveryStatus.BOUNCED,
    },
    "emitlo": {
        "ann@example.org": DeliveryStatus.DELIVERED,
        "bounced@example.org": DeliveryStatus.BOUNCED,
        "complained@example.org": DeliveryStatus.COMPLAINED,
        "delayed@example.org": DeliveryStatus.DELIVERED,
        "soft-bounced@example.org": DeliveryStatus.BOUNCED,
    },
}
SECRETS = {"resend": SECRET, "sendr": HEX_SECRET, "emitlo": HEX_SECRET}


@pytest.fixture(params=list(EXPECTED))
def provider_setup(request, worker_env, tmp_path_factory) -> Iterator[tuple[str, object, str]]:
    provider = request.param
    with provider_worker(provider, worker_env, tmp_path_factory.mktemp(provider)) as (
        sandbox,
        _worker,
        queue,
    ):
        yield provider, sandbox, queue


def test_events_from_the_sandbox_reach_a_running_server_and_end_each_email_where_it_ended(
    provider_setup, live_server, settings, server_db
):
    provider, sandbox, queue = provider_setup
    settings.EMAIL_BACKEND = "django_mailapi.backend.EmailBackend"
    settings.MAILAPI = {
        **settings.MAILAPI,
        "PROVIDER": provider,
        "BASE_URL": sandbox.url,
        "QUEUE": queue,
        "WEBHOOK_SECRET": [SECRET, HEX_SECRET],
    }
    sandbox.webhook_secret = SECRETS[provider]
    sandbox.webhook_url = f"{live_server.url}/mailapi/webhooks/{provider}/"
    expected = EXPECTED[provider]
    for address in expected:
        mail.send_mail("Hello", "Body", "Shop <shop@example.com>", [address])

    def settled() -> bool:
        rows = OutboundEmail.objects.values_list("recipients", "status", "delivery_status")
        found = {to: (status, delivery) for to, status, delivery in rows}
        return found == {to: (Status.SENT, delivery) for to, delivery in expected.items()}

    wait_for(settled, 60)
    assert sandbox.wait_for_webhooks(30)
    assert {entry["status"] for entry in sandbox.webhook_log} == {200}
    assert DeliveryEvent.objects.unmatched().count() == 0

    bounced = OutboundEmail.objects.get(recipients="bounced@example.org")
    timeline = list(bounced.events.order_by("occurred_at").values_list("type", "provider"))
    assert timeline == [("bounced", provider)]
    failures = {
        (f.email.recipients, f.error_code, f.will_retry)
        for f in FailedSend.objects.select_related("email")
    }
    assert failures == {
        ("bounced@example.org", "hard_bounce", False),
        ("soft-bounced@example.org", "soft_bounce", False),
        ("complained@example.org", "complaint", False),
    }
    complained = OutboundEmail.objects.get(recipients="complained@example.org")
    assert list(complained.events.order_by("occurred_at", "id").values_list("type", flat=True)) == [
        "delivered",
        "complained",
    ]
    if "delayed@example.org" in expected:
        delayed = OutboundEmail.objects.get(recipients="delayed@example.org")
        kinds = list(delayed.events.order_by("occurred_at", "id").values_list("type", flat=True))
        assert kinds == ["delivery_delayed", "delivered"]


def post_all_at_once(url: str, requests_to_make: list[tuple[bytes, dict[str, str]]]) -> list[int]:
    """POST each (body, headers) from its own thread, all released together; the answers."""
    start = threading.Barrier(len(requests_to_make))
    answers: list[int] = []

    def post(body: bytes, headers: dict[str, str]) -> None:
        start.wait()
        # The test server's listen backlog (10) turns some of 50 simultaneous connections
        # away before Django sees them; like a provider, try those again.
        for _ in range(20):
            try:
                response = requests.post(url, data=body, headers=headers, timeout=30)
            except requests.ConnectionError:
                continue
            answers.append(response.status_code)
            return

    threads = [threading.Thread(target=post, args=item) for item in requests_to_make]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def sent_email() -> OutboundEmail:
    return OutboundEmail.objects.create(
        org="acme",
        provider="resend",
        status=Status.SENT,
        idempotency_key="k",
        recipients="ann@example.org",
        recipient_count=1,
        provider_message_id="em-1",
    )


def test_the_same_event_posted_fifty_times_at_once_is_stored_once(live_server, settings, server_db):
    """Regression (MariaDB): InnoDB checks a new event's foreign key, a shared lock on its
    email, before its unique key, so each copy held the email shared while it waited for
    the first copy's key, and the first copy's lock on the email for update deadlocked
    with them: some copies got a 500. The email is now locked before the event goes in."""
    settings.MAILAPI = {**settings.MAILAPI, "WEBHOOK_SECRET": SECRET}
    email = sent_email()
    body = body_of(resend_event("bounced", "em-1", bounce=bounce()))
    headers = {**svix_headers(body), "Content-Type": "application/json"}
    url = f"{live_server.url}/mailapi/webhooks/resend/"

    answers = post_all_at_once(url, [(body, headers)] * 50)

    assert answers == [200] * 50
    assert DeliveryEvent.objects.count() == 1
    assert FailedSend.objects.filter(email=email, error_code="hard_bounce").count() == 1
    email.refresh_from_db()
    assert email.delivery_status == DeliveryStatus.BOUNCED


def test_fifty_different_events_of_one_email_at_once_are_each_stored_and_applied(
    live_server, settings, server_db
):
    """Regression (MariaDB): two events of one email, inserted at once, each held the
    email shared by their foreign keys, then each asked to lock it for update: a deadlock,
    and a 500 for one of them."""
    settings.MAILAPI = {**settings.MAILAPI, "WEBHOOK_SECRET": SECRET}
    email = sent_email()
    posts = []
    for n in range(50):
        extra = {"bounce": bounce()} if n % 5 == 0 else {}
        body = body_of(resend_event("bounced" if n % 5 == 0 else "delivered", "em-1", **extra))
        posts.append((body, {**svix_headers(body), "Content-Type": "application/json"}))

    answers = post_all_at_once(f"{live_server.url}/mailapi/webhooks/resend/", posts)

    assert answers == [200] * 50
    assert DeliveryEvent.objects.filter(email=email).count() == 50
    assert FailedSend.objects.filter(email=email, error_code="hard_bounce").count() == 10
    email.refresh_from_db()
    assert email.delivery_status == DeliveryStatus.BOUNCED


def test_a_ten_megabyte_body_gets_413_over_http(live_server, settings, server_db):
    settings.MAILAPI = {**settings.MAILAPI, "WEBHOOK_SECRET": SECRET}
    big = b'{"type": "email.delivered", "data": {"x": "' + b"a" * (10 * 1024 * 1024) + b'"}}'
    headers = {**svix_headers(big), "Content-Type": "application/json"}
    response = requests.post(
        f"{live_server.url}/mailapi/webhooks/resend/", data=big, headers=headers, timeout=30
    )
    assert response.status_code == 413
    assert response.json()["error"] == "too_large"
    assert DeliveryEvent.objects.count() == 0
