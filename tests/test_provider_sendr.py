"""The Sendr provider: wire mapping, local limits, both error envelopes, batch, end to end.

HTTP goes to a sandbox speaking Sendr's dialect; bodies are checked against the request
schema copied from Sendr's OpenAPI spec (tests/fixtures/sendr_*.schema.json).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from email.mime.image import MIMEImage
from typing import Any

import pytest
from django.core import mail
from django.core.mail import EmailMessage, EmailMultiAlternatives

from django_mailapi import errors
from django_mailapi.backend import serialize_message
from django_mailapi.errors import RetryClass
from django_mailapi.errors.sendr import CATALOG
from django_mailapi.exceptions import SendError, UnsupportedFeature
from django_mailapi.models import FailedSend, OutboundEmail, Status
from django_mailapi.providers.base import ApiResponse
from django_mailapi.providers.sendr import SendrProvider
from django_mailapi.sandbox import SandboxServer, SendrDialect
from tests.helpers import assert_sendr_valid, provider_worker, wait_for

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)

# Error bodies exactly as Sendr's error page (seed 002) shows them.
SEED_FLAT_403 = {
    "statusCode": 403,
    "code": "insufficient_scope",
    "message": "This API key requires 'full_access' scope or higher. Current scope: 'read_only'.",
    "details": {},
}
SEED_FLAT_422 = {
    "statusCode": 422,
    "code": "validation_error",
    "message": "Request validation failed",
    "details": {
        "errors": [
            {"path": "/subject", "message": "Required"},
            {"path": "/to", "message": "Expected string or array of strings"},
        ]
    },
}


@pytest.fixture(scope="module")
def sendr_server() -> Iterator[SandboxServer]:
    server = SandboxServer(provider="sendr").start()
    yield server
    server.stop()


@pytest.fixture
def sendr(sendr_server: SandboxServer) -> Iterator[SandboxServer]:
    sendr_server.reset()
    yield sendr_server
    sendr_server.reset()


def provider(base_url: str = "http://127.0.0.1:9") -> SendrProvider:
    return SendrProvider(api_key="sndr_test_x", base_url=base_url)


def payload(message: EmailMessage) -> dict[str, Any]:
    return serialize_message(message, "sendr")


def wire(message: EmailMessage) -> dict[str, Any]:
    body = provider().build_request(payload(message), "key-1").json
    assert_sendr_valid(body)
    return body


def response(status: int, body: Any, headers: dict[str, str] | None = None) -> ApiResponse:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return ApiResponse(status, headers or {}, raw)


# --- mapping -------------------------------------------------------------------------


def test_text_message_maps_to_the_send_email_schema_with_bare_to_addresses():
    body = wire(EmailMessage("Hi", "Plain", "Shop <shop@example.com>", ["Ann <ann@example.org>"]))
    assert body == {
        "from": "Shop <shop@example.com>",
        "to": ["ann@example.org"],
        "subject": "Hi",
        "text": "Plain",
    }


def test_html_only_message_sends_html_without_text():
    msg = EmailMessage("Hi", "<b>Hi</b>", "shop@example.com", ["ann@example.org"])
    msg.content_subtype = "html"
    body = wire(msg)
    assert body["html"] == "<b>Hi</b>"
    assert "text" not in body


def test_text_and_html_alternative_are_both_sent():
    msg = EmailMultiAlternatives("Hi", "Plain", "shop@example.com", ["ann@example.org"])
    msg.attach_alternative("<p>Rich</p>", "text/html")
    body = wire(msg)
    assert (body["text"], body["html"]) == ("Plain", "<p>Rich</p>")


def test_cc_and_bcc_keep_their_lists():
    msg = EmailMessage(
        "Hi",
        "b",
        "shop@example.com",
        ["ann@example.org"],
        cc=["Bo <bo@example.org>"],
        bcc=["cy@example.org"],
    )
    body = wire(msg)
    assert body["cc"] == ["Bo <bo@example.org>"]
    assert body["bcc"] == ["cy@example.org"]


def test_a_single_reply_to_is_sent_as_a_string():
    msg = EmailMessage("Hi", "b", "shop@example.com", ["ann@example.org"], reply_to=["help@x.io"])
    assert wire(msg)["reply_to"] == "help@x.io"


def test_several_reply_to_addresses_are_refused_naming_sendr():
    msg = EmailMessage(
        "Hi", "b", "shop@example.com", ["ann@example.org"], reply_to=["a@x.io", "b@x.io"]
    )
    with pytest.raises(UnsupportedFeature, match="reply-to") as caught:
        provider().build_request(payload(msg), "k")
    assert caught.value.provider == "sendr"


def test_x_headers_are_carried():
    msg = EmailMessage(
        "Hi", "b", "shop@example.com", ["ann@example.org"], headers={"X-Campaign": "spring"}
    )
    assert wire(msg)["headers"] == {"X-Campaign": "spring"}


def test_a_header_that_is_not_x_star_is_refused_by_name():
    msg = EmailMessage(
        "Hi", "b", "shop@example.com", ["ann@example.org"], headers={"List-Unsubscribe": "<u>"}
    )
    with pytest.raises(UnsupportedFeature, match="List-Unsubscribe"):
        provider().build_request(payload(msg), "k")


def test_attachments_carry_filename_content_and_type():
    msg = EmailMessage("Hi", "b", "shop@example.com", ["ann@example.org"])
    msg.attach("report.csv", "a,b\n1,2\n", "text/csv")
    (attachment,) = wire(msg)["attachments"]
    assert attachment == {
        "filename": "report.csv",
        "content": base64.b64encode(b"a,b\n1,2\n").decode(),
        "content_type": "text/csv",
    }


def test_inline_image_keeps_its_content_id_and_gets_a_filename():
    msg = EmailMultiAlternatives("Hi", "b", "shop@example.com", ["ann@example.org"])
    msg.attach_alternative('<img src="cid:logo">', "text/html")
    image = MIMEImage(PNG, "png")
    image.add_header("Content-ID", "<logo>")
    msg.attach(image)
    (attachment,) = wire(msg)["attachments"]
    assert attachment["content_id"] == "logo"
    assert attachment["content_type"] == "image/png"
    assert attachment["filename"] == "attachment-1.png"


# --- local limits --------------------------------------------------------------------


def message_dict(**changes: Any) -> dict[str, Any]:
    base = payload(EmailMessage("Hi", "b", "shop@example.com", ["ann@example.org"]))
    return {**base, **changes}


@pytest.mark.parametrize(
    ("changes", "code", "limit"),
    [
        ({"html": "x" * (5 * 1024 * 1024 + 1)}, "message_too_large", "5 MB"),
        ({"text": "x" * (1024 * 1024 + 1)}, "message_too_large", "1 MB"),
        ({"to": [f"u{i}@example.org" for i in range(51)]}, "too_many_recipients", "50"),
    ],
)
def test_limits_are_checked_before_any_request(sendr, changes, code, limit):
    with pytest.raises(SendError) as caught:
        provider(sendr.url).send(message_dict(**changes), "k")
    assert (caught.value.code, caught.value.local) == (code, True)
    assert limit in caught.value.message
    assert sendr.stats["requests"] == 0


def test_fifty_to_addresses_are_accepted(sendr):
    to = [f"u{i}@example.org" for i in range(50)]
    assert provider(sendr.url).send(message_dict(to=to), "k").startswith("em_")


# --- over HTTP -----------------------------------------------------------------------


def test_send_returns_the_em_id_and_sends_the_idempotency_key(sendr):
    email_id = provider(sendr.url).send(message_dict(), "order-7/confirm")
    (stored,) = sendr.emails
    assert email_id == stored["id"]
    assert email_id.startswith("em_")
    assert stored["idempotency_key"] == "order-7/confirm"
    assert stored["headers"]["idempotency-key"] == "order-7/confirm"


def test_a_repeated_key_returns_the_first_email_instead_of_sending_again(sendr):
    first = provider(sendr.url).send(message_dict(), "same-key")
    assert provider(sendr.url).send(message_dict(), "same-key") == first
    assert len(sendr.emails) == 1


@pytest.mark.parametrize("entry", list(CATALOG), ids=lambda e: e.code)
@pytest.mark.parametrize("envelope", ["flat", "nested"])
def test_every_documented_error_comes_back_with_its_code_in_either_envelope(entry, envelope):
    to = [f"{entry.code}@fail.sandbox.test"]
    with (
        SandboxServer(dialect=SendrDialect(envelope=envelope)) as server,
        pytest.raises(SendError) as caught,
    ):
        provider(server.url).send(message_dict(to=to), "k")
    assert (caught.value.code, caught.value.http_status) == (entry.code, entry.http_status)
    assert caught.value.message == entry.message


def test_the_sandbox_rejects_a_non_x_header_with_sendr_validation_details(sendr):
    api = provider(sendr.url)
    request = api.build_request(message_dict(), "k")
    request.json["headers"] = {"Precedence": "bulk"}
    error = api.parse_error(api.call(request))
    assert error.code == "validation_error"
    assert error.details == {
        "errors": [{"path": "/headers/Precedence", "message": "Only X-* headers are accepted"}]
    }


# --- error parsing -------------------------------------------------------------------


def test_seed_flat_403_parses_to_insufficient_scope():
    error = provider().parse_error(response(403, SEED_FLAT_403))
    assert (error.code, error.http_status) == ("insufficient_scope", 403)
    assert error.message.startswith("This API key requires 'full_access'")
    assert error.details is None


def test_seed_flat_422_keeps_the_details_errors():
    error = provider().parse_error(response(422, SEED_FLAT_422))
    assert error.code == "validation_error"
    assert error.details == SEED_FLAT_422["details"]


def test_nested_rate_limit_reads_retry_after_from_the_body():
    body = {"error": {"code": "rate_limited", "message": "Slow down", "retry_after": 7}}
    error = provider().parse_error(response(429, body))
    assert (error.code, error.retry_after) == ("rate_limited", 7.0)


def test_retry_after_header_wins_over_the_body():
    body = {"error": {"code": "rate_limited", "message": "Slow down", "retry_after": 7}}
    error = provider().parse_error(response(429, body, {"Retry-After": "3"}))
    assert error.retry_after == 3.0


@pytest.mark.parametrize(
    ("status", "raw", "code"),
    [
        (502, b"", "http_502"),
        (502, b"<html><body>Bad gateway</body></html>", "http_502"),
        (500, b'{"error": {"message": "no code"}}', "http_500"),
        (400, b'{"code": 42}', "http_400"),
        (400, b"[1, 2]", "http_400"),
        (418, b'{"error": "teapot"}', "http_418"),
    ],
)
def test_unreadable_error_bodies_fall_back_to_the_status(status, raw, code):
    error = provider().parse_error(ApiResponse(status, {}, raw))
    assert (error.code, error.http_status) == (code, status)


def test_an_unknown_code_is_kept_as_it_is():
    error = provider().parse_error(response(409, {"code": "brand_new", "message": "?"}))
    assert error.code == "brand_new"
    assert errors.resolve("sendr", "brand_new", 409).retry is RetryClass.PERMANENT


@pytest.mark.parametrize(
    ("code", "status", "retry"),
    [
        ("rate_limited", 429, RetryClass.RETRY_AFTER),
        ("daily_limit_reached", 429, RetryClass.DEFER_DAY),
        ("monthly_limit_reached", 429, RetryClass.DEFER_MONTH),
        ("overage_limit_reached", 429, RetryClass.DEFER_MONTH),
        ("internal_error", 500, RetryClass.RETRY),
        ("insufficient_scope", 403, RetryClass.PERMANENT),
        ("validation_error", 422, RetryClass.PERMANENT),
        ("http_502", 502, RetryClass.RETRY),
    ],
)
def test_retry_classes_resolve_from_the_sendr_catalog(code, status, retry):
    assert errors.resolve("sendr", code, status).retry is retry


# --- batch ---------------------------------------------------------------------------


def test_batch_request_matches_the_batch_schema():
    messages = [message_dict(), message_dict(to=["bo@example.org"], reply_to=["r@x.io"])]
    request = provider().build_batch_request(messages, "batch-1")
    assert (request.method, request.path) == ("POST", "/emails/batch")
    assert request.headers == {"idempotency-key": "batch-1"}
    assert_sendr_valid(request.json, batch=True)
    assert [e["to"] for e in request.json["emails"]] == [["ann@example.org"], ["bo@example.org"]]


def test_batch_refuses_custom_headers_which_batch_items_cannot_carry():
    with pytest.raises(UnsupportedFeature, match="batch"):
        provider().build_batch_request([message_dict(headers={"X-A": "1"})], "k")


def test_batch_of_more_than_100_is_a_programming_error():
    with pytest.raises(ValueError, match="1 to 100"):
        provider().build_batch_request([message_dict()] * 101, "k")


def test_batch_maps_ids_and_item_errors_back_to_their_messages(sendr):
    api = provider(sendr.url)
    messages = [
        message_dict(to=["ann@example.org"]),
        message_dict(to=["daily_limit_reached@fail.sandbox.test"]),
        message_dict(to=["cy@example.org"]),
    ]
    results = api.parse_batch_response(api.call(api.build_batch_request(messages, "b-1")))
    stored = [e["id"] for e in sendr.emails]
    assert [r for r in results if isinstance(r, str)] == stored
    assert isinstance(results[0], str) and isinstance(results[2], str)
    failed = results[1]
    assert isinstance(failed, SendError)
    assert failed.code == "validation_error"
    assert failed.details == {"index": 1}
    assert "daily email sending limit" in failed.message


def test_batch_that_fails_as_a_whole_raises_its_error():
    with pytest.raises(SendError) as caught:
        provider().parse_batch_response(response(401, {"error": {"code": "unauthorized"}}))
    assert caught.value.code == "unauthorized"


@pytest.mark.parametrize(
    "body",
    [
        {"nope": []},
        {"data": [{"id": "em_1"}], "errors": [{"index": 5, "error": "x"}]},
        {"data": "x"},
    ],
)
def test_unreadable_batch_answers_are_invalid_response(body):
    with pytest.raises(SendError) as caught:
        provider().parse_batch_response(response(200, body))
    assert (caught.value.code, caught.value.local) == ("invalid_response", True)


def test_the_sandbox_fills_batch_defaults_from_the_top_level(sendr):
    api = provider(sendr.url)
    request = api.build_batch_request([message_dict()], "b-2")
    del request.json["emails"][0]["subject"]
    request.json["subject"] = "From the top"
    (email_id,) = api.parse_batch_response(api.call(request))
    assert sendr.emails[0]["payload"]["subject"] == "From the top"
    assert email_id == sendr.emails[0]["id"]


# --- end to end ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def sendr_worker(worker_env, tmp_path_factory) -> Iterator[tuple[SandboxServer, str]]:
    with provider_worker("sendr", worker_env, tmp_path_factory.mktemp("sendr")) as (
        sandbox,
        _worker,
        queue,
    ):
        yield sandbox, queue


@pytest.fixture
def e2e(settings, sendr_worker, server_db) -> SandboxServer:
    sandbox, queue = sendr_worker
    sandbox.reset()
    settings.EMAIL_BACKEND = "django_mailapi.backend.EmailBackend"
    settings.MAILAPI = {
        **settings.MAILAPI,
        "PROVIDER": "sendr",
        "BASE_URL": sandbox.url,
        "QUEUE": queue,
    }
    return sandbox


def settled(*ids: int) -> bool:
    done = OutboundEmail.objects.filter(
        pk__in=ids, status__in=[Status.SENT, Status.FAILED, Status.DEFERRED]
    )
    return done.count() == len(ids)


@pytest.mark.django_db(transaction=True)
@pytest.mark.services
def test_worker_sends_through_sendr_and_records_seed_errors_with_actions(e2e):
    mail.send_mail("Hi", "b", "Shop <shop@example.com>", ["ann@example.org"])
    mail.send_mail("Hi", "b", "shop@example.com", ["insufficient_scope@fail.sandbox.test"])
    mail.send_mail("Hi", "b", "shop@example.com", ["daily_limit_reached@fail.sandbox.test"])
    mail.send_mail("Hi", "b", "shop@example.com", ["flaky+1@example.org"])
    ids = list(OutboundEmail.objects.order_by("pk").values_list("pk", flat=True))

    wait_for(lambda: settled(*ids))

    sent, scope, daily, flaky = OutboundEmail.objects.order_by("pk")
    assert sent.provider == "sendr"
    assert sent.status == Status.SENT
    assert sent.provider_message_id.startswith("em_")
    assert scope.status == Status.FAILED
    assert daily.status == Status.DEFERRED
    assert flaky.status == Status.SENT
    failures = {f.error_code: f for f in FailedSend.objects.all()}
    assert set(failures) == {"insufficient_scope", "daily_limit_reached", "internal_error"}
    assert failures["insufficient_scope"].http_status == 403
    assert failures["internal_error"].will_retry is True
    for failure in failures.values():
        assert failure.suggested_action
        entry = CATALOG.get(failure.error_code, failure.http_status)
        assert entry is not None
        assert failure.suggested_action == entry.action
    assert {e["id"] for e in e2e.emails} == {sent.provider_message_id, flaky.provider_message_id}


@pytest.mark.django_db
def test_outbox_sends_sendr_emails_in_one_batch_request(sendr, settings):
    settings.MAILAPI = {**settings.MAILAPI, "PROVIDER": "sendr", "BASE_URL": sendr.url}
    from django_mailapi import outbox
    from django_mailapi.backend import EmailBackend

    EmailBackend().send_messages(
        [EmailMessage("Hi", "Body", "a@example.com", [f"u{i}@example.com"]) for i in range(4)]
    )
    rows = list(OutboundEmail.objects.order_by("pk"))
    outbox.process([row.pk for row in rows])

    assert set(OutboundEmail.objects.values_list("status", flat=True)) == {Status.SENT}
    assert sendr.stats["requests"] == 1
    assert all(email["batch"] for email in sendr.emails)
    assert sorted(OutboundEmail.objects.values_list("provider_message_id", flat=True)) == sorted(
        email["id"] for email in sendr.emails
    )
